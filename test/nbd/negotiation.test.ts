// Goal: option haggling answers every option as proto.md says: INFO/GO
// with EXPORT and BLOCK_SIZE (and NAME/DESCRIPTION on request), LIST,
// STRUCTURED_REPLY once and without data, meta contexts only after
// structured replies and only for the export later bound, unknown options
// ERR_UNSUP, STARTTLS refused, ABORT acknowledged, EXPORT_NAME of nothing
// a hard disconnect, a shutting-down server ERR_SHUTDOWN.
// Method: the pure Negotiation over an in-test catalog of two exports (a
// volume, and an image whose CBT says changes_number 3); replies decoded
// back into (option, type, payload) triples.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ExportCatalog, ExportDescription, Negotiation, clientFlagsProblem } from '../../src/frontends/nbd/negotiation';
import * as P from '../../src/frontends/nbd/protocol';

interface Reply { option: number; type: number; payload: Buffer }

function decode(buffers: Buffer[]): Reply[] {
  return buffers.map((b) => {
    assert.is(b.readBigUInt64BE(0), 0x3e889045565a9n, 'option reply magic');
    const length = b.readUInt32BE(16);
    assert.is(b.length, 20 + length, 'reply length field matches');
    return { option: b.readUInt32BE(8), type: b.readUInt32BE(12), payload: b.subarray(20) };
  });
}

function describe(name: string, changes_number: number | null, writable = true): ExportDescription<string> {
  return {
    name, description: `about ${name}`, size_bytes: 1 << 20, writable, multi_conn: true,
    block_sizes: { minimum_bytes: 1, preferred_bytes: 4096, maximum_bytes: 32 << 20 },
    offer: { changes_number }, target: `target:${name}`,
  };
}

const catalog: ExportCatalog<string> = {
  names: () => ['vol', 'vol@img', 'ro'],
  describe: (name) => name === 'vol' ? describe('vol', null) : name === 'vol@img' ? describe('vol@img', 3)
    : name === 'ro' ? describe('ro', null, false) : null,
};
const limits = { options_max: 50, meta_contexts_max: 4, meta_queries_max: 16 };

function negotiation(): Negotiation<string> {
  return new Negotiation<string>(P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES, catalog, limits);
}

function infoData(name: string, infos: number[]): Buffer {
  const b = Buffer.alloc(4 + name.length + 2 + 2 * infos.length);
  b.writeUInt32BE(name.length, 0);
  b.write(name, 4);
  b.writeUInt16BE(infos.length, 4 + name.length);
  infos.forEach((info, i) => b.writeUInt16BE(info, 6 + name.length + 2 * i));
  return b;
}

function metaData(name: string, queries: string[]): Buffer {
  const parts = [Buffer.alloc(4), Buffer.from(name), Buffer.alloc(4)];
  parts[0]!.writeUInt32BE(name.length, 0);
  parts[2]!.writeUInt32BE(queries.length, 0);
  for (const q of queries) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(Buffer.byteLength(q), 0);
    parts.push(len, Buffer.from(q));
  }
  return Buffer.concat(parts);
}

function contextNames(replies: Reply[]): string[] {
  return replies.filter((r) => r.type === P.REP_META_CONTEXT).map((r) => r.payload.subarray(4).toString());
}

test('client flags: unknown bits are refused', () => {
  assert.is(clientFlagsProblem(0), null);
  assert.is(clientFlagsProblem(3), null);
  assert.match(clientFlagsProblem(4) ?? '', /unknown bits 0x4/);
  assert.match(clientFlagsProblem(0x80000000) ?? '', /unknown/);
});

test('INFO: EXPORT and BLOCK_SIZE always, NAME and DESCRIPTION on request, then ACK', () => {
  const n = negotiation();
  const outcome = n.handle(P.OPT_INFO, infoData('vol', [P.INFO_NAME, P.INFO_DESCRIPTION, 77]), false);
  assert.is(outcome.kind, 'continue');
  const replies = decode(outcome.kind === 'continue' ? outcome.replies : []);
  assert.equal(replies.map((r) => r.type), [P.REP_INFO, P.REP_INFO, P.REP_INFO, P.REP_INFO, P.REP_ACK]);
  assert.ok(replies.every((r) => r.option === P.OPT_INFO));
  const info = replies[0]!.payload;
  assert.is(info.readUInt16BE(0), P.INFO_EXPORT);
  assert.is(Number(info.readBigUInt64BE(2)), 1 << 20);
  const flags = info.readUInt16BE(10);
  for (const flag of [P.FLAG_HAS_FLAGS, P.FLAG_SEND_FLUSH, P.FLAG_SEND_FUA, P.FLAG_SEND_TRIM, P.FLAG_SEND_WRITE_ZEROES,
    P.FLAG_SEND_FAST_ZERO, P.FLAG_CAN_MULTI_CONN]) assert.ok(flags & flag, `flag 0x${flag.toString(16)} set`);
  assert.not.ok(flags & P.FLAG_SEND_DF, 'no DF without structured replies');
  assert.not.ok(flags & P.FLAG_READ_ONLY);
  assert.is(replies[1]!.payload.readUInt16BE(0), P.INFO_BLOCK_SIZE);
  assert.equal([replies[1]!.payload.readUInt32BE(2), replies[1]!.payload.readUInt32BE(6), replies[1]!.payload.readUInt32BE(10)],
    [1, 4096, 32 << 20]);
  assert.is(replies[2]!.payload.subarray(2).toString(), 'vol');
  assert.is(replies[3]!.payload.subarray(2).toString(), 'about vol');
});

test('INFO of an unknown export: ERR_UNKNOWN with a message; malformed: ERR_INVALID', () => {
  const n = negotiation();
  const unknown = n.handle(P.OPT_INFO, infoData('nope', []), false);
  const [reply] = decode(unknown.kind === 'continue' ? unknown.replies : []);
  assert.is(reply!.type, P.REP_ERR_UNKNOWN);
  assert.match(reply!.payload.toString(), /nope/);
  const bad = n.handle(P.OPT_GO, Buffer.from([0, 0, 0, 9, 1]), false);
  assert.is(decode(bad.kind === 'continue' ? bad.replies : [])[0]!.type, P.REP_ERR_INVALID);
});

test('read-only export: READ_ONLY flag and no write features', () => {
  const outcome = negotiation().handle(P.OPT_GO, infoData('ro', []), false);
  assert.is(outcome.kind, 'transmission');
  if (outcome.kind !== 'transmission') return;
  assert.ok(outcome.transmission_flags & P.FLAG_READ_ONLY);
  assert.not.ok(outcome.transmission_flags & (P.FLAG_SEND_TRIM | P.FLAG_SEND_WRITE_ZEROES | P.FLAG_SEND_FUA));
});

test('GO enters transmission with the target, structured state and block-size agreement', () => {
  const n = negotiation();
  assert.is(n.handle(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0), false).kind, 'continue');
  const outcome = n.handle(P.OPT_GO, infoData('vol', [P.INFO_BLOCK_SIZE]), false);
  assert.is(outcome.kind, 'transmission');
  if (outcome.kind !== 'transmission') return;
  assert.is(outcome.export.target, 'target:vol');
  assert.ok(outcome.structured);
  assert.ok(outcome.block_sizes_agreed);
  assert.ok(outcome.transmission_flags & P.FLAG_SEND_DF);
  assert.equal(decode(outcome.replies).map((r) => r.type).at(-1), P.REP_ACK);
});

test('EXPORT_NAME: size and flags without zeroes (NO_ZEROES agreed); unknown export disconnects', () => {
  const good = negotiation().handle(P.OPT_EXPORT_NAME, Buffer.from('vol'), false);
  assert.is(good.kind, 'transmission');
  if (good.kind === 'transmission') assert.is(good.replies[0]!.length, 10);
  const zeroes = new Negotiation<string>(P.FLAG_C_FIXED_NEWSTYLE, catalog, limits).handle(P.OPT_EXPORT_NAME, Buffer.from('vol'), false);
  if (zeroes.kind === 'transmission') assert.is(zeroes.replies[0]!.length, 134);
  assert.is(negotiation().handle(P.OPT_EXPORT_NAME, Buffer.from('nope'), false).kind, 'disconnect');
});

test('LIST: one SERVER per export then ACK; data is invalid', () => {
  const n = negotiation();
  const outcome = n.handle(P.OPT_LIST, Buffer.alloc(0), false);
  const replies = decode(outcome.kind === 'continue' ? outcome.replies : []);
  assert.equal(replies.map((r) => r.type), [P.REP_SERVER, P.REP_SERVER, P.REP_SERVER, P.REP_ACK]);
  const names = replies.slice(0, 3).map((r) => r.payload.subarray(4, 4 + r.payload.readUInt32BE(0)).toString());
  assert.equal(names, ['vol', 'vol@img', 'ro']);
  const bad = n.handle(P.OPT_LIST, Buffer.from([1]), false);
  assert.is(decode(bad.kind === 'continue' ? bad.replies : [])[0]!.type, P.REP_ERR_INVALID);
});

test('STRUCTURED_REPLY: once, without data', () => {
  const n = negotiation();
  const withData = n.handle(P.OPT_STRUCTURED_REPLY, Buffer.from([0]), false);
  assert.is(decode(withData.kind === 'continue' ? withData.replies : [])[0]!.type, P.REP_ERR_INVALID);
  const first = n.handle(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0), false);
  assert.is(decode(first.kind === 'continue' ? first.replies : [])[0]!.type, P.REP_ACK);
  const again = n.handle(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0), false);
  assert.is(decode(again.kind === 'continue' ? again.replies : [])[0]!.type, P.REP_ERR_INVALID);
});

test('meta contexts need structured replies first', () => {
  const n = negotiation();
  const outcome = n.handle(P.OPT_LIST_META_CONTEXT, metaData('vol', []), false);
  assert.is(decode(outcome.kind === 'continue' ? outcome.replies : [])[0]!.type, P.REP_ERR_INVALID);
});

test('LIST_META_CONTEXT: volume offers base:allocation; image adds changed-since 0..2 in both namings', () => {
  const n = negotiation();
  n.handle(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0), false);
  const list = (name: string, queries: string[]): string[] => {
    const outcome = n.handle(P.OPT_LIST_META_CONTEXT, metaData(name, queries), false);
    const replies = decode(outcome.kind === 'continue' ? outcome.replies : []);
    assert.is(replies.at(-1)!.type, P.REP_ACK);
    assert.ok(replies.filter((r) => r.type === P.REP_META_CONTEXT).every((r) => r.payload.readUInt32BE(0) === 0), 'LIST ids are 0');
    return contextNames(replies);
  };
  assert.equal(list('vol', []), ['base:allocation']);
  assert.equal(list('vol@img', []), ['base:allocation', 'ublksnap:changed-since:0', 'ublksnap:changed-since:1',
    'ublksnap:changed-since:2', 'qemu:dirty-bitmap:changed-since-0', 'qemu:dirty-bitmap:changed-since-1',
    'qemu:dirty-bitmap:changed-since-2']);
  assert.equal(list('vol@img', ['qemu:']), ['qemu:dirty-bitmap:changed-since-0', 'qemu:dirty-bitmap:changed-since-1',
    'qemu:dirty-bitmap:changed-since-2']);
  assert.equal(list('vol@img', ['ublksnap:changed-since:', 'base:']),
    ['base:allocation', 'ublksnap:changed-since:0', 'ublksnap:changed-since:1', 'ublksnap:changed-since:2']);
  assert.equal(list('vol@img', ['ublksnap:changed-since:2', 'ublksnap:changed-since:3', 'x-other:thing']),
    ['ublksnap:changed-since:2']);
  assert.equal(list('vol', ['ublksnap:changed-since:0']), []);
  const malformed = n.handle(P.OPT_LIST_META_CONTEXT, metaData('vol', ['no-namespace']), false);
  assert.is(decode(malformed.kind === 'continue' ? malformed.replies : [])[0]!.type, P.REP_ERR_INVALID);
  const unknown = n.handle(P.OPT_LIST_META_CONTEXT, metaData('nope', []), false);
  assert.is(decode(unknown.kind === 'continue' ? unknown.replies : [])[0]!.type, P.REP_ERR_UNKNOWN);
});

test('SET_META_CONTEXT: exact names, unique ids, carried into GO of the same export only', () => {
  const n = negotiation();
  n.handle(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0), false);
  const set = n.handle(P.OPT_SET_META_CONTEXT, metaData('vol@img', ['base:allocation', 'base:', 'qemu:',
    'qemu:dirty-bitmap:changed-since-1', 'ublksnap:changed-since:1', 'base:allocation', 'ublksnap:changed-since:01']), false);
  const replies = decode(set.kind === 'continue' ? set.replies : []);
  assert.equal(contextNames(replies), ['base:allocation', 'qemu:dirty-bitmap:changed-since-1', 'ublksnap:changed-since:1']);
  assert.equal(replies.filter((r) => r.type === P.REP_META_CONTEXT).map((r) => r.payload.readUInt32BE(0)), [1, 2, 3]);
  const other = n.handle(P.OPT_GO, infoData('vol', []), false);
  assert.ok(other.kind === 'transmission' && other.contexts.length === 0, 'contexts were for another export');
  const n2 = negotiation();
  n2.handle(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0), false);
  n2.handle(P.OPT_SET_META_CONTEXT, metaData('vol@img', ['ublksnap:changed-since:0']), false);
  const same = n2.handle(P.OPT_GO, infoData('vol@img', []), false);
  assert.ok(same.kind === 'transmission');
  if (same.kind === 'transmission') assert.equal(same.contexts, [{ id: 1, name: 'ublksnap:changed-since:0', kind: 'changed', since: 0 }]);
});

test('SET_META_CONTEXT: a failed SET clears the selection; too many is ERR_TOO_BIG', () => {
  const n = negotiation();
  n.handle(P.OPT_STRUCTURED_REPLY, Buffer.alloc(0), false);
  n.handle(P.OPT_SET_META_CONTEXT, metaData('vol@img', ['base:allocation']), false);
  const too_many = n.handle(P.OPT_SET_META_CONTEXT, metaData('vol@img', ['base:allocation', 'ublksnap:changed-since:0',
    'ublksnap:changed-since:1', 'ublksnap:changed-since:2', 'qemu:dirty-bitmap:changed-since-0']), false);
  assert.is(decode(too_many.kind === 'continue' ? too_many.replies : [])[0]!.type, P.REP_ERR_TOO_BIG);
  const go = n.handle(P.OPT_GO, infoData('vol@img', []), false);
  assert.ok(go.kind === 'transmission' && go.contexts.length === 0);
});

test('unknown options ERR_UNSUP, STARTTLS ERR_POLICY, ABORT ACK, shutdown ERR_SHUTDOWN, option flood disconnects', () => {
  const n = negotiation();
  for (const option of [P.OPT_PEEK_EXPORT, P.OPT_EXTENDED_HEADERS, 0, 12345, 0xffffffff]) {
    const outcome = n.handle(option, Buffer.from('junk'), false);
    const [reply] = decode(outcome.kind === 'continue' ? outcome.replies : []);
    assert.is(reply!.type, P.REP_ERR_UNSUP, `option ${option}`);
    assert.is(reply!.option, option >>> 0);
  }
  const tls = n.handle(P.OPT_STARTTLS, Buffer.alloc(0), false);
  assert.is(decode(tls.kind === 'continue' ? tls.replies : [])[0]!.type, P.REP_ERR_POLICY);
  const stopping = n.handle(P.OPT_GO, infoData('vol', []), true);
  assert.is(decode(stopping.kind === 'continue' ? stopping.replies : [])[0]!.type, P.REP_ERR_SHUTDOWN);
  const abort = n.handle(P.OPT_ABORT, Buffer.from('ignored'), true);
  assert.is(abort.kind, 'abort');
  assert.is(decode(abort.kind === 'abort' ? abort.replies : [])[0]!.type, P.REP_ACK);
  const flood = negotiation();
  let last = flood.handle(P.OPT_LIST, Buffer.alloc(0), false);
  for (let i = 1; i < limits.options_max + 1; i += 1) last = flood.handle(P.OPT_LIST, Buffer.alloc(0), false);
  assert.is(last.kind, 'disconnect');
});

test.run();

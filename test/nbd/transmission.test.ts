// Goal: the transmission phase answers every command as proto.md says,
// against the real engine: simple and structured replies, reads and writes
// split across tags and reassembled, error replies (with messages when
// structured) that leave the connection usable, rejected writes whose
// payload is dropped before the next request, FAST_ZERO refused quickly,
// BLOCK_STATUS only with a context, many requests in flight answered by
// handle, DISC answering everything first, a destroyed image failing
// cleanly.
// Method: a raw client (test/lib/nbd-raw-client.ts) on a server with small
// tags (16 × 64 KiB, so 1 MiB requests use every tag), data checked
// against a model buffer of the volume.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes, seededRandom } from '../lib/engine-fixture';
import { nbdFixtureHooks } from '../lib/nbd-fixture';
import { ChunkError, RawNbd, blockStatusOf } from '../lib/nbd-raw-client';
import { testSeed } from '../lib/workers';

const VOLUME_BYTES = 8 * 1024 * 1024;
const SLOT_BYTES = 64 * 1024;
const DEPTH = 16;
const MAX_REQUEST = DEPTH * SLOT_BYTES;
const READ = 0, WRITE = 1, FLUSH = 3, TRIM = 4, WRITE_ZEROES = 6, BLOCK_STATUS = 7;
const FUA = 1, NO_HOLE = 2, DF = 4, REQ_ONE = 8, FAST_ZERO = 16;
const EIO = 5, EINVAL = 22, ENOSPC = 28, ENOTSUP = 95;

/** What the volume holds: every test's writes, kept in step. */
const model = Buffer.alloc(VOLUME_BYTES);
const fixture = nbdFixtureHooks(test, {
  server: { max_io_bytes: SLOT_BYTES, queue_depth: DEPTH, max_request_bytes: MAX_REQUEST }, volumes: { vol: VOLUME_BYTES },
});

async function simpleRead(client: RawNbd, handle: bigint, offset: number, length: number): Promise<Buffer> {
  await client.request(READ, 0, handle, offset, length);
  const reply = await client.reply();
  assert.ok(reply.kind === 'simple' && reply.error === 0 && reply.handle === handle, `simple read reply ${JSON.stringify(reply, (_, v) => typeof v === 'bigint' ? String(v) : v)}`);
  return client.read(length);
}

async function simpleStatus(client: RawNbd, type: number, flags: number, handle: bigint, offset: number, length: number, payload?: Buffer): Promise<number> {
  await client.request(type, flags, handle, offset, length, payload);
  const reply = await client.reply();
  assert.ok(reply.kind === 'simple' && reply.handle === handle, 'a simple reply with our handle');
  return reply.kind === 'simple' ? reply.error : -1;
}

/** Structured non-READ: 0, or the errno of the error chunk (whose message must say something). */
async function structuredStatus(client: RawNbd, type: number, flags: number, handle: bigint, offset: number, length: number, payload?: Buffer): Promise<number> {
  await client.request(type, flags, handle, offset, length, payload);
  const reply = await client.reply();
  assert.is(reply.handle, handle);
  if (reply.kind === 'simple') return reply.error;
  assert.ok(reply.flags & 1, 'a one-chunk reply is DONE');
  if (reply.type === 0) return 0;
  const error = new ChunkError(reply);
  assert.ok(error.text.length > 0, 'error chunks carry a message');
  return error.errno;
}

test('simple replies: write, read back, flush, FUA, errors carry no payload', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  const info = await client.go('vol', { structured: false });
  assert.is(info.size, VOLUME_BYTES);
  assert.equal(info.block_sizes, [1, 4096, MAX_REQUEST]);
  const data = randomBytes(seededRandom(1), 300_000);
  assert.is(await simpleStatus(client, WRITE, FUA, 1n, 12_345, data.length, data), 0);
  data.copy(model, 12_345);
  assert.equal(await simpleRead(client, 2n, 12_000, 301_000), model.subarray(12_000, 313_000));
  assert.is(await simpleStatus(client, FLUSH, 0, 3n, 0, 0), 0);
  assert.is(await simpleStatus(client, READ, 0, 4n, VOLUME_BYTES - 10, 11), EINVAL, 'read past the end');
  assert.is(await simpleStatus(client, READ, DF, 5n, 0, 512), EINVAL, 'DF without structured replies');
  assert.equal(await simpleRead(client, 6n, 0, 4096), model.subarray(0, 4096), 'still in step after errors');
  assert.equal(await simpleRead(client, 7n, 100, 0), Buffer.alloc(0), 'zero-length read');
  await client.disc();
  assert.ok(await client.waitClosed());
});

test('EXPORT_NAME: size and flags (no zeroes when agreed, 124 otherwise), then simple replies', async () => {
  for (const client_flags of [3, 1]) {
    const client = await RawNbd.connect(fixture.socket_path);
    await client.handshake(client_flags);
    await client.sendOption(1, Buffer.from('vol'));
    const reply = await client.read(client_flags === 3 ? 10 : 134);
    assert.is(Number(reply.readBigUInt64BE(0)), VOLUME_BYTES);
    assert.ok(reply.readUInt16BE(8) & 1, 'HAS_FLAGS');
    assert.not.ok(reply.readUInt16BE(8) & (1 << 7), 'no DF without structured replies');
    assert.equal(await simpleRead(client, 1n, 0, 4096), model.subarray(0, 4096));
    client.destroy();
  }
});

test('structured reads: one DONE data chunk, split across every tag, DF, zero length', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  const info = await client.go('vol');
  assert.ok(info.flags & (1 << 7), 'DF offered with structured replies');
  const data = randomBytes(seededRandom(2), MAX_REQUEST);
  assert.is(await structuredStatus(client, WRITE, 0, 1n, 1, MAX_REQUEST, data), 0);
  data.copy(model, 1);
  await client.request(READ, 0, 2n, 1, MAX_REQUEST);
  const chunks = await client.chunks(2n);
  assert.is(chunks.length, 1, 'one chunk for a request of 16 segments');
  assert.is(chunks[0]!.type, 1);
  assert.is(Number(chunks[0]!.payload.readBigUInt64BE(0)), 1);
  assert.equal(chunks[0]!.payload.subarray(8), model.subarray(1, 1 + MAX_REQUEST));
  await client.request(READ, DF, 3n, 777, 100_000);
  assert.equal(await client.readStructured(3n, 777, 100_000), model.subarray(777, 100_777));
  await client.request(READ, 0, 4n, 5, 0);
  const none = await client.chunks(4n);
  assert.equal(none.map((c) => [c.type, c.flags, c.payload.length]), [[0, 1, 0]]);
  client.destroy();
});

test('structured errors: messages, payload of refused writes dropped, connection stays in step', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  await client.go('vol');
  await client.request(READ, 0, 1n, VOLUME_BYTES - 1, 2);
  const error = await client.readStructured(1n, 0, 2).catch((e: unknown) => e);
  assert.instance(error, ChunkError);
  assert.is((error as ChunkError).errno, EINVAL);
  assert.match((error as ChunkError).text, /past the end/);
  const junk = Buffer.alloc(70_000, 0x5a);
  assert.is(await structuredStatus(client, WRITE, 0, 2n, VOLUME_BYTES - 1000, junk.length, junk), ENOSPC);
  assert.is(await structuredStatus(client, WRITE, NO_HOLE, 3n, 0, junk.length, junk), EINVAL, 'bad flag on a write');
  assert.is(await structuredStatus(client, READ, 0, 4n, 0, MAX_REQUEST + 1), EINVAL, 'longer than the maximum block');
  assert.is(await structuredStatus(client, 5, 0, 5n, 0, 512), EINVAL, 'CACHE is not offered');
  assert.is(await structuredStatus(client, 42, 0, 6n, 0, 512), EINVAL, 'unknown command');
  assert.is(await structuredStatus(client, BLOCK_STATUS, 0, 7n, 0, 512), EINVAL, 'BLOCK_STATUS without a context');
  assert.is(await structuredStatus(client, WRITE_ZEROES, 0, 8n, VOLUME_BYTES, 1), ENOSPC);
  assert.is(await structuredStatus(client, TRIM, 0, 9n, VOLUME_BYTES, 1), EINVAL);
  await client.request(READ, 0, 10n, 0, 4096);
  assert.equal(await client.readStructured(10n, 0, 4096), model.subarray(0, 4096), 'the dropped payloads never reached the volume');
  client.destroy();
});

test('WRITE_ZEROES (with and without NO_HOLE), TRIM, and FAST_ZERO refused without touching data', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  const info = await client.go('vol');
  assert.ok(info.flags & (1 << 11), 'FAST_ZERO offered');
  const fill = Buffer.alloc(3 * SLOT_BYTES, 0xee);
  assert.is(await structuredStatus(client, WRITE, 0, 1n, 2 * SLOT_BYTES, fill.length, fill), 0);
  fill.copy(model, 2 * SLOT_BYTES);
  assert.is(await structuredStatus(client, WRITE_ZEROES, FAST_ZERO, 2n, 2 * SLOT_BYTES, SLOT_BYTES), ENOTSUP);
  await client.request(READ, 0, 3n, 2 * SLOT_BYTES, SLOT_BYTES);
  assert.equal(await client.readStructured(3n, 2 * SLOT_BYTES, SLOT_BYTES), fill.subarray(0, SLOT_BYTES), 'FAST_ZERO changed nothing');
  assert.is(await structuredStatus(client, WRITE_ZEROES, NO_HOLE, 4n, 2 * SLOT_BYTES + 10, SLOT_BYTES), 0);
  model.fill(0, 2 * SLOT_BYTES + 10, 3 * SLOT_BYTES + 10);
  assert.is(await structuredStatus(client, WRITE_ZEROES, FUA, 5n, 4 * SLOT_BYTES - 7, 7), 0);
  model.fill(0, 4 * SLOT_BYTES - 7, 4 * SLOT_BYTES);
  // A zero request far longer than a slot: split into 64 KiB segments, 3 MiB of them.
  assert.is(await structuredStatus(client, WRITE_ZEROES, 0, 6n, 4 * 1024 * 1024, 3 * 1024 * 1024 + 5), 0);
  model.fill(0, 4 * 1024 * 1024, 7 * 1024 * 1024 + 5);
  await client.request(READ, 0, 7n, 2 * SLOT_BYTES, 3 * SLOT_BYTES);
  assert.equal(await client.readStructured(7n, 2 * SLOT_BYTES, 3 * SLOT_BYTES), model.subarray(2 * SLOT_BYTES, 5 * SLOT_BYTES));
  // TRIM is advisory; on this storage the engine punches a hole, which reads as zeros.
  assert.is(await structuredStatus(client, TRIM, 0, 8n, 0, 2 * 1024 * 1024), 0);
  model.fill(0, 0, 2 * 1024 * 1024);
  await client.request(READ, 0, 9n, 0, SLOT_BYTES);
  assert.equal(await client.readStructured(9n, 0, SLOT_BYTES), model.subarray(0, SLOT_BYTES));
  client.destroy();
});

test('BLOCK_STATUS base:allocation: one data extent, REQ_ONE, range checked', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  const info = await client.go('vol', { contexts: ['base:allocation'] });
  const id = info.context_ids.get('base:allocation');
  assert.ok(id !== undefined && id > 0);
  await client.request(BLOCK_STATUS, 0, 1n, 1000, 5_000_000);
  const [chunk] = await client.chunks(1n);
  assert.is(chunk!.type, 5);
  assert.equal(blockStatusOf(chunk!), { id, extents: [[5_000_000, 0]] });
  await client.request(BLOCK_STATUS, REQ_ONE, 2n, 0, VOLUME_BYTES);
  assert.equal(blockStatusOf((await client.chunks(2n))[0]!).extents, [[VOLUME_BYTES, 0]]);
  assert.is(await structuredStatus(client, BLOCK_STATUS, 0, 3n, VOLUME_BYTES - 1, 2), EINVAL);
  assert.is(await structuredStatus(client, BLOCK_STATUS, 0, 4n, 0, 0), EINVAL);
  client.destroy();
});

test('200 requests in flight at once, answered by handle, data matches the model', async () => {
  const seed = testSeed('pipelined requests');
  const random = seededRandom(seed);
  const client = await RawNbd.connect(fixture.socket_path);
  await client.go('vol');
  // Writes to disjoint regions first, all sent before any reply is read.
  const writes: { handle: bigint; offset: number; data: Buffer }[] = [];
  for (let i = 0; i < 100; i += 1) {
    const offset = i * 80_000 + Math.floor(random() * 1000);
    const data = randomBytes(random, 1 + Math.floor(random() * 70_000));
    writes.push({ handle: BigInt(1000 + i), offset, data });
  }
  await Promise.all(writes.map((w) => client.request(WRITE, 0, w.handle, w.offset, w.data.length, w.data)));
  const seen = new Set<bigint>();
  for (let i = 0; i < writes.length; i += 1) {
    const reply = await client.reply();
    assert.ok(reply.kind === 'simple' && reply.error === 0, 'write succeeded');
    seen.add(reply.handle);
  }
  assert.is(seen.size, writes.length, 'every write answered once');
  for (const w of writes) w.data.copy(model, w.offset);
  const reads: { handle: bigint; offset: number; length: number }[] = [];
  for (let i = 0; i < 100; i += 1) {
    const length = 1 + Math.floor(random() * 200_000);
    reads.push({ handle: BigInt(5000 + i), offset: Math.floor(random() * (VOLUME_BYTES - length)), length });
  }
  await Promise.all(reads.map((r) => client.request(READ, 0, r.handle, r.offset, r.length)));
  const by_handle = new Map(reads.map((r) => [r.handle, r]));
  for (let i = 0; i < reads.length; i += 1) {
    const reply = await client.reply();
    assert.ok(reply.kind === 'chunk' && reply.type === 1 && (reply.flags & 1), 'one final data chunk per read');
    const r = by_handle.get(reply.handle)!;
    by_handle.delete(reply.handle);
    assert.equal(reply.kind === 'chunk' ? reply.payload.subarray(8) : null, model.subarray(r.offset, r.offset + r.length), `read ${r.handle}`);
  }
  assert.is(by_handle.size, 0);
  client.destroy();
});

test('DISC: requests before it are answered, bytes after it are ignored, the server closes', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  await client.go('vol');
  const data = Buffer.alloc(200_000, 0x42);
  await client.request(WRITE, 0, 1n, 0, data.length, data);
  await client.request(READ, 0, 2n, 0, 100);
  await client.disc();
  await client.request(WRITE, 0, 3n, 0, 4, Buffer.from('LATE'));
  const first = await client.reply();
  const second = await client.reply();
  assert.equal([first.handle, second.handle].sort(), [1n, 2n]);
  assert.ok(await client.waitClosed(), 'the server closes after DISC');
  data.copy(model, 0);
  const check = await RawNbd.connect(fixture.socket_path);
  await check.go('vol');
  await check.request(READ, 0, 9n, 0, 8);
  assert.equal(await check.readStructured(9n, 0, 8), model.subarray(0, 8), 'the write after DISC never happened');
  check.destroy();
});

test('a client that half-closes after its requests still gets every reply, then the server closes', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  await client.go('vol');
  const data = Buffer.alloc(300_000, 0x66);
  await client.request(WRITE, 0, 1n, 3 * 1024 * 1024, data.length, data);
  await client.request(READ, 0, 2n, 3 * 1024 * 1024, 1000);
  client.socket.end();
  const replies = [await client.reply(), await client.reply()];
  assert.equal(replies.map((r) => r.handle).sort(), [1n, 2n]);
  const read = replies.find((r) => r.handle === 2n)!;
  assert.ok(read.kind === 'chunk' && read.payload.subarray(8).equals(data.subarray(0, 1000)));
  data.copy(model, 3 * 1024 * 1024);
  assert.ok(await client.waitClosed(), 'the server closes its side too');
});

test('images: writable, isolated, and EIO with a message once the snapshot is destroyed', async () => {
  const id = await fixture.snapshot(['vol']);
  const name = `vol@${id}`;
  const client = await RawNbd.connect(fixture.socket_path);
  const info = await client.go(name);
  assert.is(info.size, VOLUME_BYTES);
  assert.not.ok(info.flags & 2, 'images are writable');
  const data = Buffer.alloc(100_000, 0x17);
  assert.is(await structuredStatus(client, WRITE, 0, 1n, 50_000, data.length, data), 0);
  await client.request(READ, 0, 2n, 50_000, data.length);
  assert.equal(await client.readStructured(2n, 50_000, data.length), data);
  const volume = await RawNbd.connect(fixture.socket_path);
  await volume.go('vol');
  await volume.request(READ, 0, 3n, 50_000, data.length);
  assert.equal(await volume.readStructured(3n, 50_000, data.length), model.subarray(50_000, 150_000), 'image writes never reach the volume');
  await fixture.engine.snapshotDestroy(id);
  await client.request(READ, 0, 4n, 0, 512);
  const error = await client.readStructured(4n, 0, 512).catch((e: unknown) => e);
  assert.instance(error, ChunkError);
  assert.is((error as ChunkError).errno, EIO);
  assert.match((error as ChunkError).text, /gone|destroyed/);
  assert.is(await structuredStatus(client, WRITE, 0, 5n, 0, 4, Buffer.from('gone')), EIO);
  client.destroy();
  volume.destroy();
  const late = await RawNbd.connect(fixture.socket_path);
  const refused = await late.go(name).then(() => null, (e: unknown) => e as Error);
  assert.match(refused?.message ?? 'GO succeeded', /GO failed: 0x80000006/);
  late.destroy();
});

test.run();

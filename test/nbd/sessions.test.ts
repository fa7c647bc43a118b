// Goal: the hand-over of a negotiated connection to the I/O actor that
// serves it (src/nbd/connection.ts → src/actors/nbd-session.ts) keeps every
// byte in order and every resource accounted for: connections spread over
// the actors of their export's kind and are listed while they live; bytes a
// client sends right behind GO, before its reply, are served; a session's
// log lines reach the engine's logger from the actor's thread; after the
// clients leave, no session, tag or descriptor is left.
// Method: raw protocol clients; engine.status().sessions and actorStats()
// as the engine sees them; a pino logger writing into an array.

import { Writable } from 'node:stream';
import pino from 'pino';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { nbdFixtureHooks } from '../lib/nbd-fixture';
import { NBD, RawNbd, infoData } from '../lib/nbd-raw-client';
import { eventually, openFdCount } from '../lib/nbd-tools';
import { randomBytes, seededRandom } from '../lib/engine-fixture';

const VOLUME_BYTES = 16 * 1024 * 1024;
const READ = 0, WRITE = 1;
const SETTLE_MS = 10_000;
const OPT_GO = 7;

const log_lines: { level: number; msg: string; connection?: number; bytes_direct?: number; bytes_written?: number }[] = [];
const log_sink = new Writable({
  write(chunk: Buffer, _encoding, done) {
    for (const line of chunk.toString().split('\n')) if (line !== '') log_lines.push(JSON.parse(line) as typeof log_lines[number]);
    done();
  },
});
const logger = pino({ level: 'debug' }, log_sink);
const fixture = nbdFixtureHooks(test, {
  engine: { logger, cow_workers: 2, image_workers: 2 }, server: { logger }, volumes: { vol: VOLUME_BYTES },
});

async function sessionsSettled(): Promise<boolean> {
  const deadline = Date.now() + SETTLE_MS;
  while (Date.now() < deadline) {
    const stats = await fixture.engine.actorStats();
    if (fixture.engine.status().sessions.length === 0 && stats.every((actor) => actor.sessions === 0)) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return false;
}

/** Two volume connections and one image connection at once, each served, then closed. */
async function spreadRound(): Promise<void> {
  await fixture.snapshot(['vol']);
  const image = fixture.engine.exportNames().find((name) => name.startsWith('vol@'))!;
  const clients = [await RawNbd.connect(fixture.socket_path), await RawNbd.connect(fixture.socket_path), await RawNbd.connect(fixture.socket_path)];
  await clients[0]!.go('vol');
  await clients[1]!.go('vol');
  await clients[2]!.go(image);
  const sessions = fixture.engine.status().sessions;
  assert.equal(sessions.map((s) => s.actor).sort(), ['cow', 'cow', 'image']);
  const stats = await fixture.engine.actorStats();
  assert.equal(stats.filter((a) => a.kind === 'cow').map((a) => a.sessions), [1, 1], 'one volume connection per cow actor');
  assert.equal(stats.filter((a) => a.kind === 'image').map((a) => a.sessions).sort(), [0, 1]);
  // Each is served: a write and its read-back on the volume, a read on the image.
  for (const [i, client] of clients.slice(0, 2).entries()) {
    const data = Buffer.alloc(4096, 0x30 + i);
    await client.request(WRITE, 0, 1n, i * 4096, data.length, data);
    const reply = await client.reply();
    assert.ok(reply.kind === 'simple' && reply.error === 0);
    await client.request(READ, 0, 2n, i * 4096, data.length);
    assert.equal(await client.readStructured(2n, i * 4096, data.length), data);
  }
  await clients[2]!.request(READ, 0, 3n, 8192, 4096);
  assert.equal(await clients[2]!.readStructured(3n, 8192, 4096), Buffer.alloc(4096), 'the image shows the volume at take');
  for (const client of clients) {
    await client.disc();
    assert.ok(await client.waitClosed());
  }
  assert.ok(await sessionsSettled(), `sessions left: ${JSON.stringify(fixture.engine.status().sessions)}`);
  for (const id of fixture.engine.snapshotCollect()) await fixture.engine.snapshotDestroy(id);
}

test('connections spread over the actors of their kind, are listed while they live, and leave nothing behind', async () => {
  // The first round lets each actor's event loop make what it makes once
  // (a descriptor reserved for EMFILE handling with its first socket).
  await spreadRound();
  const fds_before = openFdCount();
  await spreadRound();
  assert.ok(await eventually(() => openFdCount() <= fds_before, SETTLE_MS), `fds: ${openFdCount()} now, ${fds_before} before`);
});

test('requests sent right behind GO, before its reply, are served in order', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  await client.handshake();
  const data = Buffer.alloc(8192, 0x5a);
  const option_header = Buffer.alloc(16);
  NBD.IHAVEOPT.copy(option_header, 0);
  const go_data = infoData('vol', []);
  option_header.writeUInt32BE(OPT_GO, 8);
  option_header.writeUInt32BE(go_data.length, 12);
  const request = (type: number, handle: bigint, offset: number, length: number): Buffer => {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(NBD.REQUEST_MAGIC, 0);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    return header;
  };
  // One write: GO, a WRITE with its payload, a READ of what it wrote.
  await client.write(Buffer.concat([option_header, go_data, request(WRITE, 7n, 65536, data.length), data, request(READ, 8n, 65536, data.length)]));
  for (let reply = await client.optionReply(); reply.type !== 1; reply = await client.optionReply()) {
    assert.ok((reply.type & 0x80000000) === 0, `GO failed: ${reply.type.toString(16)}`);
  }
  const written = await client.reply();
  assert.ok(written.kind === 'simple' && written.error === 0 && written.handle === 7n, 'the write is answered');
  const read = await client.reply();
  assert.ok(read.kind === 'simple' && read.error === 0 && read.handle === 8n, 'then the read');
  assert.equal(await client.read(data.length), data);
  await client.disc();
  assert.ok(await client.waitClosed());
  assert.ok(await sessionsSettled());
});

test('large writes land straight in their slots, small ones around them stay in order; everything reads back', async () => {
  log_lines.length = 0;
  const client = await RawNbd.connect(fixture.socket_path);
  await client.go('vol');
  const random = seededRandom(7);
  // Odd sizes and offsets, several slots long (1 MiB each), small writes between them, all in flight at once.
  const writes = [
    { offset: 1_000_001, data: randomBytes(random, 3 * 1024 * 1024 + 100) },
    { offset: 12_345, data: randomBytes(random, 700) },
    { offset: 5_000_000, data: randomBytes(random, 1024 * 1024) },
    { offset: 7_000_000, data: randomBytes(random, 200_000) },
    { offset: 9_999, data: randomBytes(random, 3) },
  ];
  for (const [i, write] of writes.entries()) await client.request(WRITE, 0, BigInt(i), write.offset, write.data.length, write.data);
  for (let i = 0; i < writes.length; i += 1) {
    const reply = await client.reply();
    assert.ok(reply.kind === 'simple' && reply.error === 0, `write ${reply.handle}`);
  }
  for (const [i, write] of writes.entries()) {
    await client.request(READ, 0, BigInt(100 + i), write.offset, write.data.length);
    assert.equal(await client.readStructured(BigInt(100 + i), write.offset, write.data.length), write.data, `read-back ${i}`);
  }
  await client.disc();
  assert.ok(await client.waitClosed());
  let closed: typeof log_lines[number] | undefined;
  assert.ok(await eventually(() => (closed = log_lines.find((line) => line.msg === 'nbd connection closed')) !== undefined, SETTLE_MS));
  const total = writes.reduce((sum, write) => sum + write.data.length, 0);
  assert.is(closed!.bytes_written, total);
  assert.ok(closed!.bytes_direct! > 0 && closed!.bytes_direct! < total, `direct bytes: ${closed!.bytes_direct} of ${total}`);
});

test("a session's log lines reach the engine's logger from the actor", async () => {
  log_lines.length = 0;
  const client = await RawNbd.connect(fixture.socket_path);
  await client.go('vol');
  const bound = log_lines.find((line) => line.msg === 'nbd export bound');
  assert.ok(bound !== undefined && typeof bound.connection === 'number');
  // A request with the wrong magic: the actor cuts the connection and says why.
  await client.write(Buffer.alloc(28, 0xee));
  assert.ok(await client.waitClosed());
  assert.ok(await eventually(() => log_lines.some((line) => /nbd protocol violation/.test(line.msg) && line.connection === bound.connection), SETTLE_MS),
    `log: ${JSON.stringify(log_lines)}`);
  assert.ok(await eventually(() => log_lines.some((line) => line.msg === 'nbd connection closed' && line.connection === bound.connection), SETTLE_MS));
  assert.ok(await sessionsSettled());
});

test.run();

// Goal: no client can hurt the daemon or another client (docs/design.md §10 "Bad
// input"): garbage, truncated handshakes, wrong magics, oversized option
// and request lengths, offsets past the end, requests after DISC, clients
// that never read, 100 idle connections, clients killed mid-write (a
// socket torn down, a separate process SIGKILLed, fio SIGKILLed). Each is
// answered as proto.md says (error reply or hard disconnect); afterwards a
// normal client is served, every connection and IoQueue is gone, and the
// open file descriptors and the heap are back where they started.
// Method: raw protocol clients (test/lib/nbd-raw-client.ts) on a server
// with a 1 s handshake timeout; a "good" client keeps writing and reading
// back its own region while the hostile ones run; /proc/self/fd and a
// forced GC measure leaks.

import { spawn } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes, seededRandom } from '../lib/engine-fixture';
import { nbdFixtureHooks } from '../lib/nbd-fixture';
import { ChunkError, RawNbd, infoData } from '../lib/nbd-raw-client';
import { eventually, openFdCount, openFdTargets, run } from '../lib/nbd-tools';
import { findTool } from '../lib/system';

const VOLUME_BYTES = 64 * 1024 * 1024;
const HANDSHAKE_TIMEOUT_MS = 1000;
const READ = 0, WRITE = 1;
const EINVAL = 22, ENOSPC = 28;
/** How long cleanup after a client's death may take. */
const SETTLE_MS = 10_000;
/** Heap growth tolerated over a churn of hostile connections (one leaked record each would show). */
const HEAP_GROWTH_BYTES_MAX = 4 * 1024 * 1024;
/** A client that never reads costs at most its queue's slots (64 MiB) and socket buffers, not what it asks for. */
const DEAF_RSS_GROWTH_BYTES_MAX = 192 * 1024 * 1024;

let fd_baseline = 0;
let fd_targets_baseline: string[] = [];

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const fixture = nbdFixtureHooks(test, {
  server: { handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS },
  volumes: { vol: VOLUME_BYTES },
  async ready(started) {
    // Warm up: normal sessions at once on every cow actor, so lazily made
    // things exist before the baseline (each actor's event loop reserves a
    // descriptor for EMFILE handling with its first socket).
    const cow_actors = started.engine.status().workers.cow;
    await Promise.all(Array.from({ length: cow_actors }, (_, slot) => goodSession(slot)));
    await settled();
    fd_baseline = openFdCount();
    fd_targets_baseline = openFdTargets();
  },
});

/** Waits until the server holds no connection, the engine no queue, and no actor a session. */
async function settled(): Promise<void> {
  const idle = async (): Promise<boolean> => {
    const engine = fixture.engine.status();
    if (fixture.server.status().connections !== 0 || engine.queues.length !== 0 || engine.sessions.length !== 0) return false;
    return (await fixture.engine.actorStats()).every((actor) => actor.sessions === 0);
  };
  let ok = false;
  const deadline = Date.now() + SETTLE_MS;
  while (!ok && Date.now() < deadline) {
    ok = await idle();
    if (!ok) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const engine = fixture.engine.status();
  assert.ok(ok, `still open: ${JSON.stringify(fixture.server.status())}, queues ${JSON.stringify(engine.queues)}, sessions ${JSON.stringify(engine.sessions)}`);
}

/** A well-behaved client: writes its own 1 MiB region and reads it back. */
async function goodSession(slot: number): Promise<void> {
  const client = await RawNbd.connect(fixture.socket_path);
  await client.go('vol');
  const offset = (VOLUME_BYTES / 2) + slot * 1024 * 1024;
  const data = randomBytes(seededRandom(slot + 1), 1024 * 1024);
  await client.request(WRITE, 0, 1n, offset, data.length, data);
  const reply = await client.reply();
  assert.ok(reply.kind === 'simple' && reply.error === 0, 'good write');
  await client.request(READ, 0, 2n, offset, data.length);
  assert.equal(await client.readStructured(2n, offset, data.length), data, 'good read-back');
  await client.disc();
  assert.ok(await client.waitClosed());
}

async function expectDisconnect(client: RawNbd, what: string): Promise<void> {
  assert.ok(await client.waitClosed(), `${what}: the server disconnects`);
}

test('garbage instead of client flags: disconnect', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  await client.greeting();
  await client.write(randomBytes(seededRandom(3), 4096));
  await expectDisconnect(client, 'garbage');
});

test('truncated handshakes: closed by the client, or cut off by the handshake timeout', async () => {
  const pieces = [Buffer.alloc(0), Buffer.from([0, 0]), Buffer.from([0, 0, 0, 3, 0x49, 0x48]),
    Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('IHAVEOPT'), Buffer.from([0, 0, 0, 7, 0, 0, 0, 100]), Buffer.alloc(10)])];
  for (const piece of pieces) {
    const vanishing = await RawNbd.connect(fixture.socket_path);
    await vanishing.write(piece);
    vanishing.destroy();
    const stalling = await RawNbd.connect(fixture.socket_path);
    await stalling.write(piece);
    const started = Date.now();
    assert.ok(await stalling.waitClosed(HANDSHAKE_TIMEOUT_MS * 5), 'handshake timeout');
    assert.ok(Date.now() - started >= HANDSHAKE_TIMEOUT_MS * 0.8, 'not before the timeout');
  }
  await settled();
});

test('wrong magics: option magic and request magic disconnect', async () => {
  const option = await RawNbd.connect(fixture.socket_path);
  await option.handshake();
  await option.write(Buffer.concat([Buffer.from('IHAVEOPX'), Buffer.alloc(8)]));
  await expectDisconnect(option, 'bad option magic');
  const request = await RawNbd.connect(fixture.socket_path);
  await request.go('vol');
  const header = Buffer.alloc(28);
  header.writeUInt32BE(0x25609514, 0);
  // A well-formed WRITE right behind the bad header, in the same segment: it must not run.
  const follower = Buffer.alloc(28 + 512, 0xab);
  follower.writeUInt32BE(0x25609513, 0);
  follower.writeUInt16BE(0, 4);
  follower.writeUInt16BE(WRITE, 6);
  follower.writeBigUInt64BE(7n, 8);
  follower.writeBigUInt64BE(BigInt(VOLUME_BYTES - 512), 16);
  follower.writeUInt32BE(512, 24);
  await request.write(Buffer.concat([header, follower]));
  await expectDisconnect(request, 'bad request magic');
  const check = await RawNbd.connect(fixture.socket_path);
  await check.go('vol');
  await check.request(READ, 0, 1n, VOLUME_BYTES - 512, 512);
  assert.equal(await check.readStructured(1n, VOLUME_BYTES - 512, 512), Buffer.alloc(512), 'nothing after the bad magic ran');
  check.destroy();
  const client_flags = await RawNbd.connect(fixture.socket_path);
  await client_flags.handshake(0x80);
  await expectDisconnect(client_flags, 'unknown client flag');
});

test('oversized lengths: a huge option is dropped with ERR_TOO_BIG; huge requests are refused or cut off', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  await client.handshake();
  const replies = await client.option(6, Buffer.concat([infoData('vol', []), Buffer.alloc(200 * 1024)]));
  assert.is(replies[0]!.type, 0x80000009, 'REP_ERR_TOO_BIG');
  const [ack] = await client.option(8);
  assert.is(ack!.type, 1, 'haggling goes on after the dropped option');
  const go = await client.option(7, infoData('vol', [3]));
  assert.is(go.at(-1)!.type, 1);
  await client.request(READ, 0, 1n, 0, 0xffffffff);
  const error = await client.readStructured(1n, 0, 0).catch((e: unknown) => e);
  assert.is((error as ChunkError).errno, EINVAL, 'a 4 GiB read is refused');
  const forty = Buffer.alloc(40 * 1024 * 1024, 0x33);
  await client.request(WRITE, 0, 2n, 0, forty.length, forty);
  const refused = await client.reply();
  assert.ok(refused.kind === 'chunk' && new ChunkError(refused).errno === EINVAL, '40 MiB write: payload dropped, EINVAL');
  await client.request(READ, 0, 3n, 0, 16);
  assert.equal(await client.readStructured(3n, 0, 16), Buffer.alloc(16), 'the dropped payload was not written; still in step');
  await client.request(WRITE, 0, 4n, 0, 0xffffffff);
  await expectDisconnect(client, 'a 4 GiB write payload');
  const export_name = await RawNbd.connect(fixture.socket_path);
  await export_name.handshake();
  await export_name.sendOption(1, Buffer.alloc(100 * 1024, 0x61));
  await expectDisconnect(export_name, 'a 100 KiB EXPORT_NAME');
});

test('offsets past the end: EINVAL for reads, ENOSPC for writes, the connection stays usable', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  await client.go('vol', { structured: false });
  const expectSimple = async (handle: bigint, error: number): Promise<void> => {
    const reply = await client.reply();
    assert.ok(reply.kind === 'simple' && reply.handle === handle && reply.error === error, `handle ${handle}: error ${error}`);
  };
  await client.request(READ, 0, 1n, 2n ** 63n, 512);
  await expectSimple(1n, EINVAL);
  await client.request(READ, 0, 2n, 2n ** 64n - 1n, 1);
  await expectSimple(2n, EINVAL);
  await client.request(WRITE, 0, 3n, VOLUME_BYTES, 512, Buffer.alloc(512, 9));
  await expectSimple(3n, ENOSPC);
  await client.request(WRITE, 0, 4n, 2n ** 63n, 512, Buffer.alloc(512, 9));
  await expectSimple(4n, ENOSPC);
  await client.request(READ, 0, 5n, VOLUME_BYTES - 512, 512);
  await expectSimple(5n, 0);
  await client.read(512);
  await client.disc();
  assert.ok(await client.waitClosed());
});

test('requests after DISC get nothing; a client that never reads is paused, not buffered', async () => {
  const client = await RawNbd.connect(fixture.socket_path);
  await client.go('vol');
  await client.disc();
  await client.write(randomBytes(seededRandom(5), 64 * 1024));
  assert.ok(await client.waitClosed(), 'closed after DISC');
  const deaf = await RawNbd.connect(fixture.socket_path);
  await deaf.go('vol');
  deaf.socket.pause();
  const rss_before = process.memoryUsage().rss;
  const requests: Promise<void>[] = [];
  // 400 MiB of reads asked for, none of the replies read.
  for (let i = 0; i < 400; i += 1) requests.push(deaf.request(READ, 0, BigInt(i), 0, 1024 * 1024));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const growth = process.memoryUsage().rss - rss_before;
  assert.ok(growth < DEAF_RSS_GROWTH_BYTES_MAX, `rss grew by ${growth} bytes for a client that reads nothing`);
  await goodSession(1);
  deaf.destroy();
  void requests;
  await settled();
});

test('100 idle connections and 20 idle bound ones do not stop a normal client', async () => {
  const idle: RawNbd[] = [];
  for (let i = 0; i < 100; i += 1) idle.push(await RawNbd.connect(fixture.socket_path));
  const bound: RawNbd[] = [];
  for (let i = 0; i < 20; i += 1) {
    const client = await RawNbd.connect(fixture.socket_path);
    await client.go('vol');
    bound.push(client);
  }
  assert.ok(fixture.server.status().connections >= 120);
  await goodSession(2);
  const nbdinfo = findTool('nbdinfo');
  if (nbdinfo !== undefined) {
    const info = await run(nbdinfo, [fixture.uri('vol')]);
    assert.is(info.code, 0, `nbdinfo while 120 clients idle: ${info.stderr}`);
  }
  for (const client of idle) assert.ok(await client.waitClosed(HANDSHAKE_TIMEOUT_MS * 5), 'idle handshakes time out');
  for (const client of bound) client.destroy();
  await settled();
});

test('clients killed mid-write: torn socket, SIGKILLed process, SIGKILLed fio; their tags and queues are freed', async () => {
  // Torn socket with a write half sent and other writes in flight.
  const torn = await RawNbd.connect(fixture.socket_path);
  await torn.go('vol');
  for (let i = 0; i < 8; i += 1) await torn.request(WRITE, 0, BigInt(i), i * 1024 * 1024, 1024 * 1024, Buffer.alloc(1024 * 1024, i));
  await torn.request(WRITE, 0, 99n, 0, 16 * 1024 * 1024, Buffer.alloc(3 * 1024 * 1024, 0x77));
  torn.destroy();
  // A separate process mid-payload, killed with SIGKILL.
  const script = `
    const net = require('net');
    const s = net.connect(${JSON.stringify(fixture.socket_path)});
    const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
    s.once('data', () => {
      const name = Buffer.from('vol');
      s.write(Buffer.concat([u32(3), Buffer.from('IHAVEOPT'), u32(7), u32(4 + name.length + 2), u32(name.length), name, Buffer.alloc(2)]));
      setTimeout(() => {
        const h = Buffer.alloc(28); h.writeUInt32BE(0x25609513, 0); h.writeUInt16BE(1, 6); h.writeUInt32BE(32 * 1024 * 1024, 24);
        s.write(Buffer.concat([h, Buffer.alloc(5 * 1024 * 1024, 0x11)]), () => process.stdout.write('sent\\n'));
      }, 200);
    });
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('close', resolve));
  // fio killed in the middle of a write workload.
  const fio = findTool('fio');
  if (fio !== undefined) {
    // fio forks a process per job: --thread keeps the connection in the process we kill,
    // and the new process group lets us kill all of it by group anyway.
    const job = spawn(fio, ['--name=killed', '--thread', '--ioengine=nbd', `--uri=${fixture.uri('vol')}`, '--rw=randwrite',
      '--bs=1m', '--iodepth=32', '--size=64m', '--time_based', '--runtime=30', '--verify_state_save=0'],
    { stdio: 'ignore', cwd: fixture.dir, detached: true });
    await new Promise((resolve) => setTimeout(resolve, 700));
    process.kill(-job.pid!, 'SIGKILL');
    await new Promise((resolve) => job.once('close', resolve));
  }
  await settled();
  await goodSession(3);
});

test('after everything: normal clients served, no connection, queue or fd left, heap back', async () => {
  await settled();
  gc();
  const heap_before = process.memoryUsage().heapUsed;
  // A churn of mixed misbehaviour.
  for (let round = 0; round < 60; round += 1) {
    const a = await RawNbd.connect(fixture.socket_path);
    await a.write(Buffer.from('GARBAGE!'));
    const b = await RawNbd.connect(fixture.socket_path);
    await b.go('vol');
    await b.request(WRITE, 0, 1n, 0, 1024 * 1024, Buffer.alloc(4096));
    b.destroy();
    const c = await RawNbd.connect(fixture.socket_path);
    await c.go('vol');
    await c.request(READ, 0, 1n, VOLUME_BYTES, 1);
    await c.reply();
    c.destroy();
    await a.waitClosed();
  }
  await settled();
  await goodSession(4);
  await settled();
  if (!await eventually(() => openFdCount() <= fd_baseline, SETTLE_MS)) {
    const now = openFdTargets();
    const added = now.filter((target) => !fd_targets_baseline.includes(target));
    const gone = fd_targets_baseline.filter((target) => !now.includes(target));
    assert.unreachable(`fds: ${openFdCount()} now, ${fd_baseline} at the start; new: ${added.join(', ')}; gone: ${gone.join(', ')}`);
  }
  gc();
  const growth = process.memoryUsage().heapUsed - heap_before;
  assert.ok(growth < HEAP_GROWTH_BYTES_MAX, `heap grew by ${growth} bytes over 180 hostile connections`);
});

test.run();

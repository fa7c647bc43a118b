// Goal: the server's life and edges: option validation with clear
// TypeErrors; URIs clients accept (Unix and TCP, `@` encoded); the Unix
// socket made 0600, a stale one replaced, a live one or a non-socket
// refused; too many connections refused at accept; GO refused with a
// message (and haggling going on) when the engine has no queue slots left;
// stop() finishing in-flight requests, closing every connection and
// removing the socket; the daemon frontend adapter (publish, addressOf,
// status).
// Method: servers on scratch sockets over a real engine; raw clients.

import { spawn } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NbdFrontend } from '../../src/frontends/nbd/frontend';
import { NbdServer } from '../../src/frontends/nbd/server';
import { tcpUri, unixUri } from '../../src/frontends/nbd/uri';
import { nbdFixtureHooks } from '../lib/nbd-fixture';
import { RawNbd, infoData } from '../lib/nbd-raw-client';
import { eventually, run } from '../lib/nbd-tools';
import { findTool } from '../lib/system';

const VOLUME_BYTES = 8 * 1024 * 1024;
const fixture = nbdFixtureHooks(test, { tcp: true, volumes: { vol: VOLUME_BYTES } });

test('options are validated with TypeErrors naming the option', () => {
  const engine = fixture.engine;
  assert.throws(() => new NbdServer(engine, {}), /socket_path, listen, or both/);
  assert.throws(() => new NbdServer(engine, { socket_path: '' }), /socket_path/);
  assert.throws(() => new NbdServer(engine, { listen: { port: 70000 } }), /listen.port/);
  assert.throws(() => new NbdServer(engine, { socket_path: '/x', queue_depth: 0 }), /queue_depth/);
  assert.throws(() => new NbdServer(engine, { socket_path: '/x', max_io_bytes: 1.5 }), /max_io_bytes/);
  assert.throws(() => new NbdServer(engine, { socket_path: '/x', queue_depth: 2, max_io_bytes: 4096, max_request_bytes: 3 * 4096 }), /at most queue_depth/);
  assert.throws(() => new NbdServer(engine, { socket_path: '/x', socket_mode: 0o1777 }), /socket_mode/);
  assert.throws(() => new NbdServer(engine, { socket_path: '/x', handshake_timeout_ms: -1 }), /handshake_timeout_ms/);
});

test('URIs: Unix and TCP forms, reserved characters encoded; clients accept them', async () => {
  assert.is(unixUri('/run/u s/nbd.sock', 'vol@1234'), 'nbd+unix:///vol%401234?socket=/run/u%20s/nbd.sock');
  assert.is(tcpUri('127.0.0.1', 10809, 'a/b'), 'nbd://127.0.0.1:10809/a%2Fb');
  assert.is(tcpUri('::1', 10809, 'vol'), 'nbd://[::1]:10809/vol');
  assert.is(fixture.uri('vol'), `nbd+unix:///vol?socket=${fixture.socket_path}`);
  assert.match(fixture.uri('vol', 'tcp'), /^nbd:\/\/127\.0\.0\.1:\d+\/vol$/);
  const nbdinfo = findTool('nbdinfo');
  if (nbdinfo !== undefined) {
    const id = await fixture.snapshot(['vol']);
    for (const uri of [fixture.uri(`vol@${id}`), fixture.uri(`vol@${id}`, 'tcp')]) {
      const out = await run(nbdinfo, ['--size', uri]);
      assert.is(out.stdout.trim(), String(VOLUME_BYTES), `${uri}: ${out.stderr}`);
    }
    await fixture.engine.snapshotDestroy(id);
  }
});

test('Unix socket: mode 0600; stale socket replaced; live socket and plain file refused', async () => {
  assert.is(statSync(fixture.socket_path).mode & 0o777, 0o600);
  const stale = path.join(fixture.dir, 'stale.sock');
  // A process that dies with SIGKILL leaves its socket file behind.
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('close', resolve));
  assert.ok(existsSync(stale), 'the stale socket file is there');
  const replacing = new NbdServer(fixture.engine, { socket_path: stale });
  await replacing.start();
  const client = await RawNbd.connect(stale);
  await client.greeting();
  client.destroy();
  const second = new NbdServer(fixture.engine, { socket_path: stale });
  let error = await second.start().then(() => null, (e: unknown) => e as Error);
  assert.match(error?.message ?? '', /in use by another server/);
  await replacing.stop();
  assert.not.ok(existsSync(stale), 'stop removes the socket file');
  const plain = path.join(fixture.dir, 'plain-file');
  writeFileSync(plain, 'not a socket');
  error = await new NbdServer(fixture.engine, { socket_path: plain }).start().then(() => null, (e: unknown) => e as Error);
  assert.match(error?.message ?? '', /not a socket/);
  assert.ok(existsSync(plain), 'a file that is not a socket is never removed');
});

test('connections past connections_max are refused at accept; the others are served', async () => {
  const socket_path = path.join(fixture.dir, 'limited.sock');
  const server = new NbdServer(fixture.engine, { socket_path, connections_max: 3 });
  await server.start();
  const clients = await Promise.all([0, 1, 2].map(() => RawNbd.connect(socket_path)));
  for (const client of clients.slice(1)) await client.greeting();
  const refused = await Promise.all([0, 1].map(() => RawNbd.connect(socket_path)));
  for (const client of refused) assert.ok(await client.waitClosed(), 'refused connection closed');
  assert.ok(await eventually(() => server.status().refused_total === 2, 2000));
  const info = await clients[0]!.go('vol');
  assert.is(info.size, VOLUME_BYTES, 'the admitted connections are served');
  for (const client of clients) client.destroy();
  await server.stop();
});

test('no queue slots left in the engine: GO refused with a message, haggling goes on, later GO works', async () => {
  // 4096 request-ring slots / 1024 per queue: four bound connections at most.
  const socket_path = path.join(fixture.dir, 'deep.sock');
  const server = new NbdServer(fixture.engine, { socket_path, queue_depth: 1024, max_io_bytes: 4096, max_request_bytes: 1024 * 4096 });
  await server.start();
  const bound: RawNbd[] = [];
  for (;;) {
    const client = await RawNbd.connect(socket_path);
    await client.handshake();
    const replies = await client.option(7, infoData('vol', []));
    if (replies.at(-1)!.type !== 1) {
      assert.is(replies.at(-1)!.type, 0x80000002, 'REP_ERR_POLICY');
      assert.match(replies.at(-1)!.payload.toString(), /request rings/);
      bound[0]!.destroy();
      await eventually(() => server.status().bound < bound.length, 5000);
      const retry = await client.option(7, infoData('vol', []));
      assert.is(retry.at(-1)!.type, 1, 'GO works once a queue closed');
      bound.push(client);
      break;
    }
    bound.push(client);
    assert.ok(bound.length <= 8, 'the engine refuses queues eventually');
  }
  for (const client of bound) client.destroy();
  await server.stop();
});

test('stop(): in-flight requests are answered, every connection closes, new connections are refused', async () => {
  const socket_path = path.join(fixture.dir, 'stopping.sock');
  const server = new NbdServer(fixture.engine, { socket_path });
  await server.start();
  const bound = await RawNbd.connect(socket_path);
  await bound.go('vol');
  const handshaking = await RawNbd.connect(socket_path);
  await handshaking.greeting();
  const data = Buffer.alloc(4 * 1024 * 1024, 0x5c);
  await bound.request(1, 0, 1n, 0, data.length, data);
  const stopped = server.stop();
  const reply = await bound.reply();
  assert.ok(reply.kind === 'simple' && reply.error === 0 && reply.handle === 1n, 'the write in flight was answered');
  await stopped;
  assert.ok(await bound.waitClosed(1000));
  assert.ok(await handshaking.waitClosed(1000));
  assert.not.ok(existsSync(socket_path));
  const refused = await new Promise<boolean>((resolve) => {
    const socket = net.connect({ path: socket_path });
    socket.once('connect', () => { socket.destroy(); resolve(false); });
    socket.once('error', () => resolve(true));
  });
  assert.ok(refused);
});

test('daemon frontend adapter: publish, addressOf, status', async () => {
  const frontend = new NbdFrontend({
    engine: fixture.engine, logger: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } as never,
    nbd_socket: path.join(fixture.dir, 'frontend.sock'), nbd_listen: { host: '127.0.0.1', port: 0 }, state_dir: fixture.dir,
  });
  await frontend.start();
  assert.is(await frontend.publish('vol'), `nbd+unix:///vol?socket=${path.join(fixture.dir, 'frontend.sock')}`);
  const missing = await frontend.publish('nope').then(() => null, (e: unknown) => e as { code?: string });
  assert.is(missing?.code, 'ESRCH');
  assert.is(frontend.addressOf('vol@00000000-0000-0000-0000-000000000000'), null);
  const status = frontend.status();
  assert.is(status.kind, 'nbd');
  assert.is(status.listening.length, 2);
  assert.is(status.connections, 0);
  await frontend.unpublish('vol');
  await frontend.stop();
});

test.run();

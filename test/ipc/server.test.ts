// Goal: the control-socket server keeps its promises independently of the
// engine: owner-only socket, refusal of a live socket and removal of a
// stale one, concurrent requests answered by id, per-connection and
// connection caps with clear errors, handler failures as error replies,
// long-polls cancelled the moment their client leaves, idle clients
// closed, a clean stop that answers waiters with ESHUTDOWN and removes the
// socket file.
// Method: an IpcServer in this process with toy methods (echo, a wait that
// listens to its abort signal, handlers that throw), driven by IpcClient
// and raw sockets.

import { spawn } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pino from 'pino';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IpcClient } from '../../src/ipc/client';
import { IpcServer, SocketInUseError } from '../../src/ipc/server';
import { integer, object, string } from '../../src/ipc/schema';
import { UblksnapError } from '../../src/shared/errors';
import { exists, hardTimeout, removeScratchDir, scratchDir } from '../lib/daemon';

hardTimeout(120_000, 'ipc/server');

const METHODS = {
  echo: { params: object({ text: string(100) }) },
  wait: { params: object({ ms: integer(0, 60_000) }) },
  boom: { params: object({}) },
  bigint: { params: object({}) },
};

let dir: string;
let aborted_reasons: unknown[] = [];

function makeServer(socket_path: string, limits: Partial<{ connections_max: number; requests_in_flight_max: number; idle_timeout_ms: number; line_bytes_max: number }> = {}): IpcServer<typeof METHODS> {
  return new IpcServer({
    socket_path,
    methods: METHODS,
    logger: pino({ level: 'silent' }),
    ...limits,
    handlers: {
      echo: (params) => ({ text: params.text }),
      wait: (params, context) => new Promise((resolve, reject) => {
        const timer = setTimeout(() => resolve({ waited: params.ms }), params.ms);
        context.signal.addEventListener('abort', () => {
          clearTimeout(timer);
          aborted_reasons.push(context.signal.reason);
          reject(new UblksnapError(context.signal.reason === 'shutdown' ? 'ESHUTDOWN' : 'ETIMEDOUT', 'wait ended'));
        }, { once: true });
      }),
      boom: () => { throw new TypeError('a bug in a handler'); },
      bigint: () => ({ value: 10n }),
    },
  });
}

async function rejects(promise: Promise<unknown>, code: string): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    assert.is((error as UblksnapError).code, code, (error as Error).message);
    return error as Error;
  }
  throw new Error(`expected ${code}`);
}

/** Sends raw bytes, returns every line the server sent until it closed (or until timeout_ms). */
function rawExchange(socket_path: string, data: string | Buffer, timeout_ms = 2_000, end = false): Promise<string[]> {
  return new Promise((resolve) => {
    const socket = net.createConnection(socket_path);
    let received = '';
    const finish = (): void => { clearTimeout(timer); socket.destroy(); resolve(received.split('\n').filter((l) => l !== '')); };
    const timer = setTimeout(finish, timeout_ms);
    socket.on('data', (chunk) => { received += chunk.toString(); });
    socket.on('close', finish);
    socket.on('error', () => { /* EPIPE / ECONNRESET once the server closed on us: the lines so far are the answer */ });
    socket.on('connect', () => { if (end) socket.end(data); else socket.write(data); });
  });
}

test.before(() => {
  dir = scratchDir('ipc-server');
});

test.after(() => {
  removeScratchDir(dir);
});

test('the socket is 0600 and answers; ids come back; notifications get no reply', async () => {
  const server = makeServer(path.join(dir, 'a.sock'));
  await server.listen();
  try {
    assert.is(statSync(server.socket_path).mode & 0o777, 0o600);
    const client = await IpcClient.connect(server.socket_path);
    assert.equal(await client.callRaw('echo', { text: 'hi' }), { text: 'hi' });
    client.close();
    const lines = await rawExchange(server.socket_path,
      '{"jsonrpc":"2.0","method":"echo","params":{"text":"quiet"}}\n{"jsonrpc":"2.0","id":"s1","method":"echo","params":{"text":"x"}}\n', 300);
    assert.equal(lines.map((line) => JSON.parse(line)), [{ jsonrpc: '2.0', id: 's1', result: { text: 'x' } }]);
  } finally {
    await server.stop();
  }
  assert.not.ok(exists(server.socket_path), 'socket removed at stop');
});

test('a live socket is refused, a stale one removed, a regular file left alone', async () => {
  const socket_path = path.join(dir, 'b.sock');
  const first = makeServer(socket_path);
  await first.listen();
  const error = await rejects(makeServer(socket_path).listen(), 'EBUSY');
  assert.instance(error, SocketInUseError);
  await first.stop();

  // A process that listens and dies by SIGKILL leaves its socket file behind.
  await new Promise<void>((resolve) => {
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socket_path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    child.on('exit', () => resolve());
  });
  assert.ok(statSync(socket_path).isSocket(), 'stale socket left');
  const second = makeServer(socket_path);
  await second.listen();
  assert.equal(await (await IpcClient.connect(socket_path)).callRaw('echo', { text: 'new' }), { text: 'new' });
  await second.stop();

  const file_path = path.join(dir, 'not-a-socket');
  writeFileSync(file_path, 'keep me');
  await rejects(makeServer(file_path).listen(), 'EEXIST');
  assert.ok(exists(file_path));
});

test('requests run concurrently, answered by id; the in-flight cap answers EBUSY', async () => {
  const server = makeServer(path.join(dir, 'c.sock'), { requests_in_flight_max: 4 });
  await server.listen();
  try {
    const client = await IpcClient.connect(server.socket_path);
    const started = Date.now();
    const waits = [400, 300, 200, 100].map((ms) => client.callRaw('wait', { ms }));
    await rejects(client.callRaw('echo', { text: 'fifth' }), 'EBUSY');
    assert.equal(await Promise.all(waits), [{ waited: 400 }, { waited: 300 }, { waited: 200 }, { waited: 100 }]);
    assert.ok(Date.now() - started < 1_000, 'concurrent, not serial');
    assert.equal(await client.callRaw('echo', { text: 'after' }), { text: 'after' });
    client.close();
  } finally {
    await server.stop();
  }
});

test('handler bugs and bad params become error replies; the server keeps serving', async () => {
  const server = makeServer(path.join(dir, 'd.sock'));
  await server.listen();
  try {
    const client = await IpcClient.connect(server.socket_path);
    const bug = await rejects(client.callRaw('boom', {}), 'EIO');
    assert.match(bug.message, /internal error: a bug in a handler/);
    await rejects(client.callRaw('bigint', {}), 'EIO');
    const bad = await rejects(client.callRaw('echo', { text: 5 }), 'EINVAL');
    assert.match(bad.message, /params\.text: expected a string/);
    assert.is((bad as UblksnapError & { rpc_code: number }).rpc_code, -32602);
    const unknown = await rejects(client.callRaw('nope', {}), 'ENOTSUP');
    assert.is((unknown as UblksnapError & { rpc_code: number }).rpc_code, -32601);
    assert.match(unknown.message, /known: echo, wait, boom, bigint/);
    await rejects(client.callRaw('echo', [1, 2]), 'EINVAL');
    assert.equal(await client.callRaw('echo', { text: 'alive' }), { text: 'alive' });
    client.close();
  } finally {
    await server.stop();
  }
});

test('a client that disconnects mid-wait cancels it at once', async () => {
  const server = makeServer(path.join(dir, 'e.sock'));
  await server.listen();
  try {
    aborted_reasons = [];
    const client = await IpcClient.connect(server.socket_path);
    const pending = client.callRaw('wait', { ms: 50_000 }).catch(() => 'closed');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.is(server.requests_in_flight, 1);
    client.close();
    assert.is(await pending, 'closed');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(aborted_reasons, ['closed']);
    assert.is(server.requests_in_flight, 0, 'nothing left running');
    assert.is(server.connection_count, 0);
  } finally {
    await server.stop();
  }
});

test('the connection cap refuses with a clear error, and frees up', async () => {
  const server = makeServer(path.join(dir, 'f.sock'), { connections_max: 3 });
  await server.listen();
  try {
    const clients = await Promise.all([1, 2, 3].map(() => IpcClient.connect(server.socket_path)));
    for (const client of clients) await client.callRaw('echo', { text: 'x' });
    const refused = await rawExchange(server.socket_path, '{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"4th"}}\n');
    assert.is(refused.length, 1);
    const reply = JSON.parse(refused[0] as string);
    assert.is(reply.error.data.code, 'EBUSY');
    assert.match(reply.error.message, /too many connections to the daemon \(at most 3\)/);
    clients[0]?.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const later = await IpcClient.connect(server.socket_path);
    assert.equal(await later.callRaw('echo', { text: 'in' }), { text: 'in' });
    later.close();
    for (const client of clients) client.close();
  } finally {
    await server.stop();
  }
});

test('over-long line: one E2BIG reply, then the connection closes', async () => {
  const server = makeServer(path.join(dir, 'g.sock'), { line_bytes_max: 1024 });
  await server.listen();
  try {
    const lines = await rawExchange(server.socket_path, `{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"${'x'.repeat(2000)}"}}\n`);
    assert.is(lines.length, 1);
    assert.is(JSON.parse(lines[0] as string).error.data.code, 'E2BIG');
  } finally {
    await server.stop();
  }
});

test('half-closed client: its requests are answered, its long-polls end at once', async () => {
  const server = makeServer(path.join(dir, 'h.sock'));
  await server.listen();
  try {
    // The last line has no newline: it still counts.
    const lines = await rawExchange(server.socket_path,
      '{"jsonrpc":"2.0","id":8,"method":"echo","params":{"text":"x"}}\n{"jsonrpc":"2.0","id":9,"method":"wait","params":{"ms":50000}}', 2_000, true);
    const replies = lines.map((line) => JSON.parse(line));
    assert.equal(replies[0], { jsonrpc: '2.0', id: 8, result: { text: 'x' } });
    assert.is(replies[1].id, 9);
    assert.is(replies[1].error.data.code, 'ETIMEDOUT');
    assert.is(server.requests_in_flight, 0);
  } finally {
    await server.stop();
  }
});

test('idle clients are closed; a client in a long-poll is not', async () => {
  const server = makeServer(path.join(dir, 'i.sock'), { idle_timeout_ms: 200 });
  await server.listen();
  try {
    const idle = await IpcClient.connect(server.socket_path);
    const waiting = await IpcClient.connect(server.socket_path);
    const result = waiting.callRaw('wait', { ms: 600 });
    await new Promise((resolve) => setTimeout(resolve, 400));
    await rejects(idle.callRaw('echo', { text: 'late' }), 'EIO');
    assert.equal(await result, { waited: 600 });
    waiting.close();
  } finally {
    await server.stop();
  }
});

test('stop: long-polls answer ESHUTDOWN, running requests finish, the socket goes', async () => {
  const server = makeServer(path.join(dir, 'j.sock'));
  await server.listen();
  aborted_reasons = [];
  const client = await IpcClient.connect(server.socket_path);
  const poll = client.callRaw('wait', { ms: 50_000 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  const stopping = server.stop();
  await rejects(poll, 'ESHUTDOWN');
  await stopping;
  assert.equal(aborted_reasons, ['shutdown']);
  assert.not.ok(exists(server.socket_path));
  await rejects(IpcClient.connect(server.socket_path), 'ENOENT');
  client.close();
});

test.run();

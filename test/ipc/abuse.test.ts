// Goal: no client can hurt the daemon (docs/design.md §10, bad input): random
// bytes, a 100 MiB line, deeply nested JSON, wrong types for every method,
// unknown methods, half-written requests and 300 clients at once each get
// an error reply or a closed connection, the daemon's memory stays bounded,
// and a normal client is served afterwards.
// Method: a spawned daemon; raw Unix-socket clients from this process send
// the abuse; after each case `ublksnap status` (a separate process) must
// succeed. Random input is seeded and the seed printed.

import net from 'node:net';
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { METHODS, METHOD_NAMES } from '../../src/ipc/methods';
import type { Schema } from '../../src/ipc/schema';
import { disposeDaemon, hardTimeout, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';
import { seededRandom } from '../lib/engine-fixture';
import { testSeed } from '../lib/workers';

const MiB = 1 << 20;
/** The daemon's resident memory may grow by at most this during the abuse. */
const RSS_GROWTH_BYTES_MAX = 96 * MiB;
const CLIENTS_AT_ONCE = 300;
let daemon: TestDaemon;
let rss_before_bytes = 0;
const SOME_ID = '5f0c3a1e-8d2b-4c6f-9a7e-0b1c2d3e4f50';
/** A well-formed params object for each method (its values need not name anything real). */
const VALID_PARAMS: Record<string, Record<string, unknown>> = {
  version: {}, status: {}, snapshot_collect: {},
  attach: { path: '/x', name: 'x', nbd: false, ublk: false },
  detach: { device: 'x', force: false },
  cbtinfo: { device: 'x' },
  readcbtmap: { device: 'x', first_block: 0, length_bytes: 1 },
  markdirtyblock: { device: 'x', ranges: [{ sector: 0, count: 1 }] },
  snapshot_create: { devices: ['x'], storage: '/x', limit_bytes: 1 },
  snapshot_add: { id: SOME_ID, device: 'x' },
  snapshot_take: { id: SOME_ID },
  snapshot_destroy: { id: SOME_ID },
  snapshot_waitevent: { id: SOME_ID, timeout_ms: 0 },
  snapshot_info: { device: 'x' },
};

hardTimeout(240_000, 'ipc/abuse');

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match?.[1] ?? 0) * 1024;
}

interface Exchange {
  lines: string[];
  closed_by_server: boolean;
  error: string | null;
}

/**
 * Connects, sends each piece in turn, and collects reply lines until the
 * server closes, expect_lines arrived, or wait_ms passed after the last write.
 */
function exchange(socket_path: string, pieces: (string | Buffer)[], wait_ms = 1_500, half_close = false, expect_lines = Infinity): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = net.createConnection(socket_path);
    let received = '';
    let closed_by_server = false;
    let error: string | null = null;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ lines: received.split('\n').filter((line) => line !== ''), closed_by_server, error });
    };
    socket.on('data', (chunk) => {
      received += chunk.toString();
      if (received.split('\n').length - 1 >= expect_lines) finish();
    });
    socket.on('end', () => { closed_by_server = true; finish(); });
    socket.on('close', finish);
    // EPIPE / ECONNRESET: the server closed while we were still writing; that is an accepted answer.
    socket.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message; closed_by_server = true; });
    socket.on('connect', async () => {
      for (const piece of pieces) {
        if (socket.destroyed) break;
        if (!socket.write(piece)) await new Promise((r) => { socket.once('drain', r); socket.once('close', r); });
      }
      if (half_close && !socket.destroyed) socket.end();
      timer = setTimeout(finish, wait_ms);
    });
  });
}

function replies(result: Exchange): { id: unknown; result?: unknown; error?: { code: number; message: string; data: { code: string } } }[] {
  return result.lines.map((line) => JSON.parse(line));
}

async function stillServes(): Promise<void> {
  const status = await daemon.cli(['status', '-j']);
  assert.is(status.code, 0, `daemon no longer serves: ${status.stderr}\n${daemon.logs.slice(-2000)}`);
  assert.ok(daemon.running);
}

test.before(async () => {
  daemon = await startDaemon('ipc-abuse', { log_level: 'info' });
  sparseFile(daemon.file('v.img'), 8 * MiB);
  await daemon.ok(['attach', '-d', 'v.img', '--name', 'v']);
  rss_before_bytes = rssBytes(daemon.pid);
});

test.after(async () => {
  await disposeDaemon(daemon);
});

test('random bytes: every reply is an error, or the connection is closed', async () => {
  const random = seededRandom(testSeed('random bytes'));
  for (let round = 0; round < 20; round += 1) {
    const pieces: Buffer[] = [];
    for (let piece = 0; piece < 8; piece += 1) {
      const bytes = Buffer.alloc(1 + Math.floor(random() * 4096));
      for (let i = 0; i < bytes.length; i += 1) bytes[i] = random() < 0.02 ? 0x0a : Math.floor(random() * 256);
      pieces.push(bytes);
    }
    const result = await exchange(daemon.socket, pieces, 300);
    for (const reply of replies(result)) assert.ok(reply.error, `a reply to random bytes must be an error: ${JSON.stringify(reply)}`);
  }
  await stillServes();
});

test('a 100 MiB line: an E2BIG reply or a closed connection, memory bounded', async () => {
  const chunk = Buffer.alloc(MiB, 0x61);
  chunk.write('{"jsonrpc":"2.0","id":1,"method":"status","params":{"x":"');
  const result = await exchange(daemon.socket, Array(100).fill(chunk), 3_000);
  assert.ok(result.closed_by_server, 'the server closed the connection');
  // The server answers once and closes; a client still writing may meet the
  // close (EPIPE / ECONNRESET) before it reads the answer: either is fine.
  const answers = replies(result);
  assert.ok(answers.length <= 1);
  if (answers.length === 1) {
    assert.is(answers[0]?.error?.data.code, 'E2BIG');
    assert.match(answers[0]?.error?.message ?? '', /longer than 1048576 bytes/);
  }
  // A client whose whole over-long line was read (one byte over) always gets the answer.
  const polite = await exchange(daemon.socket, [Buffer.alloc(MiB + 1, 0x61)], 5_000, false, 1);
  assert.is(replies(polite)[0]?.error?.data.code, 'E2BIG');
  await stillServes();
  const growth = rssBytes(daemon.pid) - rss_before_bytes;
  assert.ok(growth < RSS_GROWTH_BYTES_MAX, `daemon RSS grew by ${growth} bytes`);
});

test('deeply nested JSON (inside the line limit): an error reply, nothing more', async () => {
  const depth = 400_000;
  const deep = `${'['.repeat(depth)}${']'.repeat(depth)}`;
  const cases = [
    `{"jsonrpc":"2.0","id":1,"method":"status","params":${deep}}\n`,
    `{"jsonrpc":"2.0","id":2,"method":"attach","params":{"path":${deep}}}\n`,
    `{"jsonrpc":"2.0","id":${deep},"method":"status"}\n`,
    `${deep}\n`,
    `{"a":${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}}\n`,
  ];
  for (const line of cases) {
    const result = await exchange(daemon.socket, [line], 10_000, false, 1);
    const answers = replies(result);
    assert.is(answers.length, 1, `one reply for ${line.slice(0, 40)}…`);
    assert.ok(answers[0]?.error, 'an error');
  }
  await stillServes();
});

test('wrong types for every field of every method: -32602 naming the field', async () => {
  const wrong_values: unknown[] = ['text', 12, -1, 1.5, true, null, [], {}, 2 ** 60];
  const lines: string[] = [];
  let id = 0;
  const expected = new Map<number, string>();
  for (const method of METHOD_NAMES) {
    const fields = (METHODS[method].params as Schema & { fields: Record<string, Schema> }).fields;
    for (const field of Object.keys(fields)) {
      for (const value of wrong_values) {
        const schema = fields[field] as Schema;
        // Skip values that are of the right type for this field.
        if (schema.kind === 'boolean' && typeof value === 'boolean') continue;
        if (schema.kind === 'string' && typeof value === 'string' && (!schema.pattern || schema.pattern.test(value))) continue;
        if (schema.kind === 'array' && Array.isArray(value) && value.length >= schema.min_items) continue;
        if (schema.kind === 'object' && typeof value === 'object' && value !== null && !Array.isArray(value)) continue;
        if (schema.kind === 'integer' && Number.isSafeInteger(value) && (value as number) >= schema.min && (value as number) <= schema.max) continue;
        id += 1;
        expected.set(id, `params.${field}`);
        // Every other field valid, so the error can only be about this one.
        const params = { ...VALID_PARAMS[method], [field]: value };
        lines.push(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
      }
    }
    id += 1;
    expected.set(id, 'params');
    lines.push(`${JSON.stringify({ jsonrpc: '2.0', id, method, params: 'not an object' })}\n`);
  }
  // Sent in batches so the per-connection in-flight cap is not what answers.
  const answers: ReturnType<typeof replies> = [];
  for (let start = 0; start < lines.length; start += 32) {
    answers.push(...replies(await exchange(daemon.socket, [lines.slice(start, start + 32).join('')], 400)));
  }
  assert.is(answers.length, lines.length);
  for (const answer of answers) {
    assert.is(answer.error?.code, -32602, JSON.stringify(answer));
    assert.is(answer.error?.data.code, 'EINVAL');
    assert.ok(answer.error?.message.startsWith(expected.get(answer.id as number) as string), `${answer.error?.message} names ${expected.get(answer.id as number)}`);
  }
  await stillServes();
});

test('unknown methods and malformed requests: the right JSON-RPC codes', async () => {
  const result = await exchange(daemon.socket, [
    '{"jsonrpc":"2.0","id":1,"method":"rm_rf"}\n',
    '{"jsonrpc":"2.0","id":2,"method":"__proto__"}\n',
    '{"jsonrpc":"2.0","id":3,"method":"constructor"}\n',
    '{"jsonrpc":"2.0","id":4,"method":"toString"}\n',
    '[{"jsonrpc":"2.0","id":5,"method":"status"}]\n',
    '{"jsonrpc":"1.0","id":6,"method":"status"}\n',
    'not json at all\n',
  ], 500);
  // Invalid requests are answered at once, unknown methods after dispatch: compare by id.
  const by_id = Object.fromEntries(replies(result).filter((reply) => reply.id !== null).map((reply) => [reply.id, reply.error?.code]));
  assert.equal(by_id, { 1: -32601, 2: -32601, 3: -32601, 4: -32601, 6: -32600 });
  const without_id = replies(result).filter((reply) => reply.id === null).map((reply) => reply.error?.code);
  assert.equal(without_id.sort(), [-32600, -32700]);
  await stillServes();
});

test('half-written requests: a stalled client blocks nobody; a half line then EOF is a parse error', async () => {
  const stalled = net.createConnection(daemon.socket);
  stalled.on('error', () => { /* destroyed below */ });
  await new Promise((resolve) => stalled.once('connect', resolve));
  stalled.write('{"jsonrpc":"2.0","id":1,"method":"sta');
  await stillServes();
  const half_closed = await exchange(daemon.socket, ['{"jsonrpc":"2.0","id":7,"meth'], 1_000, true);
  assert.equal(replies(half_closed).map((reply) => reply.error?.code), [-32700]);
  stalled.destroy();
  await stillServes();
});

test(`${CLIENTS_AT_ONCE} clients at once: each gets an answer or a closed connection; then a normal client is served`, async () => {
  const id = (await daemon.ok(['snapshot_create', '-d', 'v', '-f', daemon.dir, '-l', '16M'])).trim();
  // Half the clients long-poll, half ask for status: the long-polls must not block the others.
  const results = await Promise.all(Array.from({ length: CLIENTS_AT_ONCE }, (_, index) => exchange(daemon.socket, [
    index % 2 === 0
      ? `{"jsonrpc":"2.0","id":${index},"method":"snapshot_waitevent","params":{"id":"${id}","timeout_ms":1000}}\n`
      : `{"jsonrpc":"2.0","id":${index},"method":"status"}\n`,
  ], 3_000)));
  let served = 0;
  let refused = 0;
  for (const result of results) {
    const answers = replies(result);
    if (answers.length === 0) {
      assert.ok(result.closed_by_server, 'no answer means a closed connection');
      continue;
    }
    assert.is(answers.length, 1);
    const answer = answers[0];
    if (answer?.error) {
      assert.is(answer.error.data.code, 'EBUSY', JSON.stringify(answer));
      refused += 1;
    } else {
      served += 1;
    }
  }
  console.log(`  ${served} served, ${refused} refused (connection cap), ${CLIENTS_AT_ONCE - served - refused} closed`);
  assert.ok(served >= 200, `at least 200 served, got ${served}`);
  await daemon.ok(['snapshot_destroy', '-i', id]);
  await stillServes();
  const status = JSON.parse(await daemon.ok(['status', '-j']));
  assert.is(status.daemon.ipc_connections, 1, 'every abusive connection is gone');
});

test.run();

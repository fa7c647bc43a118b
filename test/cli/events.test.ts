// Goal: snapshot events reach the CLI: a small diff-storage limit overflowed
// by writes through the engine gives `snapshot_waitevent` results up to
// event=corrupted with error_code=28 (ENOSPC), `snapshot_info` and `status`
// show the error, `snapshot_watcher` streams the events as they happen and
// ends at corruption (as upstream's) or, with --all-events, with the
// snapshot, and not one volume write fails. By default a client sees only
// upstream's event codes (no_space, corrupted); --all-events adds
// low_space, grown and destroyed.
// Method: the daemon runs in this process (Daemon.start with the real
// engine, captured through its startEngine hook) so the test can write to
// the volume through the engine's I/O path (IoClient on an IoQueue, what a
// frontend does); every `ublksnap` command is a separate process, run
// asynchronously so this process keeps serving it.

import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import pino from 'pino';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { EngineControl } from '../../src/engine/api';
import { Engine } from '../../src/engine/engine';
import { IoClient } from '../../src/frontends/in-process/io-client';
import { resolveConfig } from '../../src/daemon/config';
import { Daemon } from '../../src/daemon/daemon';
import {
  CLI_PATH, SMALL_PARAMS, hardTimeout, keyValues, removeScratchDir, runNode, scratchDir, sparseFile, type RunResult,
} from '../lib/daemon';
import { randomBytes, seededRandom } from '../lib/engine-fixture';

const MiB = 1 << 20;
const ENOSPC = 28;
/** Writes of this size, each a first touch of its 64 KiB chunk. */
const WRITE_BYTES = 64 * 1024;
const VOLUME_BYTES = 16 * MiB;
let dir: string;
let socket: string;
let daemon: Daemon;
let engine: EngineControl;
let io: IoClient;

hardTimeout(180_000, 'cli/events');

function cli(args: string[], onSpawn?: (child: ChildProcess) => void): Promise<RunResult> {
  return runNode(CLI_PATH, ['--socket', socket, ...args], { cwd: dir, ...(onSpawn ? { onSpawn } : {}) });
}

async function ok(args: string[]): Promise<string> {
  const result = await cli(args);
  if (result.code !== 0) throw new Error(`ublksnap ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

/** Writes every chunk of the volume once (more than the limit can hold) and checks each write succeeded. */
async function overflowWithWrites(seed: number): Promise<Buffer> {
  const handle = engine.resolveExport('v').handle;
  const random = seededRandom(seed);
  const written = randomBytes(random, VOLUME_BYTES);
  for (let offset = 0; offset < VOLUME_BYTES; offset += WRITE_BYTES) {
    // A failed volume write rejects here and fails the test: overflow must never reach the volume.
    await io.write(handle, offset, written.subarray(offset, offset + WRITE_BYTES));
  }
  assert.equal(await io.read(handle, 0, VOLUME_BYTES), written, 'the volume holds exactly what was written');
  return written;
}

function daemon_file(name: string): string {
  return path.join(dir, name);
}

test.before(async () => {
  dir = scratchDir('cli-events');
  socket = path.join(dir, 'ctl.sock');
  sparseFile(path.join(dir, 'v.img'), VOLUME_BYTES);
  sparseFile(path.join(dir, 'w.img'), VOLUME_BYTES);
  const config = resolveConfig({ socket, state_dir: path.join(dir, 'state'), params: SMALL_PARAMS, help: false }, {});
  config.volumes = [{ path: path.join(dir, 'v.img'), name: 'v' }];
  daemon = await Daemon.start({
    config,
    logger: pino({ level: 'silent' }),
    startEngine: async (options) => {
      engine = await Engine.start(options);
      return engine;
    },
  });
  io = await IoClient.open(engine, 16, MiB);
});

test.after(async () => {
  await io?.close();
  await daemon?.stop('test over');
  removeScratchDir(dir);
});

test('overflow: waitevent delivers no_space and corrupted (error_code=28); info and status show it', async () => {
  const id = (await ok(['snapshot_create', '-d', 'v', '-f', path.join(dir, 'diff.bin'), '-l', '2M'])).trim();
  await ok(['snapshot_take', '-i', id]);
  // A waiter already in place when the first event comes.
  const first_wait = cli(['snapshot_waitevent', '-i', id, '-t', '20000']);
  await new Promise((resolve) => setTimeout(resolve, 300));
  await overflowWithWrites(1);

  const events: Record<string, string>[] = [keyValues((await first_wait).stdout)];
  for (let round = 0; round < 20 && events.at(-1)?.event !== 'corrupted'; round += 1) {
    events.push(keyValues(await ok(['snapshot_waitevent', '-i', id, '-t', '5000'])));
  }
  const codes = events.map((event) => event.event);
  console.log(`  events: ${codes.join(', ')}`);
  // Upstream's codes only: a script for upstream never meets low_space or grown.
  for (const code of codes) assert.ok(code === 'no_space' || code === 'corrupted', `unexpected event ${code} without --all-events`);
  for (const event of events) {
    assert.is(event.result, 'ok');
    assert.match(event.time as string, /^\d{13}$/);
  }
  assert.ok(codes.includes('no_space'), 'no_space delivered');
  const corrupted = events.at(-1) as Record<string, string>;
  assert.is(corrupted.event, 'corrupted');
  // Upstream's keys only (volume= and error_code= come with --all-events or -j; snapshot_info has the errno).
  assert.equal(Object.keys(corrupted), ['result', 'time', 'event']);
  const no_space = events.find((event) => event.event === 'no_space') as Record<string, string>;
  assert.equal(Object.keys(no_space), ['result', 'time', 'event', 'requested_nr_sect']);
  assert.match(no_space.requested_nr_sect as string, /^\d+$/);

  const info = keyValues(await ok(['snapshot_info', '-d', 'v']));
  assert.is(info.error_code, String(ENOSPC));
  assert.is(info.snapshot_id, id);
  assert.is(await ok(['snapshot_info', '-d', 'v', '-f', 'error_code']), `${ENOSPC}\n`);
  assert.match(await ok(['status']), new RegExp(`^snapshot=${id} state=corrupted error_code=${ENOSPC} `, 'm'));
  // Nothing more is pending: the next wait times out.
  assert.equal(keyValues(await ok(['snapshot_waitevent', '-i', id, '-t', '100'])), { result: 'timeout' });
  // The image is broken: reads fail (EIO), the volume does not.
  const image = engine.resolveExport(`v@${id}`).handle;
  await io.read(image, 0, WRITE_BYTES).then(
    () => assert.unreachable('an image read of a corrupted snapshot must fail'),
    (error: { code?: string }) => assert.is(error.code, 'EIO'),
  );
  await ok(['snapshot_destroy', '-i', id]);
});

test('--all-events: the take\'s low_space and grown come too; without it the same wait sees none', async () => {
  const id = (await ok(['snapshot_create', '-d', 'v', '-f', dir, '-l', '2M'])).trim();
  await ok(['snapshot_take', '-i', id]);
  // The storage starts empty and grows at take: low_space, then grown.
  const all = keyValues(await ok(['snapshot_waitevent', '-i', id, '-t', '5000', '--all-events']));
  assert.is(all.result, 'ok');
  assert.ok(all.event === 'low_space' || all.event === 'grown', `first event with --all-events: ${all.event}`);
  const id2 = (await ok(['snapshot_create', '-d', daemon_file('w.img'), '-f', dir, '-l', '2M'])).trim();
  await ok(['snapshot_take', '-i', id2]);
  assert.is(await ok(['snapshot_waitevent', '-i', id2, '-t', '1500']), 'result=timeout\n', 'the same take, waited for as upstream does');
  await ok(['snapshot_destroy', '-i', id]);
  await ok(['snapshot_destroy', '-i', id2]);
  await ok(['detach', '-d', daemon_file('w.img')]);
});

test('snapshot_watcher streams the events as they happen and ends at corrupted; --all-events ends with the snapshot', async () => {
  const id = (await ok(['snapshot_create', '-d', 'v', '-f', dir, '-l', '2M'])).trim();
  await ok(['snapshot_take', '-i', id]);
  const watcher = cli(['snapshot_watcher', '-i', id]);
  await new Promise((resolve) => setTimeout(resolve, 500));
  await overflowWithWrites(2);
  // It ends by itself: the snapshot is still there.
  const text = await watcher;
  assert.is(text.code, 0, text.stderr);
  const text_lines = text.stdout.trim().split('\n');
  console.log(`  watcher: ${text_lines.join(' | ')}`);
  assert.match(text_lines.at(-1) as string, new RegExp(`^time=\\d+ event=corrupted volume=v error_code=${ENOSPC}$`));
  for (const line of text_lines) assert.match(line, /^time=\d+ event=(no_space|corrupted)( \w+=\S+)*$/);
  assert.match(await ok(['snapshot_collect']), new RegExp(id), 'the watcher ended before the snapshot did');
  // --all-events -j: every event, one JSON object per line, to the end of the snapshot.
  const watcher_json = runNode(CLI_PATH, ['--socket', socket, 'snapshot_watcher', '-i', id, '-j', '--all-events'], { cwd: dir });
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  await ok(['snapshot_destroy', '-i', id]);
  const json = await watcher_json;
  assert.is(json.code, 0, json.stderr);
  const json_events = json.stdout.trim().split('\n').map((line) => JSON.parse(line));
  assert.is(json_events.at(-1).event, 'destroyed');
});

test('a client that leaves mid-wait costs nothing and takes no event with it', async () => {
  const id = (await ok(['snapshot_create', '-d', 'v', '-f', dir, '-l', '2M'])).trim();
  await ok(['snapshot_take', '-i', id]);
  // The storage starts empty and grows at take (low_space, grown): take those first.
  while (keyValues(await ok(['snapshot_waitevent', '-i', id, '-t', '300'])).result === 'ok');
  // Ten waiters that are killed while they wait.
  const pids: number[] = [];
  const children = Array.from({ length: 10 }, () => cli(['snapshot_waitevent', '-i', id, '-t', '60000'], (child) => pids.push(child.pid as number)));
  // Ten node processes take a while to start on two cores: poll, bounded.
  let before = JSON.parse(await ok(['status', '-j'])).daemon;
  for (let round = 0; round < 100 && before.ipc_requests_in_flight < 11; round += 1) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    before = JSON.parse(await ok(['status', '-j'])).daemon;
  }
  assert.is(before.ipc_requests_in_flight, 11, 'ten waits and this status');
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  await Promise.all(children);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const after = JSON.parse(await ok(['status', '-j'])).daemon;
  assert.is(after.ipc_requests_in_flight, 1, 'only this status: every wait is gone');
  assert.is(after.ipc_connections, 1);
  // The events of the overflow are all still there for the next client.
  await overflowWithWrites(3);
  const codes: string[] = [];
  for (let round = 0; round < 20 && codes.at(-1) !== 'corrupted'; round += 1) {
    codes.push(keyValues(await ok(['snapshot_waitevent', '-i', id, '-t', '5000'])).event as string);
  }
  assert.ok(codes.includes('no_space') && codes.at(-1) === 'corrupted', codes.join(','));
  await ok(['snapshot_destroy', '-i', id]);
});

test.run();

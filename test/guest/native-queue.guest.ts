// Goal: the native ublk layer serves a real device correctly inside a ublk
// guest: without the module, ublkControlAvailable() and ublkAddDevice()
// give the clear modprobe message; with it, a device served by UblkQueue
// from a worker thread passes fio's crc32c verify, reads back what dd
// wrote (also in the backing file), reads zeros after blkdiscard and
// blkdiscard -z, and stops, closes and deletes cleanly.
// Method: a standalone program (not *.test.ts: the host runner must not pick
// it up), run in the guest as root through run-in-guest.sh: modprobe
// ublk_drv, GET_FEATURES, ADD_DEV (1 queue, depth 32, 256 KiB slots) over a
// 64 MiB file in /dev/shm, a worker thread serving it with fs.readSync /
// writeSync / fdatasync / fallocate, START_DEV from the main thread, the
// checks with fio, dd, blkdiscard and cmp, then STOP_DEV, close, DEL_DEV.
// Before that, a START_DEV with no server must time out (ETIMEDOUT naming
// the command) and leave a device DEL_DEV can still remove.
// Exit 0 on success with a summary. `--serve` only starts the device,
// prints "SERVING /dev/ublkbN" and serves until SIGTERM (for benchmarks).
//
// Usage (host): run-in-guest.sh 'timeout 600 node dist/test/guest/native-queue.guest.js [--serve]'
// Knobs: BACKING_MB (64), QUEUE_DEPTH (32), BACKING_FILE (/dev/shm/ublk-native.img),
// UBLK_NATIVE_THREAD=1 (the queue's io_uring on a native thread: the
// variant native-queue-thread.guest.ts runs).

import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, fstatSync, ftruncateSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import * as ublk from '../../src/native/ublk';
import { serveQueue, type ServeData } from './ublk-serve-worker';

const MIB = 1024 * 1024;
const SECTOR_SHIFT = 9;
const BACKING_BYTES = Number(process.env.BACKING_MB ?? 64) * MIB;
const QUEUE_DEPTH = Number(process.env.QUEUE_DEPTH ?? 32);
const SLOT_BYTES = 256 * 1024;
const BACKING_FILE = process.env.BACKING_FILE ?? '/dev/shm/ublk-native.img';
const NATIVE_THREAD = process.env.UBLK_NATIVE_THREAD === '1';
const CONTROL_TIMEOUT_MS = 30_000;
/** START_DEV reads the partition table through our queue: slow under TCG. */
const START_TIMEOUT_MS = 60_000;
const TOOL_TIMEOUT_MS = 300_000;
/** START_DEV without a server never finishes: this short bound must reject it. */
const SHORT_TIMEOUT_MS = 300;
const DEVICE_WAIT_MS = 10_000;
const POLL_MS = 20;
/** The region the dd/blkdiscard checks use: 8 MiB from 3 MiB on. */
const CHECK_OFFSET_BYTES = 3 * MIB;
const CHECK_LENGTH_BYTES = 8 * MIB;

const FEATURE_NAMES = [
  'SUPPORT_ZERO_COPY', 'URING_CMD_COMP_IN_TASK', 'NEED_GET_DATA', 'USER_RECOVERY', 'USER_RECOVERY_REISSUE',
  'UNPRIVILEGED_DEV', 'CMD_IOCTL_ENCODE', 'USER_COPY', 'ZONED', 'USER_RECOVERY_FAIL_IO', 'UPDATE_SIZE',
  'AUTO_BUF_REG', 'QUIESCE', 'PER_IO_DAEMON', 'BUF_REG_OFF_DAEMON', 'BATCH_IO', 'INTEGRITY', 'SAFE_STOP_DEV',
  'NO_AUTO_PART_SCAN', 'SHMEM_ZC', 'IO_DESC_SIZE',
];

function log(message: string): void {
  process.stdout.write(`[${(process.uptime()).toFixed(1)}s] ${message}\n`);
}

function fail(message: string): never {
  process.stderr.write(`FAIL: ${message}\n`);
  process.exit(1);
}

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { timeout: TOOL_TIMEOUT_MS, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function featureNames(features: bigint): string {
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit += 1) {
    if ((features >> BigInt(bit)) & 1n) names.push(FEATURE_NAMES[bit] ?? `bit${bit}`);
  }
  return names.join(' ');
}

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitForPath(file: string): Promise<void> {
  const deadline = Date.now() + DEVICE_WAIT_MS;
  while (!existsSync(file)) {
    if (Date.now() > deadline) fail(`${file} did not appear within ${DEVICE_WAIT_MS} ms`);
    await sleep(POLL_MS);
  }
}

/** Before modprobe: the layer must explain itself, not crash. */
async function checkUnavailable(): Promise<void> {
  if (existsSync('/dev/ublk-control')) {
    log('ublk_drv already loaded: skipping the unavailable check');
    return;
  }
  const availability = ublk.ublkControlAvailable();
  if (availability.available || availability.reason !== ublk.UBLK_UNAVAILABLE_MESSAGE) {
    fail(`ublkControlAvailable() before modprobe: ${JSON.stringify(availability)}`);
  }
  const spec = { queue_count: 1, queue_depth: QUEUE_DEPTH, max_io_bytes: SLOT_BYTES, flags: 0n };
  const error = await ublk.ublkAddDevice(spec, CONTROL_TIMEOUT_MS).then(() => undefined, (e: unknown) => e);
  const native = error as { code?: string; message?: string };
  if (native?.code !== 'ENOENT' || native.message !== ublk.UBLK_UNAVAILABLE_MESSAGE) {
    fail(`ublkAddDevice before modprobe: ${String(error)}`);
  }
  log(`before modprobe: unavailable, "${availability.reason}"`);
}

function params(): ublk.UblkParams {
  const capacity_sectors = BACKING_BYTES >> SECTOR_SHIFT;
  return {
    capacity_sectors, logical_block_shift: 9, physical_block_shift: 12, io_min_shift: 9, io_opt_shift: 12,
    max_sectors: SLOT_BYTES >> SECTOR_SHIFT, read_only: false, volatile_cache: true, fua: true,
    discard: {
      granularity_bytes: 4096, alignment_bytes: 0, max_discard_sectors: capacity_sectors,
      max_write_zeroes_sectors: capacity_sectors, max_discard_segments: 1,
    },
  };
}

/** START_DEV with no queue serving waits for FETCHes forever: the timeout must reject, and the device still delete. */
async function checkTimeout(): Promise<void> {
  const spec = { queue_count: 1, queue_depth: QUEUE_DEPTH, max_io_bytes: SLOT_BYTES, flags: 0n };
  const info = await ublk.ublkAddDevice(spec, CONTROL_TIMEOUT_MS);
  await ublk.ublkSetParams(info.dev_id, params(), CONTROL_TIMEOUT_MS);
  const started = Date.now();
  const error = await ublk.ublkStartDevice(info.dev_id, SHORT_TIMEOUT_MS).then(() => undefined, (e: unknown) => e);
  const native = error as { code?: string; message?: string };
  if (native?.code !== 'ETIMEDOUT' || !native.message?.includes('START_DEV')) {
    fail(`START_DEV without a server: ${String(error)}`);
  }
  const waited_ms = Date.now() - started;
  await ublk.ublkDeleteDevice(info.dev_id, CONTROL_TIMEOUT_MS);
  log(`timeout: START_DEV without a server rejected after ${waited_ms} ms: "${native.message}"; DEL_DEV then ok`);
}

interface Served {
  info: ublk.UblkDeviceInfo;
  worker: Worker;
  block: string;
  stats: Promise<Record<string, number>>;
}

/** ADD_DEV, SET_PARAMS, a serving worker, START_DEV. */
async function startDevice(): Promise<Served> {
  const spec = { queue_count: 1, queue_depth: QUEUE_DEPTH, max_io_bytes: SLOT_BYTES, flags: 0n };
  const info = await ublk.ublkAddDevice(spec, CONTROL_TIMEOUT_MS);
  log(`ADD_DEV: ${JSON.stringify(info, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}`);
  await ublk.ublkSetParams(info.dev_id, params(), CONTROL_TIMEOUT_MS);
  const data: ServeData = {
    dev_id: info.dev_id, queue_id: 0, queue_depth: info.queue_depth, slot_bytes: SLOT_BYTES,
    buffer: new SharedArrayBuffer(info.queue_depth * SLOT_BYTES), backing_file: BACKING_FILE, flags: info.flags,
    native_thread: NATIVE_THREAD,
  };
  const worker = new Worker(__filename, { workerData: data });
  let resolveStats: (stats: Record<string, number>) => void = () => undefined;
  const stats = new Promise<Record<string, number>>((resolve) => { resolveStats = resolve; });
  await new Promise<void>((resolve, reject) => {
    worker.on('message', (message: { kind: string; stats?: Record<string, number>; error?: string }) => {
      if (message.kind === 'serving') resolve();
      if (message.kind === 'closed') resolveStats(message.stats ?? {});
      if (message.kind === 'error') reject(new Error(message.error));
    });
    worker.once('error', reject);
  });
  await ublk.ublkStartDevice(info.dev_id, START_TIMEOUT_MS);
  const block = `/dev/ublkb${info.dev_id}`;
  await waitForPath(block);
  const live = await ublk.ublkGetDeviceInfo(info.dev_id, CONTROL_TIMEOUT_MS);
  if (live.state !== ublk.UBLK_S_DEV_LIVE) fail(`state after START_DEV is ${live.state}`);
  log(`START_DEV: ${block} live, server_pid ${live.server_pid}`);
  return { info, worker, block, stats };
}

async function stopDevice(served: Served): Promise<Record<string, number>> {
  await ublk.ublkStopDevice(served.info.dev_id, CONTROL_TIMEOUT_MS);
  served.worker.postMessage({ kind: 'close' });
  const stats = await served.stats;
  await new Promise((resolve) => served.worker.once('exit', resolve));
  await ublk.ublkDeleteDevice(served.info.dev_id, CONTROL_TIMEOUT_MS);
  log(`STOP_DEV, close, DEL_DEV done; queue stats ${JSON.stringify(stats)}`);
  return stats;
}

function fioVerify(block: string): string {
  const output = run('fio', [
    '--name=v', `--filename=${block}`, '--rw=randwrite', '--bs=8k', '--iodepth=32', '--ioengine=io_uring',
    '--direct=1', '--size=32M', '--verify=crc32c', '--do_verify=1', '--verify_state_save=0', '--output-format=normal',
  ]);
  const errors = /err=\s*(\d+)/.exec(output);
  if (!errors || errors[1] !== '0') fail(`fio verify: ${output}`);
  return output.split('\n').filter((line) => /write: IOPS|read: IOPS/.test(line)).map((l) => l.trim()).join('; ');
}

function cmpZero(file: string, offset: number, length: number): boolean {
  try {
    run('cmp', ['-n', String(length), '-i', `${offset}:0`, file, '/dev/zero']);
    return true;
  } catch {
    return false;
  }
}

/** dd a pattern, read it back, find it in the backing file; blkdiscard and -z give zeros. */
function dataChecks(block: string): void {
  const pattern = '/dev/shm/ublk-pattern';
  const readback = '/dev/shm/ublk-readback';
  run('dd', ['if=/dev/urandom', `of=${pattern}`, 'bs=1M', `count=${CHECK_LENGTH_BYTES / MIB}`, 'status=none']);
  const seek = String(CHECK_OFFSET_BYTES / MIB);
  run('dd', [`if=${pattern}`, `of=${block}`, 'bs=1M', `seek=${seek}`, 'oflag=direct', 'conv=fsync', 'status=none']);
  run('dd', [`if=${block}`, `of=${readback}`, 'bs=1M', `skip=${seek}`, `count=${CHECK_LENGTH_BYTES / MIB}`,
    'iflag=direct', 'status=none']);
  run('cmp', [pattern, readback]);
  const backing = readFileSync(BACKING_FILE).subarray(CHECK_OFFSET_BYTES, CHECK_OFFSET_BYTES + CHECK_LENGTH_BYTES);
  if (!backing.equals(readFileSync(pattern))) fail('backing file differs from what dd wrote');
  log('dd write + O_DIRECT readback: IDENTICAL (device and backing file)');
  const half = CHECK_LENGTH_BYTES / 2;
  run('blkdiscard', ['-o', String(CHECK_OFFSET_BYTES), '-l', String(half), block]);
  run('blkdiscard', ['-z', '-o', String(CHECK_OFFSET_BYTES + half), '-l', String(half), block]);
  if (!cmpZero(block, CHECK_OFFSET_BYTES, CHECK_LENGTH_BYTES)) fail('device not zero after blkdiscard');
  if (!cmpZero(BACKING_FILE, CHECK_OFFSET_BYTES, CHECK_LENGTH_BYTES)) fail('backing file not zero after blkdiscard');
  log('blkdiscard + blkdiscard -z: zeros on the device and in the backing file');
}

/** The backing file at its size; an existing one (pre-allocated by a benchmark) is kept. */
function makeBacking(): void {
  const fd = openSync(BACKING_FILE, 'a');
  if (fstatSync(fd).size !== BACKING_BYTES) ftruncateSync(fd, BACKING_BYTES);
  closeSync(fd);
}

async function serveUntilSignal(): Promise<void> {
  const served = await startDevice();
  writeFileSync('/dev/shm/ublk-native.serving', served.block);
  log(`SERVING ${served.block}`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await stopDevice(served);
}

async function main(): Promise<void> {
  log(`kernel ${run('uname', ['-r']).trim()}, node ${process.version}`);
  await checkUnavailable();
  run('modprobe', ['ublk_drv']);
  await waitForPath('/dev/ublk-control');
  if (!ublk.ublkControlAvailable().available) fail('ublkControlAvailable() false after modprobe');
  const features = await ublk.ublkGetFeatures(CONTROL_TIMEOUT_MS);
  log(`GET_FEATURES: 0x${features.toString(16)}: ${featureNames(features)}`);
  makeBacking();
  if (process.argv.includes('--serve')) {
    await serveUntilSignal();
    return;
  }
  await checkTimeout();
  const served = await startDevice();
  const fio = fioVerify(served.block);
  log(`fio randwrite 8k QD32 crc32c verify: OK (${fio})`);
  dataChecks(served.block);
  const stats = await stopDevice(served);
  if (stats.in_flight !== 0 || stats.aborted !== QUEUE_DEPTH) fail(`queue stats after stop: ${JSON.stringify(stats)}`);
  if (stats.misuse_checks !== 3) fail(`double commit / bad tag / bad result not all TypeErrors: ${stats.misuse_checks}`);
  const direct_misuse_expected = 3;
  if (stats.direct_misuse_checks !== direct_misuse_expected) {
    fail(`serveDirect: ${stats.direct_misuse_checks} of ${direct_misuse_expected} bad volumes refused with a TypeError`);
  }
  // The queue ran where it was asked to: a native thread wakes in io_uring_enter, an event loop never does.
  if (stats.native_thread !== (NATIVE_THREAD ? 1 : 0) || (stats.wakeups! > 0) !== NATIVE_THREAD) {
    fail(`hosting: asked native_thread=${NATIVE_THREAD}, stats ${JSON.stringify(stats)}`);
  }
  log(`PASS (${NATIVE_THREAD ? 'native queue thread' : 'event loop'}): ${stats.delivered} requests served, ${stats.batches} batches (mean ${(stats.delivered / stats.batches).toFixed(1)}), all ${QUEUE_DEPTH} tags aborted at stop, double commit refused`);
}

if (isMainThread) {
  main().then(() => process.exit(0), (error: unknown) => fail(error instanceof Error ? error.stack ?? error.message : String(error)));
} else {
  serveQueue(workerData as ServeData, parentPort!);
}

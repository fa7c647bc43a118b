// Goal: a ublk volume's plain reads and writes, served by the native queue
// without JavaScript (native/src/direct-volume.h), keep every promise the
// actor's path keeps: the bytes reach the backing file and read back, the
// CBT marks them, a taken snapshot still gets copy-before-write (its image
// keeps the pre-take bytes, because the armed diff area sends writes to the
// actor), and a take under a stream of direct writes is not held up — a
// direct write that empties a frozen gate must get JavaScript to wake the
// take (V8's Atomics.wait is not the kernel futex), or a take right after
// the last write sleeps out its drain timeout (GATE_DRAIN_TIMEOUT_MS, 10 s).
// The stream is of 256 KiB writes (the queue's largest): the actor thread
// is then inside a direct pwrite most of the time, so takes freeze the gate
// with a direct write in it. What this step cannot see: a missing wake-up
// under a stream, because the next write, parked by the actor, notifies on
// its way out of the gate (seen passing with the notification removed).
// Method: a real daemon with UBLKSNAP_UBLK_STATS=1 (the queue logs how many
// requests it served directly), dd and fio on /dev/ublkbN, takes timed over
// the IPC socket (a CLI process costs seconds of Node start-up here).
// Each check prints one ok/FAIL line.
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/ublk-direct.guest.js

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { IpcClient } from '../../src/ipc/client';
import { disposeDaemon, keyValues, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';
import {
  expect, GUEST_CLI_TIMEOUT_MS, GUEST_DAEMON_START_TIMEOUT_MS, log, sh, stepRunner,
} from '../lib/guest-program';

const MIB = 1024 * 1024;
const VOLUME_BYTES = 64 * MIB;
const BLOCK_BYTES = 64 * 1024;
const CLI_TIMEOUT_MS = GUEST_CLI_TIMEOUT_MS;
/** Takes under the write stream. */
const TAKES = 8;
/**
 * A take slower than this waited for a wake-up that never came: the drain
 * timeout is 10 s, and a take here normally ends in well under a second.
 */
const TAKE_SLOW_MS = 6_000;

let daemon: TestDaemon | undefined;
let ipc: IpcClient | undefined;

const step = stepRunner(() => daemon, async () => {
  ipc?.close();
  await disposeDaemon(daemon);
});

async function cli(args: string[]): Promise<string> {
  return daemon!.ok(args, { timeout_ms: CLI_TIMEOUT_MS });
}

function writeBlock(device: string, offset: number, file: string): void {
  sh('dd', [`if=${file}`, `of=${device}`, `bs=${BLOCK_BYTES}`, 'count=1', `seek=${offset / BLOCK_BYTES}`, 'oflag=direct', 'conv=notrunc', 'status=none']);
}

function readBlock(device: string, offset: number): Buffer {
  const out = daemon!.file('read.bin');
  sh('dd', [`if=${device}`, `of=${out}`, `bs=${BLOCK_BYTES}`, 'count=1', `skip=${offset / BLOCK_BYTES}`, 'iflag=direct', 'status=none']);
  return readFileSync(out);
}

/** The queue's direct counts so far, summed over its stats lines. */
function directServed(): number {
  let total = 0;
  for (const match of daemon!.logs.matchAll(/"direct":(\d+)/g)) total += Number(match[1]);
  return total;
}

async function waitForStats(before: number): Promise<number> {
  // The stats line comes once a second while requests arrive.
  const deadline = Date.now() + 10_000;
  while (directServed() === before && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
  return directServed();
}

async function main(): Promise<void> {
  sh('modprobe', ['ublk_drv']);
  daemon = await startDaemon('ublk-direct', {
    log_level: 'info', start_timeout_ms: GUEST_DAEMON_START_TIMEOUT_MS, env: { UBLKSNAP_UBLK_STATS: '1' },
  });
  ipc = await IpcClient.connect(daemon.socket);
  const volume = sparseFile(daemon.file('vol.img'), VOLUME_BYTES);
  const data = daemon.file('block.bin');
  writeFileSync(data, randomBytes(BLOCK_BYTES));
  let device = '';

  await step('no snapshot: dd writes and reads are served directly, reach the file and read back', async () => {
    device = keyValues(await cli(['attach', '-d', volume, '--name', 'vol', '--ublk'])).ublk ?? '';
    expect(/^\/dev\/ublkb\d+$/.test(device) && existsSync(device), `ublk=${device}`);
    const before = directServed();
    writeBlock(device, 2 * MIB, data);
    expect(readBlock(device, 2 * MIB).equals(readFileSync(data)), 'the block reads back through the device');
    const file_bytes = readFileSync(volume).subarray(2 * MIB, 2 * MIB + BLOCK_BYTES);
    expect(file_bytes.equals(readFileSync(data)), 'the block is in the backing file');
    const after = await waitForStats(before);
    expect(after > before, `the queue logged no directly served request (${before} → ${after})`);
  });

  await step('direct writes are in the CBT: the next take reports them', async () => {
    const { id: first } = await ipc!.call('snapshot_create', { devices: ['vol'], storage: daemon!.dir, limit_bytes: 16 * MIB }, CLI_TIMEOUT_MS);
    await ipc!.call('snapshot_take', { id: first }, CLI_TIMEOUT_MS);
    await ipc!.call('snapshot_destroy', { id: first }, CLI_TIMEOUT_MS);
    writeBlock(device, 5 * MIB, data);
    const { id: second } = await ipc!.call('snapshot_create', { devices: ['vol'], storage: daemon!.dir, limit_bytes: 16 * MIB }, CLI_TIMEOUT_MS);
    await ipc!.call('snapshot_take', { id: second }, CLI_TIMEOUT_MS);
    await ipc!.call('snapshot_destroy', { id: second }, CLI_TIMEOUT_MS);
    await cli(['readcbtmap', '-d', 'vol', '-f', daemon!.file('map.cbt')]);
    const map = readFileSync(daemon!.file('map.cbt'));
    const block_bytes = Number(keyValues(await cli(['cbtinfo', '-d', 'vol'])).block_size);
    expect(map[5 * MIB / block_bytes] === 1, `the block written between the takes is marked ${map[5 * MIB / block_bytes]}, not 1`);
    expect(map[8 * MIB / block_bytes] === 0, 'an unwritten block is not marked');
  });

  await step('a taken snapshot: writes go through copy-before-write, the image keeps the old bytes', async () => {
    const { id } = await ipc!.call('snapshot_create', { devices: ['vol'], storage: daemon!.dir, limit_bytes: 16 * MIB, ublk: true }, CLI_TIMEOUT_MS);
    await ipc!.call('snapshot_take', { id }, CLI_TIMEOUT_MS);
    const image = keyValues(await cli(['snapshot_info', '-d', 'vol'])).image ?? '';
    expect(/^\/dev\/ublkb\d+$/.test(image), `image=${image}`);
    const fresh = daemon!.file('fresh.bin');
    writeFileSync(fresh, randomBytes(BLOCK_BYTES));
    writeBlock(device, 2 * MIB, fresh);
    expect(readBlock(device, 2 * MIB).equals(readFileSync(fresh)), 'the volume has the new bytes');
    expect(readBlock(image, 2 * MIB).equals(readFileSync(data)), 'the image still has the pre-take bytes');
    await ipc!.call('snapshot_destroy', { id }, CLI_TIMEOUT_MS);
  });

  await step(`${TAKES} takes under a stream of direct writes: none waits for a wake-up that never comes`, async () => {
    const fio = spawn('fio', ['--name=stream', `--filename=${device}`, '--rw=randwrite', '--bs=256k', '--ioengine=io_uring', '--direct=1',
      '--iodepth=32', '--time_based', '--runtime=600', `--size=${VOLUME_BYTES}`], { stdio: 'ignore' });
    try {
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const durations: number[] = [];
      for (let take = 0; take < TAKES; take += 1) {
        const { id } = await ipc!.call('snapshot_create', { devices: ['vol'], storage: daemon!.dir, limit_bytes: 16 * MIB }, CLI_TIMEOUT_MS);
        const started = Date.now();
        await ipc!.call('snapshot_take', { id }, CLI_TIMEOUT_MS);
        durations.push(Date.now() - started);
        await ipc!.call('snapshot_destroy', { id }, CLI_TIMEOUT_MS);
        // Writes go direct again once the area is gone.
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      log(`take durations (ms): ${durations.join(' ')}`);
      expect(fio.exitCode === null, `fio ended early (status ${fio.exitCode})`);
      const slow = durations.filter((ms) => ms > TAKE_SLOW_MS);
      expect(slow.length === 0, `takes of ${slow.join(', ')} ms: a drained gate was not announced`);
    } finally {
      fio.kill('SIGTERM');
    }
  });

  await step('detach: the device goes, the volume file keeps the last bytes', async () => {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await cli(['detach', '-d', 'vol']);
    expect(!existsSync(device), `${device} is still there after detach`);
  });

  ipc?.close();
  await disposeDaemon(daemon);
  log('ublk-direct: all ok');
}

main().catch(async (error: unknown) => {
  log(`FAIL - unexpected: ${(error as Error).stack ?? String(error)}`);
  ipc?.close();
  await disposeDaemon(daemon);
  process.exit(1);
});

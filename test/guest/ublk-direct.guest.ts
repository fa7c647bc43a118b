// Goal: a ublk volume's plain reads and writes, served by the native queue
// without JavaScript (native/src/direct-volume.h), keep every promise the
// actor's path keeps: the bytes reach the backing file and read back, the
// CBT marks them, a taken snapshot still gets copy-before-write (its image
// keeps the pre-take bytes, because the armed diff area sends writes to the
// actor), and a take under a stream of direct writes is not held up. A
// direct write that empties a frozen gate gets JavaScript to wake the take
// (V8's Atomics.wait is not the kernel futex), and the take's wait looks
// again every few milliseconds besides (waitForZero, unit-tested in
// test/shared/volume-control.test.ts with a writer that never notifies).
// The stream is of 256 KiB writes (the queue's largest): the actor thread
// is then inside a direct pwrite most of the time, so takes freeze the gate
// with a direct write in it.
// A last step uses a device-mapper volume whose second part fails every
// I/O: a direct transfer that fails must reach JavaScript, which redoes it
// and answers with its error (never a hang, never a success), and the
// queue goes on serving.
// Method: a real daemon with UBLKSNAP_UBLK_STATS=1 (the queue logs how many
// requests it served directly), dd and fio on /dev/ublkbN, takes timed over
// the IPC socket (a CLI process costs seconds of Node start-up here).
// Each check prints one ok/FAIL line.
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/ublk-direct.guest.js
// (ublk-direct-actor.guest.js: the same with the I/O actor hosting)

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { UBLK_HOSTING_DEFAULT } from '../../src/frontends/ublk/session';
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

/** The device-mapper volume: a working part over a loop device, then a part that fails every I/O. */
const DM_NAME = 'ublksnap-direct-dm';
const DM_WORKING_BYTES = 8 * MIB;
const DM_FAILING_BYTES = 4 * MIB;

let daemon: TestDaemon | undefined;
let ipc: IpcClient | undefined;
let loop_device = '';

async function cleanup(): Promise<void> {
  ipc?.close();
  await disposeDaemon(daemon);
  removeDmVolume();
}

const step = stepRunner(() => daemon, cleanup);

/** A linear target over a loop device for DM_WORKING_BYTES, then the error target; its path. */
function makeDmVolume(): string {
  sh('modprobe', ['loop']);
  sh('modprobe', ['dm_mod']);
  loop_device = sh('losetup', ['--find', '--show', sparseFile(daemon!.file('dm-backing.img'), DM_WORKING_BYTES)]).trim();
  const working_sectors = DM_WORKING_BYTES / 512;
  const table = `0 ${working_sectors} linear ${loop_device} 0\n${working_sectors} ${DM_FAILING_BYTES / 512} error\n`;
  // No udev in the guest: libdevmapper makes /dev/mapper/NAME itself.
  execFileSync('dmsetup', ['create', DM_NAME], { input: table, env: { ...process.env, DM_DISABLE_UDEV: '1' }, timeout: 30_000 });
  return `/dev/mapper/${DM_NAME}`;
}

function removeDmVolume(): void {
  const quiet = { stdio: 'ignore' as const, env: { ...process.env, DM_DISABLE_UDEV: '1' }, timeout: 30_000 };
  try { execFileSync('dmsetup', ['remove', DM_NAME], quiet); } catch { /* never made, or still held */ }
  if (loop_device !== '') try { execFileSync('losetup', ['-d', loop_device], quiet); } catch { /* already gone */ }
  loop_device = '';
}

/** dd's status, and its stderr. */
function ddStatus(args: string[]): { status: number; stderr: string } {
  try {
    sh('dd', [...args, 'status=none']);
    return { status: 0, stderr: '' };
  } catch (error) {
    const failed = error as { status?: number; stderr?: string };
    return { status: failed.status ?? -1, stderr: String(failed.stderr ?? '') };
  }
}

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

/** A count of the queues' stats lines ("direct" or "redone"), summed over all lines so far. */
function statsTotal(key: 'direct' | 'redone' | 'mapped'): number {
  let total = 0;
  for (const match of daemon!.logs.matchAll(new RegExp(`"${key}":(\\d+)`, 'g'))) total += Number(match[1]);
  return total;
}

function directServed(): number {
  return statsTotal('direct');
}

/** Polls while `waiting` holds, for 10 s at most: the stats line comes once a second while requests arrive. */
async function waitWhile(waiting: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (waiting() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
}

async function waitForStats(before: number, key: 'direct' | 'redone' | 'mapped' = 'direct'): Promise<number> {
  await waitWhile(() => statsTotal(key) === before);
  return statsTotal(key);
}

/**
 * Mapped writes fio's verify run must show at least. It runs in spawnSync,
 * so the stats lines the daemon logged meanwhile are read only after it
 * ends: the first new line may hold only fio's first part (it came in
 * during the run), and the rest comes in a line up to a second later.
 * The step waits until the count reaches this, for 10 s at most.
 */
const FIO_MAPPED_WRITES_MIN = 16;

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
    const hosting = process.env.UBLKSNAP_UBLK_HOSTING || UBLK_HOSTING_DEFAULT;
    expect(daemon!.logs.includes(`"hosting":"${hosting}"`), `the queue did not run in the ${hosting} hosting`);
  });

  await step('a rewrite of pages already in memory is a mapped write: the kernel copies into the volume itself', async () => {
    const before = statsTotal('mapped');
    const again = daemon!.file('again.bin');
    writeFileSync(again, randomBytes(BLOCK_BYTES));
    writeBlock(device, 2 * MIB, again);
    const file_bytes = readFileSync(volume).subarray(2 * MIB, 2 * MIB + BLOCK_BYTES);
    expect(file_bytes.equals(readFileSync(again)), 'the rewritten block is in the backing file');
    expect(readBlock(device, 2 * MIB).equals(readFileSync(again)), 'the rewritten block reads back through the device');
    const after = await waitForStats(before, 'mapped');
    expect(after > before, `the queue logged no mapped write (${before} → ${after})`);
    writeBlock(device, 2 * MIB, data);  // the next steps expect these bytes here
  });

  await step('mapped writes keep their data: fio verify (random sizes, QD 32) over pages in memory', async () => {
    // Every page in memory first (a hole is not: its writes take the slot).
    sh('dd', ['if=/dev/zero', `of=${device}`, 'bs=1M', `count=${VOLUME_BYTES / MIB}`, 'oflag=direct', 'status=none']);
    writeBlock(device, 2 * MIB, data);
    const before = statsTotal('mapped');
    sh('fio', ['--name=mapped-verify', `--filename=${device}`, '--rw=randwrite', '--bsrange=4k-512k', '--ioengine=io_uring', '--direct=1',
      '--iodepth=32', `--offset=${8 * MIB}`, `--size=${32 * MIB}`, '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0']);
    await waitWhile(() => statsTotal('mapped') - before < FIO_MAPPED_WRITES_MIN);
    const after = statsTotal('mapped');
    expect(after - before >= FIO_MAPPED_WRITES_MIN, `only ${after - before} mapped writes during fio`);
    expect(!/"mapped_failed":[1-9]/.test(daemon!.logs), 'a mapped copy failed');
    expect(readBlock(device, 2 * MIB).equals(readFileSync(data)), 'a block outside fio\'s range kept its bytes');
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

  let dm_device = '';
  await step('a direct transfer that fails goes to the actor, which answers with its error; the queue goes on', async () => {
    dm_device = keyValues(await cli(['attach', '-d', makeDmVolume(), '--name', 'dm', '--ublk'])).ublk ?? '';
    expect(/^\/dev\/ublkb\d+$/.test(dm_device), `ublk=${dm_device}`);
    const before = statsTotal('redone');
    const failing_block = DM_WORKING_BYTES / BLOCK_BYTES;
    const read = ddStatus([`if=${dm_device}`, `of=${daemon!.file('dm-read.bin')}`, `bs=${BLOCK_BYTES}`, 'count=1', `skip=${failing_block}`, 'iflag=direct']);
    expect(read.status !== 0 && /Input\/output error/.test(read.stderr), `a read of the failing part: status ${read.status}, ${read.stderr.trim()}`);
    const write = ddStatus([`if=${data}`, `of=${dm_device}`, `bs=${BLOCK_BYTES}`, 'count=1', `seek=${failing_block}`, 'oflag=direct,dsync', 'conv=notrunc']);
    expect(write.status !== 0 && /Input\/output error/.test(write.stderr), `a FUA write to the failing part: status ${write.status}, ${write.stderr.trim()}`);
    const after = await waitForStats(before, 'redone');
    expect(after >= before + 2, `the queue redid ${after - before} failed transfers in JavaScript, not 2`);
    writeBlock(dm_device, 0, data);
    expect(readBlock(dm_device, 0).equals(readFileSync(data)), 'the working part still writes and reads back');
  });

  await step('detach the device-mapper volume', async () => {
    await cli(['detach', '-d', 'dm']);
    expect(!existsSync(dm_device), `${dm_device} is still there after detach`);
  });

  await cleanup();
  log('ublk-direct: all ok');
}

main().catch(async (error: unknown) => {
  log(`FAIL - unexpected: ${(error as Error).stack ?? String(error)}`);
  await cleanup();
  process.exit(1);
});

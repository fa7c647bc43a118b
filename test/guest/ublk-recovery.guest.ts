// Goal: the daemon can go away and come back without its ublk devices
// going away (user recovery). After SIGKILL under load, and after a planned
// restart (`ublksnap shutdown --restart`), the next daemon takes each volume
// device back under the same /dev/ublkbN: fio running on one finishes and
// verifies, a write into the ext4 mounted on the other completes, its files
// are intact and e2fsck is clean — no error reaches the applications. An
// image device does not outlive its daemon (it is deleted at the next start,
// never served stale), and `ublksnap cleanup` deletes a device whose
// daemon's state is gone.
// Method: a standalone program run in the guest (test/vm/guest-driver.sh):
// real daemon processes on one state dir (test/lib/daemon.ts), the real CLI,
// fio, mkfs.ext4, mount, dd and e2fsck on the devices. One ok/FAIL line per
// check; a failed step ends the program (exit 1) after cleanup. Daemon
// starts are the slow part under emulation (30-60 s each): three in all.
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/ublk-recovery.guest.js

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { keyValues, sparseFile, startDaemon, disposeDaemon, type TestDaemon } from '../lib/daemon';
import {
  expect, GUEST_CLI_TIMEOUT_MS, GUEST_DAEMON_START_TIMEOUT_MS, log, sh, stepRunner,
} from '../lib/guest-program';

const MIB = 1024 * 1024;
const VOLUME_BYTES = 96 * MIB;
/** Node starts 6-8× slower under TCG: every CLI call and the daemon's start get room. */
const CLI_TIMEOUT_MS = GUEST_CLI_TIMEOUT_MS;
const DAEMON_START_TIMEOUT_MS = GUEST_DAEMON_START_TIMEOUT_MS;
/** fio must still be writing when the daemon dies: its write phase takes longer than this. */
const LOAD_BEFORE_KILL_MS = 2_000;
/** fio's whole run, the outage included, must end within this. */
const FIO_TIMEOUT_MS = 240_000;

let daemon: TestDaemon | undefined;
const mounts: string[] = [];
const children: ChildProcess[] = [];




const step = stepRunner(() => daemon, cleanup);

async function cleanup(): Promise<void> {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const point of mounts.splice(0).reverse()) {
    try {
      sh('umount', ['-l', point]);
    } catch {
      // Already unmounted by the step that failed.
    }
  }
  if (daemon && !daemon.running) {
    // A killed daemon leaves quiesced devices: a fresh one on the same state takes them back and deletes them at stop.
    await daemon.start({ log_level: 'info', start_timeout_ms: DAEMON_START_TIMEOUT_MS }).catch(() => undefined);
  }
  if (daemon?.running) await daemon.ok(['cleanup'], { timeout_ms: CLI_TIMEOUT_MS }).catch(() => undefined);
  await disposeDaemon(daemon);
  daemon = undefined;
}

async function cli(args: string[]): Promise<Record<string, string>> {
  return keyValues(await daemon!.ok(args, { timeout_ms: CLI_TIMEOUT_MS }));
}

/** Runs a tool in the background; resolves with its exit code and output. */
function background(command: string, args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  return new Promise((resolve) => child.on('exit', (code) => {
    children.splice(children.indexOf(child), 1);
    resolve({ code, output });
  }));
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not end within ${ms} ms`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** fio's crc32c verify on a whole device: random 8 KiB writes at QD 32, then read back and checked. */
function fioVerify(device: string): Promise<{ code: number | null; output: string }> {
  return background('fio', [
    '--name=recovery', `--filename=${device}`, '--ioengine=io_uring', '--direct=1', '--rw=randwrite', '--bs=8k',
    '--iodepth=32', '--size=64M', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--output-format=terse',
  ]);
}

function md5(file: string): string {
  return createHash('md5').update(readFileSync(file)).digest('hex');
}

async function restart(how: 'SIGKILL' | 'shutdown --restart', while_down: () => void = () => undefined): Promise<void> {
  if (how === 'SIGKILL') {
    await daemon!.stop('SIGKILL');
  } else {
    await daemon!.ok(['shutdown', '--restart'], { timeout_ms: CLI_TIMEOUT_MS });
    const exit = await daemon!.exited('shutdown --restart');
    expect(exit.code === 0, `the daemon exited ${exit.code} (signal ${exit.signal}) after shutdown --restart`);
  }
  while_down();
  await daemon!.start({ log_level: 'info', start_timeout_ms: DAEMON_START_TIMEOUT_MS });
}

/** What the daemon serves as ublk devices now. */
async function servedDevices(): Promise<string[]> {
  const status = JSON.parse(await daemon!.ok(['status', '-j'], { timeout_ms: CLI_TIMEOUT_MS })) as {
    frontends: { kind: string; listening: string[]; details?: Record<string, unknown> }[];
  };
  const ublk = status.frontends.find((frontend) => frontend.kind === 'ublk');
  for (const device of ublk?.listening ?? []) {
    const line = Object.values(ublk?.details ?? {}).find((value) => typeof value === 'string' && value.startsWith(`${device} `));
    expect(typeof line === 'string' && /queues=1 in_flight=\d+$/.test(line), `status of ${device}: ${String(line)}`);
  }
  return ublk?.listening ?? [];
}

async function main(): Promise<void> {
  sh('modprobe', ['ublk_drv']);
  sh('modprobe', ['ext4']);
  daemon = await startDaemon('ublk-recovery', { log_level: 'info', start_timeout_ms: DAEMON_START_TIMEOUT_MS });
  const fio_file = sparseFile(daemon.file('fio.img'), VOLUME_BYTES);
  const fs_file = sparseFile(daemon.file('fs.img'), VOLUME_BYTES);
  const orphan_file = sparseFile(daemon.file('orphan.img'), VOLUME_BYTES);
  const point = path.join('/dev/shm', 'ublksnap-recovery-mnt');
  let fio_device = '';
  let fs_device = '';
  let orphan_device = '';
  let image_device = '';
  const before = randomBytes(MIB);
  const before_md5 = createHash('md5').update(before).digest('hex');

  await step('three volumes as ublk devices, ext4 on one with a file, an image device of it', async () => {
    fio_device = (await cli(['attach', '-d', fio_file, '--name', 'fio', '--ublk'])).ublk!;
    fs_device = (await cli(['attach', '-d', fs_file, '--name', 'fs', '--ublk'])).ublk!;
    orphan_device = (await cli(['attach', '-d', orphan_file, '--name', 'orphan', '--ublk'])).ublk!;
    for (const device of [fio_device, fs_device, orphan_device]) expect(/^\/dev\/ublkb\d+$/.test(device), `device ${device}`);
    sh('mkfs.ext4', ['-q', '-F', fs_device]);
    mkdirSync(point, { recursive: true });
    sh('mount', [fs_device, point]);
    mounts.push(point);
    writeFileSync(path.join(point, 'before.bin'), before);
    sh('sync', []);
    const storage = daemon!.file('diff');
    mkdirSync(storage, { recursive: true });
    const id = (await daemon!.ok(['snapshot_create', '-d', 'fs', '-f', storage, '-l', '64M', '--ublk'], { timeout_ms: CLI_TIMEOUT_MS })).trim();
    await daemon!.ok(['snapshot_take', '-i', id], { timeout_ms: CLI_TIMEOUT_MS });
    image_device = (await cli(['snapshot_info', '-d', 'fs'])).image!;
    expect(/^\/dev\/ublkb\d+$/.test(image_device) && existsSync(image_device), `image device ${image_device}`);
  });

  const underLoad = async (how: 'SIGKILL' | 'shutdown --restart', while_down?: () => void): Promise<void> => {
    const fio = fioVerify(fio_device);
    await new Promise((resolve) => setTimeout(resolve, LOAD_BEFORE_KILL_MS));
    const old_pid = daemon!.pid;
    const write = background('dd', ['if=/dev/urandom', `of=${path.join(point, `${old_pid}.bin`)}`, 'bs=1M', 'count=4', 'conv=fsync']);
    await restart(how, while_down);
    expect(daemon!.pid !== old_pid, 'a new daemon process serves');
    const served = await servedDevices();
    expect(served.includes(fio_device) && served.includes(fs_device), `the new daemon serves ${served.join(', ')}, wanted ${fio_device} and ${fs_device}`);
    const fio_result = await withTimeout(fio, FIO_TIMEOUT_MS, 'fio');
    expect(fio_result.code === 0, `fio exited ${fio_result.code}: ${fio_result.output.slice(-800)}`);
    const write_result = await withTimeout(write, FIO_TIMEOUT_MS, 'dd into the mounted ext4');
    expect(write_result.code === 0, `dd exited ${write_result.code}: ${write_result.output.slice(-400)}`);
    expect(md5(path.join(point, 'before.bin')) === before_md5, 'the file written before changed');
  };

  await step('SIGKILL under fio and a file write: the same devices come back, fio verifies, the write completes', async () => {
    // The orphan volume's device loses its record, as if its daemon's state
    // were gone: the next daemon re-attaches the volume (its own record) and
    // serves it on a new device, and the old one is left for cleanup.
    await underLoad('SIGKILL', () => rmSync(path.join(daemon!.state_dir, 'ublk-devices', `${orphan_device.replace('/dev/ublkb', '')}.json`)));
  });

  await step('the image device of the killed daemon is gone, never served stale', async () => {
    // Its number may be taken again at once (the kernel picks the lowest free one): by a volume, never by an image.
    const status = JSON.parse(await daemon!.ok(['status', '-j'], { timeout_ms: CLI_TIMEOUT_MS })) as {
      snapshots: unknown[]; frontends: { kind: string; details?: Record<string, unknown> }[];
    };
    const details = status.frontends.find((frontend) => frontend.kind === 'ublk')?.details ?? {};
    expect(status.snapshots.length === 0, 'a snapshot outlived its daemon');
    expect(!Object.keys(details).some((name) => name.includes('@')), `an image is still served: ${JSON.stringify(details)}`);
    const reused_by = Object.entries(details).find(([, value]) => typeof value === 'string' && value.startsWith(`${image_device} `));
    expect(!existsSync(image_device) || reused_by !== undefined, `${image_device} is still there, served by no one`);
  });

  await step('cleanup deletes the device whose state is gone, and nothing else', async () => {
    const dry = await daemon!.ok(['cleanup', '--dry-run'], { timeout_ms: CLI_TIMEOUT_MS });
    expect(dry.includes(`leftover=${orphan_device} (`) && dry.includes('would be deleted'), `dry run: ${dry.trim()}`);
    expect(!dry.includes(`${fs_device} (`) && !dry.includes(`${fio_device} (`), `dry run names a served device: ${dry.trim()}`);
    expect(existsSync(orphan_device), 'a dry run deleted the device');
    const done = await daemon!.ok(['cleanup'], { timeout_ms: CLI_TIMEOUT_MS });
    expect(done.includes(`leftover=${orphan_device} (`) && done.includes(': deleted'), `cleanup: ${done.trim()}`);
    expect(!existsSync(orphan_device), `${orphan_device} is still there after cleanup`);
    expect(existsSync(fs_device) && existsSync(fio_device), 'cleanup deleted a served device');
  });

  await step('shutdown --restart under fio and a file write: the same devices come back, fio verifies, the write completes', async () => {
    await underLoad('shutdown --restart');
  });

  await step('the filesystem unmounts and e2fsck -fn finds it clean', () => {
    sh('umount', [point]);
    mounts.splice(mounts.indexOf(point), 1);
    sh('e2fsck', ['-fn', fs_device]);
  });

  await step('a stopped daemon leaves no device behind', async () => {
    const exit = await daemon!.stop('SIGTERM');
    expect(exit.code === 0, `the daemon exited ${exit.code}`);
    for (const device of [fs_device, fio_device]) expect(!existsSync(device), `${device} is still there after SIGTERM`);
  });
  await disposeDaemon(daemon);
  daemon = undefined;
  rmSync(point, { recursive: true, force: true });
  sh('modprobe', ['-r', 'ublk_drv']);
}

void main().then(() => process.exit(0), async (error: unknown) => {
  log(`FAIL - unexpected: ${(error as Error).stack ?? String(error)}`);
  await cleanup();
  process.exit(1);
});

// Goal: upstream's `markdirtyblock --file FILE` where the file system sits
// on the volume's ublk export: the CLI finds FILE's extents (FIEMAP) on
// /dev/ublkbN, the daemon maps that device to its volume, and the next
// take's map carries the current change number on every block under the
// file, which the earlier take had seen at an older number. Also `-d
// /dev/ublkbN` names the volume, and without ublk_drv `attach --ublk` says
// to modprobe it (the module is installed in the guest, not loaded).
// Method: a standalone program run in the guest: a real daemon, the real
// CLI, mkfs.ext4 and mount on the device, filefrag for the extents (an
// independent reading of the same FIEMAP). One ok/FAIL line per step.
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/markdirty-file-ublk.guest.js

import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { disposeDaemon, keyValues, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';
import { expect, GUEST_CLI_TIMEOUT_MS, GUEST_DAEMON_START_TIMEOUT_MS, sh, stepRunner } from '../lib/guest-program';

const MIB = 1024 * 1024;
const VOLUME_BYTES = 64 * MIB;
const FILE_BYTES = 3 * MIB + 4096;
const SECTOR_BYTES = 512;

let daemon: TestDaemon | undefined;
let mount_point = '';

const step = stepRunner(() => daemon, cleanup);

async function cleanup(): Promise<void> {
  if (mount_point !== '') {
    try {
      sh('umount', ['-l', mount_point]);
    } catch {
      // Already unmounted by the step that failed.
    }
    rmSync(mount_point, { recursive: true, force: true });
    mount_point = '';
  }
  await disposeDaemon(daemon);
  daemon = undefined;
}

async function cli(args: string[]): Promise<string> {
  return daemon!.ok(args, { timeout_ms: GUEST_CLI_TIMEOUT_MS });
}

/** [first, end) in 512-byte sectors of every extent filefrag reports. */
function filefragSectors(file: string): [number, number][] {
  const out = sh('filefrag', ['-e', '-b512', file]);
  return [...out.matchAll(/^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)].map((match) => [Number(match[1]), Number(match[2]) + 1]);
}

async function takeAndDestroy(): Promise<void> {
  const id = (await cli(['snapshot_create', '-d', 'vol', '-f', daemon!.dir, '-l', '64M'])).trim();
  await cli(['snapshot_take', '-i', id]);
  await cli(['snapshot_destroy', '-i', id]);
}

async function main(): Promise<void> {
  try {
    sh('modprobe', ['-r', 'ublk_drv']);
  } catch {
    // Not loaded: the state the first step wants.
  }
  await step('without ublk_drv (installed, not loaded), attach --ublk says to modprobe it', async () => {
    daemon = await startDaemon('markdirty-nodrv', { log_level: 'info', start_timeout_ms: GUEST_DAEMON_START_TIMEOUT_MS });
    sparseFile(daemon.file('vol.img'), VOLUME_BYTES);
    const result = await daemon.cli(['attach', '-d', daemon.file('vol.img'), '--ublk'], { timeout_ms: GUEST_CLI_TIMEOUT_MS });
    expect(/installed but not loaded \(load it as root: modprobe ublk_drv\) \(ENODEV\)/.test(result.stderr), result.stderr.trim());
    await cleanup();
  });

  sh('modprobe', ['ublk_drv']);
  sh('modprobe', ['ext4']);
  daemon = await startDaemon('markdirty-file', { log_level: 'info', params: ['chunk_minimum_shift=16', 'tracking_block_minimum_shift=16'], start_timeout_ms: GUEST_DAEMON_START_TIMEOUT_MS });
  const volume_file = sparseFile(daemon.file('vol.img'), VOLUME_BYTES);
  let device = '';
  let data = '';
  await step('attach --ublk, mkfs.ext4 and a file on the device', async () => {
    device = keyValues(await cli(['attach', '-d', volume_file, '--name', 'vol', '--ublk'])).ublk ?? '';
    expect(/^\/dev\/ublkb\d+$/.test(device), `ublk=${device}`);
    sh('mkfs.ext4', ['-q', device]);
    mount_point = path.join('/dev/shm', 'ublksnap-markdirty-mnt');
    mkdirSync(mount_point, { recursive: true });
    sh('mount', [device, mount_point]);
    data = path.join(mount_point, 'data');
    writeFileSync(data, Buffer.alloc(FILE_BYTES, 0x5a));
    sh('sync', []);
  });

  await step('-d /dev/ublkbN names the volume', async () => {
    const info = keyValues(await cli(['cbtinfo', '-d', device]));
    expect(info.device_capacity === String(VOLUME_BYTES), `device_capacity=${info.device_capacity}`);
  });

  await step('markdirtyblock --file marks every block under the file at the current change number', async () => {
    // The file's blocks were written before this take: they carry its number, older than the next.
    await takeAndDestroy();
    await cli(['markdirtyblock', '--file', data]);
    const id = (await cli(['snapshot_create', '-d', 'vol', '-f', daemon!.dir, '-l', '64M'])).trim();
    await cli(['snapshot_take', '-i', id]);
    await cli(['readcbtmap', '-d', 'vol', '-f', daemon!.file('vol.map')]);
    const info = keyValues(await cli(['cbtinfo', '-d', 'vol']));
    await cli(['snapshot_destroy', '-i', id]);
    const block_sectors = Number(info.block_size) / SECTOR_BYTES;
    const changes_number = Number(info.changes_number);
    const map = readFileSync(daemon!.file('vol.map'));
    const blocks: number[] = [];
    for (const [first, end] of filefragSectors(data)) {
      for (let block = Math.floor(first / block_sectors); block < Math.ceil(end / block_sectors); block += 1) blocks.push(block);
    }
    expect(blocks.length * Number(info.block_size) >= FILE_BYTES, `${blocks.length} blocks under a ${FILE_BYTES}-byte file`);
    const stale = blocks.filter((block) => map[block] !== changes_number);
    expect(stale.length === 0, `blocks not at change number ${changes_number}: ${stale.slice(0, 8).join(',')} (of ${blocks.length})`);
  });

  await cleanup();
  sh('modprobe', ['-r', 'ublk_drv']);
}

void main();

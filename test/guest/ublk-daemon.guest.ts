// Goal: what the README promises a ublk user, end to end in a real kernel:
// without ublk_drv, `attach --ublk` fails with the modprobe hint and
// attaches nothing; with it, `ublksnap attach -d FILE --ublk` gives a
// /dev/ublkbN that passes fio's crc32c verify, carries an ext4, is taken
// with no user fsfreeze (the daemon freezes it), and `snapshot_create
// --ublk` serves the image as a device that mounts and holds exactly the
// pre-take files; image writes never reach the volume; e2fsck is clean;
// destroy and detach refuse while the devices are mounted and name the
// mount; blkdiscard and blkdiscard -z leave zeros on the device and in the
// backing file; a storage on the volume's own filesystem is refused; a
// forced detach under fio load ends fio with errors, without a hang; the
// README's ublk recipe runs as written; a stopped daemon leaves no device
// behind.
// Method: a standalone program run in the guest (test/vm/guest-driver.sh):
// a real daemon process (test/lib/daemon.ts) on a file in /dev/shm, the
// real CLI for every step a user types, and fio, mkfs.ext4, mount,
// e2fsck, blkdiscard and cmp on the devices. Each check prints one
// ok/FAIL line; a failed step ends the program (exit 1) after cleanup.
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/ublk-daemon.guest.js

import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CLI_PATH, REPO_ROOT, disposeDaemon, keyValues, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';
import {
  expect, GUEST_CLI_TIMEOUT_MS, GUEST_DAEMON_START_TIMEOUT_MS, GUEST_TOOL_TIMEOUT_MS, log, sh, stepRunner,
} from '../lib/guest-program';
import { recipe } from '../lib/recipes';

/** The README's recipe this program runs in the guest (marked `<!-- recipe: ublk-mounted-backup guest -->`). */
const UBLK_RECIPE = 'ublk-mounted-backup';

const MIB = 1024 * 1024;
const VOLUME_BYTES = 256 * MIB;
const SMALL_VOLUME_BYTES = 64 * MIB;
/** Node starts 6-8× slower under TCG: every CLI call and the daemon's start get room. */
const CLI_TIMEOUT_MS = GUEST_CLI_TIMEOUT_MS;
const DAEMON_START_TIMEOUT_MS = GUEST_DAEMON_START_TIMEOUT_MS;
const TOOL_TIMEOUT_MS = GUEST_TOOL_TIMEOUT_MS;
const FILES = ['a.bin', 'b.bin', 'c.bin'];
const FILE_BYTES = MIB;
/** The discard checks: 8 MiB written, then the first half punched, the second zeroed. */
const DISCARD_REGION_BYTES = 8 * MIB;
/** Delete under load: fio would run this long, the delete comes after the pause, fio must end within the bound. */
const LOAD_RUNTIME_S = 60;
const LOAD_BEFORE_DELETE_MS = 3_000;
const FIO_EXIT_AFTER_DELETE_MS = 30_000;

let daemon: TestDaemon | undefined;
const mounts: string[] = [];




const step = stepRunner(() => daemon, cleanup);

async function cleanup(): Promise<void> {
  for (const mount of mounts.splice(0).reverse()) {
    try {
      sh('umount', ['-l', mount]);
    } catch {
      // Already unmounted by the step that failed.
    }
  }
  await disposeDaemon(daemon);
  daemon = undefined;
}

function mount(device: string, options: string[]): string {
  const point = path.join('/dev/shm', `ublksnap-mnt-${path.basename(device)}`);
  mkdirSync(point, { recursive: true });
  sh('mount', [...options, device, point]);
  mounts.push(point);
  return point;
}

function unmount(point: string): void {
  sh('umount', [point]);
  mounts.splice(mounts.indexOf(point), 1);
  rmSync(point, { recursive: true, force: true });
}

function md5(file: string): string {
  return createHash('md5').update(readFileSync(file)).digest('hex');
}

async function cli(args: string[]): Promise<Record<string, string>> {
  return keyValues(await daemon!.ok(args, { timeout_ms: CLI_TIMEOUT_MS }));
}

async function refused(args: string[], pattern: RegExp): Promise<void> {
  const result = await daemon!.cli(args, { timeout_ms: CLI_TIMEOUT_MS });
  expect(result.code !== 0, `ublksnap ${args.join(' ')} succeeded; it must be refused`);
  expect(pattern.test(result.stderr), `ublksnap ${args.join(' ')}: ${result.stderr.trim()} (wanted ${pattern})`);
}

/** The README's recipe `ublk-mounted-backup` (test/lib/recipes.ts), as written. */
function readmeRecipe(): string {
  return recipe(REPO_ROOT, UBLK_RECIPE).script;
}

function ublkDevices(): string[] {
  return readdirSync('/dev').filter((name) => /^ublkb\d+$/.test(name));
}

async function main(): Promise<void> {
  try {
    sh('modprobe', ['-r', 'ublk_drv']);
  } catch {
    // Not loaded: the state this program wants.
  }
  await step('without ublk_drv, attach --ublk names modprobe and attaches nothing', async () => {
    daemon = await startDaemon('ublk-nodrv', { log_level: 'info', start_timeout_ms: DAEMON_START_TIMEOUT_MS });
    sparseFile(daemon.file('vol.img'), VOLUME_BYTES);
    await refused(['attach', '-d', daemon.file('vol.img'), '--ublk'], /modprobe ublk_drv.*\(ENODEV\)/);
    const status = JSON.parse(await daemon.ok(['status', '-j'], { timeout_ms: CLI_TIMEOUT_MS }));
    expect(status.volumes.length === 0, 'a refused attach leaves no volume');
    await cleanup();
  });

  sh('modprobe', ['ublk_drv']);
  // The guest loads what it needs itself; ext4 is a module in Debian's kernels.
  sh('modprobe', ['ext4']);
  daemon = await startDaemon('ublk-daemon', { log_level: 'info', params: ['chunk_minimum_shift=16'], start_timeout_ms: DAEMON_START_TIMEOUT_MS });
  const volume_file = sparseFile(daemon.file('vol.img'), VOLUME_BYTES);
  let device = '';
  await step('attach --ublk prints the device', async () => {
    const attached = await cli(['attach', '-d', volume_file, '--ublk']);
    device = attached.ublk ?? '';
    expect(/^\/dev\/ublkb\d+$/.test(device) && existsSync(device), `ublk=${device}`);
  });

  await step('fio crc32c verify on the volume device', () => {
    sh('fio', ['--name=verify', `--filename=${device}`, '--rw=randwrite', '--bs=8k', '--iodepth=32', '--ioengine=io_uring',
      '--direct=1', '--size=32M', '--verify=crc32c', '--do_verify=1', '--verify_state_save=0', '--output-format=terse']);
  });

  const sums = new Map<string, string>();
  let volume_mount = '';
  await step('ext4 on the volume device, files written', () => {
    sh('mkfs.ext4', ['-q', '-F', device]);
    volume_mount = mount(device, ['-t', 'ext4']);
    for (const name of FILES) {
      writeFileSync(path.join(volume_mount, name), randomBytes(FILE_BYTES));
      sums.set(name, md5(path.join(volume_mount, name)));
    }
  });

  await step('a difference storage on the volume\'s own filesystem is refused', async () => {
    await refused(['snapshot_create', '-d', volume_file, '-f', path.join(volume_mount, 'diff'), '-l', '64M'],
      /lies on \/dev\/ublkb\d+, the device of volume vol\.img.*\(EINVAL\)/);
  });

  let id = '';
  let image = '';
  await step('snapshot_create --ublk and take, with no user fsfreeze', async () => {
    id = (await daemon!.ok(['snapshot_create', '-d', volume_file, '-f', daemon!.file('diff'), '-l', '256M', '--ublk'],
      { timeout_ms: CLI_TIMEOUT_MS })).trim();
    await cli(['snapshot_take', '-i', id]);
    image = (await cli(['snapshot_info', '-d', volume_file])).image ?? '';
    expect(/^\/dev\/ublkb\d+$/.test(image) && existsSync(image), `image=${image}`);
  });

  await step('post-take writes stay out of the image', () => {
    writeFileSync(path.join(volume_mount, 'after.bin'), randomBytes(FILE_BYTES));
    writeFileSync(path.join(volume_mount, FILES[0]!), randomBytes(FILE_BYTES));
    sh('sync', []);
  });

  await step('the image device mounts and holds exactly the pre-take files', () => {
    sh('e2fsck', ['-fn', image]);
    const image_mount = mount(image, ['-t', 'ext4', '-o', 'ro']);
    for (const [name, sum] of sums) expect(md5(path.join(image_mount, name)) === sum, `${name} differs in the image`);
    expect(!existsSync(path.join(image_mount, 'after.bin')), 'a post-take file leaked into the image');
    unmount(image_mount);
  });

  await step('image writes never reach the volume', () => {
    const image_mount = mount(image, ['-t', 'ext4']);
    writeFileSync(path.join(image_mount, 'image-only.bin'), randomBytes(FILE_BYTES));
    unmount(image_mount);
    expect(!existsSync(path.join(volume_mount, 'image-only.bin')), 'an image write reached the volume');
    const again = mount(image, ['-t', 'ext4', '-o', 'ro']);
    expect(existsSync(path.join(again, 'image-only.bin')), 'the image kept its own write');
    // Held on purpose: destroy must refuse now.
    void again;
  });

  await step('destroy refuses while the image is mounted, naming the mount', async () => {
    await refused(['snapshot_destroy', '-i', id], /mounted on .*\(EBUSY\)/);
    unmount(mounts[mounts.length - 1]!);
    await cli(['snapshot_destroy', '-i', id]);
    expect(!existsSync(image), `${image} still exists after destroy`);
  });

  await step('detach refuses while the volume is mounted; e2fsck clean after', async () => {
    await refused(['detach', '-d', volume_file], /mounted on .*\(EBUSY\)/);
    unmount(volume_mount);
    sh('e2fsck', ['-fn', device]);
    await cli(['detach', '-d', volume_file]);
    expect(!existsSync(device), `${device} still exists after detach`);
  });

  await step('blkdiscard and blkdiscard -z leave zeros on the device and in the file', async () => {
    const small_file = sparseFile(daemon!.file('small.img'), SMALL_VOLUME_BYTES);
    const small = (await cli(['attach', '-d', small_file, '--ublk'])).ublk!;
    const half = DISCARD_REGION_BYTES / 2;
    sh('dd', ['if=/dev/urandom', `of=${small}`, 'bs=1M', `count=${DISCARD_REGION_BYTES / MIB}`, 'oflag=direct', 'status=none']);
    sh('blkdiscard', ['-o', '0', '-l', String(half), small]);
    sh('blkdiscard', ['-z', '-o', String(half), '-l', String(half), small]);
    sh('cmp', ['-n', String(DISCARD_REGION_BYTES), small, '/dev/zero']);
    sh('cmp', ['-n', String(DISCARD_REGION_BYTES), small_file, '/dev/zero']);
  });

  await step('the README recipe, exactly as written, backs up a mounted filesystem and restarts the daemon under it', async () => {
    const dir = path.join(daemon!.dir, 'recipe');
    const bin = path.join(daemon!.dir, 'bin');
    mkdirSync(dir, { recursive: true });
    mkdirSync(bin, { recursive: true });
    // `ublksnap` as an installed binary would be: the checkout's CLI.
    writeFileSync(path.join(bin, 'ublksnap'), `#!/bin/sh\nexec ${process.execPath} ${CLI_PATH} "$@"\n`, { mode: 0o755 });
    writeFileSync(path.join(dir, 'recipe.sh'), readmeRecipe());
    // The recipe restarts the daemon itself: the next one finds the socket and state dir in the environment.
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, UBLKSNAP_SOCKET: daemon!.socket, UBLKSNAP_STATE_DIR: daemon!.state_dir };
    try {
      execFileSync('bash', ['-euo', 'pipefail', 'recipe.sh'], { cwd: dir, timeout: TOOL_TIMEOUT_MS, stdio: ['ignore', 'inherit', 'inherit'], env });
      expect(readFileSync(path.join(dir, 'backup', 'file.txt'), 'utf8') === 'hello\n', 'backup/file.txt holds the pre-take file');
    } finally {
      // The recipe's own daemon (if it got that far) gives way to this program's again.
      for (const point of ['image', 'mnt']) {
        try {
          sh('umount', ['-l', path.join(dir, point)]);
        } catch {
          // Not mounted: the recipe got past its umount.
        }
      }
      try {
        execFileSync(process.execPath, [CLI_PATH, 'shutdown'], { timeout: TOOL_TIMEOUT_MS, stdio: 'ignore', env });
      } catch {
        // No daemon answered: the recipe stopped between the two.
      }
    }
    await daemon!.start({ log_level: 'info', params: ['chunk_minimum_shift=16'], start_timeout_ms: DAEMON_START_TIMEOUT_MS });
  });

  await step('detach --force under fio load: fio ends with errors, no hang, the device is gone', async () => {
    const load_file = sparseFile(daemon!.file('load.img'), SMALL_VOLUME_BYTES);
    const load = (await cli(['attach', '-d', load_file, '--ublk'])).ublk!;
    const fio = spawn('fio', ['--name=load', `--filename=${load}`, '--rw=randrw', '--bs=4k', '--iodepth=32', '--ioengine=io_uring',
      '--direct=1', '--time_based', `--runtime=${LOAD_RUNTIME_S}`, '--output-format=terse'], { stdio: 'ignore' });
    const fio_exit = new Promise<number | null>((resolve) => fio.on('exit', (code) => resolve(code)));
    await new Promise((resolve) => setTimeout(resolve, LOAD_BEFORE_DELETE_MS));
    await cli(['detach', '-d', load_file, '--force']);
    const code = await Promise.race([fio_exit, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), FIO_EXIT_AFTER_DELETE_MS))]);
    if (code === 'hung') fio.kill('SIGKILL');
    expect(code !== 'hung', `fio did not end within ${FIO_EXIT_AFTER_DELETE_MS} ms of the delete`);
    expect(code !== 0, 'fio saw no error although its device went away');
    expect(!existsSync(load), `${load} still exists`);
  });

  await step('a stopped daemon leaves no ublk device behind', async () => {
    expect(ublkDevices().length > 0, 'the small volume should still be served');
    await daemon!.stop('SIGTERM');
    expect(ublkDevices().length === 0, `left behind: ${ublkDevices().join(', ')}`);
  });
  await cleanup();
  try {
    sh('modprobe', ['-r', 'ublk_drv']);
  } catch {
    // Still busy: a later program loads it anyway.
  }
  log('all ublk daemon checks passed');
}

main().catch(async (error: unknown) => {
  log(`FAIL - unexpected: ${(error as Error).stack ?? String(error)}`);
  await cleanup();
  process.exit(1);
});

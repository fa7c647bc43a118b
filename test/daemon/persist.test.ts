// Goal: volumes and their change tracking outlive a daemon restart (issue
// 12, items 1-2). A clean restart (SIGTERM) brings back every volume
// attached over IPC with its name and NBD export, and its CBT generation,
// changes number and both map copies, so the next incremental is still
// incremental. Whenever the saved map could claim a block unchanged that
// may have changed (SIGKILL, the file written or its size changed while
// the daemon was down, a block device written meanwhile, a bad state file)
// the volume starts a new generation and cbtinfo / status say why. A
// recorded volume that cannot come back is reported and the others still
// come up (a frontend that is missing now is reported, the volume stays);
// detach removes the record. Config volumes keep their tracking the same way.
// Method: real `ublksnap daemon` processes restarted in the same scratch
// dir; writes through the NBD export with qemu-io; the volume file changed
// between runs with touch, dd and truncate; a loop device for the block
// variant; the CLI reads cbtinfo, readcbtmap and status.

import { readFileSync, readdirSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HAS_NBD, TestDaemon, disposeDaemon, hardTimeout, keyValues, scratchDir, sparseFile } from '../lib/daemon';
import { runOk } from '../lib/nbd-tools';
import { makeLoopDevice, missingPrerequisites } from '../lib/system';

hardTimeout(295_000, 'daemon/persist');

const MiB = 1 << 20;
const VOLUME_BYTES = 8 * MiB;
/** SMALL_PARAMS' tracking block: 64 KiB. */
const BLOCK_BYTES = 64 * 1024;
const UNCLEAN = /^unclean stop/;

async function cbtinfo(daemon: TestDaemon, device: string): Promise<Record<string, string>> {
  return keyValues(await daemon.ok(['cbtinfo', '-d', device]));
}

async function cbtMap(daemon: TestDaemon, device: string): Promise<Buffer> {
  const file = daemon.file(`map-${Date.now()}.bin`);
  await daemon.ok(['readcbtmap', '-d', device, '-f', file]);
  const bytes = readFileSync(file);
  rmSync(file);
  return bytes;
}

/** A take and a destroy: the change numbers move on by one. */
async function takeAndDrop(daemon: TestDaemon, device: string): Promise<void> {
  const id = (await daemon.ok(['snapshot_create', '-d', device, '-f', daemon.dir, '-l', '16M'])).trim();
  await daemon.ok(['snapshot_take', '-i', id]);
  await daemon.ok(['snapshot_destroy', '-i', id]);
}

/** Writes length bytes of pattern at offset through the volume's NBD export, or marks them dirty without NBD. */
async function writeVolume(daemon: TestDaemon, device: string, offset: number, length: number, pattern: number): Promise<void> {
  if (HAS_NBD) {
    await runOk('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${length}`, `nbd+unix:///${device}?socket=${daemon.nbd_socket}`]);
  } else {
    await daemon.ok(['markdirtyblock', '-d', device, '-r', `${offset / 512}:${length / 512}`]);
  }
}

async function status(daemon: TestDaemon): Promise<{ volumes: { name: string; path: string; cbt: { generation_reason: string } }[]; restore_errors: { name: string; path: string; code: string; error: string }[] }> {
  return JSON.parse(await daemon.ok(['-j', 'status']));
}

async function restarted(daemon: TestDaemon, signal: NodeJS.Signals): Promise<void> {
  const stopped = await daemon.stop(signal);
  if (signal === 'SIGTERM') assert.is(stopped.code, 0, daemon.logs);
  daemon.logs = '';
  await daemon.start();
}

/** A daemon with vol (attached over IPC, on NBD when built in) that has seen a take and writes on each side of it. */
async function daemonWithHistory(label: string, volume_path?: string): Promise<{ daemon: TestDaemon; volume: string }> {
  const daemon = new TestDaemon(scratchDir(label));
  await daemon.start();
  const volume = volume_path ?? sparseFile(daemon.file('vol.img'), VOLUME_BYTES);
  await daemon.ok(['attach', '-d', volume, '--name', 'vol', ...(HAS_NBD ? ['--nbd'] : [])]);
  await takeAndDrop(daemon, 'vol');
  await writeVolume(daemon, 'vol', 1 * MiB, BLOCK_BYTES, 0x11);
  await takeAndDrop(daemon, 'vol');
  // Only in the active copy until the next take: a restart must keep it too.
  await writeVolume(daemon, 'vol', 3 * MiB, BLOCK_BYTES, 0x22);
  return { daemon, volume };
}

test('clean restart: the volume comes back with its name and export, CBT generation, changes number and both map copies', async () => {
  const { daemon, volume } = await daemonWithHistory('persist-clean');
  try {
    const before = await cbtinfo(daemon, 'vol');
    const map_before = await cbtMap(daemon, 'vol');
    assert.is(before.changes_number, '1');
    assert.is(before.generation_reason, 'first attach');
    assert.is(map_before[MiB / BLOCK_BYTES], 1, 'the write between the takes is in the snapshot copy');

    await restarted(daemon, 'SIGTERM');
    assert.match(daemon.logs, /change tracking continued from the clean stop/);
    const after = await cbtinfo(daemon, 'vol');
    assert.equal(after, before, 'cbtinfo, generation reason included, is what it was');
    assert.equal(await cbtMap(daemon, 'vol'), map_before);
    const state = await status(daemon);
    assert.equal(state.volumes.map((v) => [v.name, v.path]), [['vol', volume]]);
    assert.equal(state.restore_errors, []);
    if (HAS_NBD) {
      await runOk('qemu-io', ['-f', 'raw', '-c', `read -P 0x22 ${3 * MiB} ${BLOCK_BYTES}`, `nbd+unix:///vol?socket=${daemon.nbd_socket}`]);
    }

    // The active copy survived too: the next take reports the write made after the last one.
    await takeAndDrop(daemon, 'vol');
    const next = await cbtinfo(daemon, 'vol');
    assert.is(next.generation_id, before.generation_id);
    assert.is(next.changes_number, '2');
    const map_next = await cbtMap(daemon, 'vol');
    assert.is(map_next[3 * MiB / BLOCK_BYTES], 2, 'the write after take 1 is reported by take 2');
    assert.is(map_next[MiB / BLOCK_BYTES], 1);
    assert.is(map_next.filter((byte) => byte > 1).length, 1, 'one block changed since take 1');

    // A second clean restart in a row is as good as the first.
    await restarted(daemon, 'SIGTERM');
    assert.equal(await cbtinfo(daemon, 'vol'), next);
  } finally {
    await disposeDaemon(daemon);
  }
});

test('SIGKILL: a new generation whose reason says the stop was unclean; the volume still comes back', async () => {
  const { daemon } = await daemonWithHistory('persist-kill');
  try {
    // A clean restart first: a clean map is on disk, and the running daemon must have marked it in use.
    await restarted(daemon, 'SIGTERM');
    const before = await cbtinfo(daemon, 'vol');
    assert.is(before.changes_number, '1');
    await restarted(daemon, 'SIGKILL');
    const after = await cbtinfo(daemon, 'vol');
    assert.is.not(after.generation_id, before.generation_id);
    assert.is(after.changes_number, '0');
    assert.match(after.generation_reason as string, UNCLEAN);
    assert.match(daemon.logs, /change tracking starts a new generation: unclean stop/);
    assert.match((await status(daemon)).volumes[0]?.cbt.generation_reason as string, UNCLEAN);
    // The status line carries it too, for people.
    assert.match(await daemon.ok(['status']), /cbt_generation_reason="unclean stop/);
  } finally {
    await disposeDaemon(daemon);
  }
});

test('the file written while the daemon was down: new generation (a write with the mtime put back is caught by ctime)', async () => {
  const { daemon, volume } = await daemonWithHistory('persist-modified');
  try {
    const first = await cbtinfo(daemon, 'vol');
    assert.is((await daemon.stop('SIGTERM')).code, 0);
    const stats = statSync(volume, { bigint: true });
    // Rewrite a block with other bytes, then hide it from mtime (touch -r copies it to the nanosecond).
    const reference = daemon.file('mtime-reference');
    await runOk('touch', ['-r', volume, reference]);
    await runOk('dd', ['if=/dev/urandom', `of=${volume}`, 'bs=64K', 'count=1', `seek=${5 * MiB / BLOCK_BYTES}`, 'conv=notrunc', 'status=none']);
    await runOk('touch', ['-r', reference, volume]);
    assert.is(statSync(volume, { bigint: true }).mtimeNs, stats.mtimeNs, 'the mtime is back where it was');
    await daemon.start();
    const second = await cbtinfo(daemon, 'vol');
    assert.is.not(second.generation_id, first.generation_id);
    assert.is(second.generation_reason, 'file modified while the daemon was down (ctime)');

    // touch alone: mtime.
    assert.is((await daemon.stop('SIGTERM')).code, 0);
    const later = new Date(statSync(volume).mtimeMs + 5_000);
    utimesSync(volume, later, later);
    await daemon.start();
    const third = await cbtinfo(daemon, 'vol');
    assert.is.not(third.generation_id, second.generation_id);
    assert.is(third.generation_reason, 'file modified while the daemon was down (mtime)');

    // Grown: size.
    assert.is((await daemon.stop('SIGTERM')).code, 0);
    truncateSync(volume, 2 * VOLUME_BYTES);
    await daemon.start();
    const fourth = await cbtinfo(daemon, 'vol');
    assert.is(fourth.generation_reason, 'file modified while the daemon was down (size)');
    assert.is(Number(fourth.device_capacity), 2 * VOLUME_BYTES, 'bytes');

    // Left alone: kept.
    await restarted(daemon, 'SIGTERM');
    assert.equal(await cbtinfo(daemon, 'vol'), fourth);
  } finally {
    await disposeDaemon(daemon);
  }
});

test('a recorded volume that is gone is reported; the others come up; detach removes its record', async () => {
  const daemon = new TestDaemon(scratchDir('persist-gone'));
  await daemon.start();
  try {
    const kept = sparseFile(daemon.file('kept.img'), VOLUME_BYTES);
    const gone = sparseFile(daemon.file('gone.img'), VOLUME_BYTES);
    const other = sparseFile(daemon.file('other.img'), VOLUME_BYTES);
    await daemon.ok(['attach', '-d', gone]);
    await daemon.ok(['attach', '-d', kept, ...(HAS_NBD ? ['--nbd'] : [])]);
    await daemon.ok(['attach', '-d', other, '--name', 'detached']);
    await daemon.ok(['detach', '-d', 'detached']);
    assert.is((await daemon.stop('SIGTERM')).code, 0);
    rmSync(gone);
    await daemon.start();

    const state = await status(daemon);
    assert.equal(state.volumes.map((v) => v.name), ['kept.img'], 'the detached volume is not back');
    assert.is(state.restore_errors.length, 1);
    assert.is(state.restore_errors[0]?.name, 'gone.img');
    assert.is(state.restore_errors[0]?.code, 'ENOENT');
    assert.match(state.restore_errors[0]?.error as string, /does not exist/);
    assert.match(daemon.logs, /recorded volume not restored: volume .*gone\.img does not exist/);
    assert.match(await daemon.ok(['status']), /^restore_error=gone\.img path=\S+gone\.img frontends= code=ENOENT error="volume \S+ does not exist"$/m);

    // Kept until the user decides: another restart reports it again.
    await restarted(daemon, 'SIGTERM');
    assert.is((await status(daemon)).restore_errors.length, 1);
    // The file is back: its change tracking cannot be trusted (it was away), so a new generation.
    sparseFile(gone, VOLUME_BYTES);
    await restarted(daemon, 'SIGTERM');
    assert.equal((await status(daemon)).restore_errors, []);
    assert.match((await cbtinfo(daemon, 'gone.img')).generation_reason as string, /^the volume could not be attached \(ENOENT/);
    rmSync(gone);
    await restarted(daemon, 'SIGKILL');
    assert.is((await status(daemon)).restore_errors.length, 1);
    await daemon.ok(['detach', '-d', 'gone.img']);
    assert.equal((await status(daemon)).restore_errors, []);
    await restarted(daemon, 'SIGTERM');
    const final = await status(daemon);
    assert.equal(final.restore_errors, []);
    assert.equal(final.volumes.map((v) => v.name), ['kept.img']);
    const record = JSON.parse(readFileSync(path.join(daemon.state_dir, 'volumes.json'), 'utf8'));
    assert.equal(record.volumes, [{ path: kept, name: 'kept.img', frontends: HAS_NBD ? ['nbd'] : [] }]);
    // The saved CBT of the detached and forgotten volumes went with them.
    assert.is(readdirSync(path.join(daemon.state_dir, 'cbt')).filter((name) => name.endsWith('.cbt')).length, 1);
  } finally {
    await disposeDaemon(daemon);
  }
});

test('a damaged state file: one clear log line, a new generation, the daemon starts', async () => {
  const { daemon } = await daemonWithHistory('persist-corrupt');
  try {
    const before = await cbtinfo(daemon, 'vol');
    assert.is((await daemon.stop('SIGTERM')).code, 0);
    const cbt_dir = path.join(daemon.state_dir, 'cbt');
    const [file] = readdirSync(cbt_dir);
    const cbt_file = path.join(cbt_dir, file as string);
    assert.is(statSync(cbt_file).mode & 0o777, 0o600);
    // Truncated in the map: the header still parses.
    truncateSync(cbt_file, statSync(cbt_file).size - 1);
    await daemon.start();
    const after = await cbtinfo(daemon, 'vol');
    assert.is.not(after.generation_id, before.generation_id);
    assert.match(after.generation_reason as string, /^saved change tracking unreadable \(.*map holds \d+ bytes, the header says \d+ \(truncated\?\)\)$/);
    assert.is(daemon.logs.split('\n').filter((line) => line.includes('saved change tracking is unreadable')).length, 1);

    // One map byte flipped: the checksum.
    assert.is((await daemon.stop('SIGTERM')).code, 0);
    const bytes = readFileSync(cbt_file);
    bytes[bytes.length - 1] ^= 1;
    writeFileSync(cbt_file, bytes);
    await daemon.start();
    assert.match((await cbtinfo(daemon, 'vol')).generation_reason as string, /map bytes do not match their checksum/);

    // Garbage in the record of volumes: moved aside, said so, and the daemon still starts.
    assert.is((await daemon.stop('SIGTERM')).code, 0);
    writeFileSync(path.join(daemon.state_dir, 'volumes.json'), '{"format": "ublksnap-volumes", "version": 1, "volumes": [');
    await daemon.start();
    const state = await status(daemon);
    assert.equal(state.volumes, []);
    assert.match(state.restore_errors[0]?.error as string, /volumes\.json is unreadable \(.*\); moved to \S+volumes\.json\.corrupt/);
    assert.ok(statSync(path.join(daemon.state_dir, 'volumes.json.corrupt')).isFile());
  } finally {
    await disposeDaemon(daemon);
  }
});

test('config volumes keep their change tracking too; a recorded frontend that cannot come back is reported, the volume stays', async () => {
  const dir = scratchDir('persist-config');
  const daemon = new TestDaemon(dir);
  const from_config = sparseFile(daemon.file('conf.img'), VOLUME_BYTES);
  const recorded = sparseFile(daemon.file('rec.img'), VOLUME_BYTES);
  writeFileSync(daemon.file('config.json'), JSON.stringify({ volumes: [{ path: from_config, name: 'conf' }] }));
  const args = ['--config', daemon.file('config.json')];
  try {
    await daemon.start({ args });
    const first = await cbtinfo(daemon, 'conf');
    assert.is(first.generation_reason, 'first attach', 'a config volume new to the state dir');
    await takeAndDrop(daemon, 'conf');
    const before = await cbtinfo(daemon, 'conf');
    assert.is((await daemon.stop('SIGTERM')).code, 0);

    // A record as an earlier daemon with ublk would have left it.
    writeFileSync(path.join(daemon.state_dir, 'volumes.json'), JSON.stringify({
      format: 'ublksnap-volumes', version: 1, volumes: [{ path: recorded, name: 'rec', frontends: ['nbd', 'ublk'] }],
    }));
    await daemon.start({ args });
    assert.equal(await cbtinfo(daemon, 'conf'), before, 'the config volume continued its generation');
    const state = await status(daemon) as Awaited<ReturnType<typeof status>> & { frontends: { kind: string; details?: { available?: boolean } }[] };
    assert.equal(state.volumes.map((v) => v.name).sort(), ['conf', 'rec'], 'the recorded volume is attached');
    assert.is((await cbtinfo(daemon, 'rec')).generation_reason, 'state missing: no change tracking was saved for this volume');
    const ublk_available = state.frontends.some((frontend) => frontend.kind === 'ublk' && frontend.details?.available === true);
    if (ublk_available) {
      assert.equal(state.restore_errors, []);
    } else {
      assert.is(state.restore_errors.length, 1);
      assert.is(state.restore_errors[0]?.name, 'rec');
      assert.is(state.restore_errors[0]?.code, 'ENODEV', 'the frontend that is missing here');
    }
  } finally {
    await disposeDaemon(daemon);
  }
});

const loop_missing = missingPrerequisites({ root: true, tools: ['losetup', 'dd'] });
test('a loop block device: kept over a clean restart, new generation after a write to the device while down', async () => {
  if (loop_missing.length > 0) {
    console.log(`SKIP loop variant: ${loop_missing.join(', ')}`);
    return;
  }
  const dir = scratchDir('persist-loop-backing');
  const loop = makeLoopDevice(sparseFile(path.join(dir, 'backing.img'), VOLUME_BYTES));
  let daemon: TestDaemon | undefined;
  try {
    ({ daemon } = await daemonWithHistory('persist-loop', loop.device));
    const before = await cbtinfo(daemon, 'vol');
    await restarted(daemon, 'SIGTERM');
    assert.equal(await cbtinfo(daemon, 'vol'), before, 'the write counter did not move: kept');

    assert.is((await daemon.stop('SIGTERM')).code, 0);
    await runOk('dd', ['if=/dev/urandom', `of=${loop.device}`, 'bs=4K', 'count=1', 'seek=100', 'oflag=direct', 'status=none']);
    await daemon.start();
    const after = await cbtinfo(daemon, 'vol');
    assert.is.not(after.generation_id, before.generation_id);
    assert.is(after.generation_reason, 'block device written while the daemon was down (sectors-written counter)');
  } finally {
    await disposeDaemon(daemon);
    loop.detach();
  }
});

test.run();

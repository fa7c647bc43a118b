// Goal: `ublksnap backup` makes a full, then incremental backups of two
// volumes at once, and `restore` rebuilds every point byte for byte as the
// snapshot saw it: while writes hit the volumes between backups, and while
// one backup is still copying. Incrementals copy only what changed (at most
// the tracking blocks the writes touched), the backup files are sparse, and
// `verify` passes on the untouched directory.
// Method: a real daemon, two files as volumes (one full of random data, one
// sparse), seeded qemu-io writes over NBD. Before each backup the test
// hashes the volume files: with no write between the hash and the take,
// that is the image the snapshot serves. Then restore every point of both
// volumes (files, and once a loop device) and compare digests.

import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  allocatedBytes, applyWrites, backupJson, cli, cliOk, keyValues, randomWrites, sha256File, snapshotIds, touchedBytes, volumeUri,
  type BackupJson, type VolumeWrite,
} from '../lib/backup-fixture';
import { CLI_PATH, disposeDaemon, hardTimeout, runNode, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';
import { eventually, runOk } from '../lib/nbd-tools';
import { randomBytes, seededRandom } from '../lib/random';
import { gate, makeLoopDevice } from '../lib/system';
import { testSeed } from '../lib/workers';

const suite = gate(test, 'backup/chain', { root: true, tools: ['qemu-io', 'losetup'] });
hardTimeout(290_000, 'backup/chain');

const MiB = 1 << 20;
const A_BYTES = 40 * MiB;
const B_BYTES = 24 * MiB;
/** SMALL_PARAMS of test/lib/daemon.ts: tracking_block_minimum_shift=16. */
const CBT_BLOCK_BYTES = 64 * 1024;
const INCREMENTALS = 3;
/** The incremental that copies while the volumes are written: slow enough to write during it. */
const CONCURRENT_ROUND = 2;
const SLOW_RATE = '512K';

let daemon: TestDaemon;
let backups: string;
let a: string;
let b: string;
/** digests[volume][seq]: the volume as each backup's snapshot saw it. */
const digests: Record<string, Map<number, string>> = { a: new Map(), b: new Map() };

suite.before(async () => {
  daemon = await startDaemon('backup-chain');
  backups = daemon.file('backups');
  a = daemon.file('a.img');
  writeFileSync(a, randomBytes(seededRandom(testSeed('backup chain volume a')), A_BYTES));
  b = sparseFile(daemon.file('b.img'), B_BYTES);
  await cliOk(daemon, ['attach', '-d', a, '--name', 'a']);
  await cliOk(daemon, ['attach', '-d', b, '--name', 'b']);
  await applyWrites(volumeUri(daemon, 'b'), [{ offset: 3 * MiB, length_bytes: MiB, pattern: 0x5a }]);
});

suite.after(async () => {
  await disposeDaemon(daemon);
});

async function recordPoint(seq: number): Promise<void> {
  digests.a!.set(seq, await sha256File(a));
  digests.b!.set(seq, await sha256File(b));
}

function checkIncremental(result: BackupJson, base_seq: number, writes: Record<string, VolumeWrite[]>): void {
  for (const volume of result.volumes) {
    assert.is(volume.kind, 'incremental', `${volume.volume}: ${volume.full_reason}`);
    assert.is(volume.base_seq, base_seq);
    const bound = touchedBytes(writes[volume.volume] ?? [], CBT_BLOCK_BYTES);
    assert.ok(volume.copied_bytes <= bound, `${volume.volume}: copied ${volume.copied_bytes} > ${bound}, the tracking blocks the writes touched`);
    assert.ok(allocatedBytes(volume.data_file) <= bound, `${volume.volume}: the increment occupies ${allocatedBytes(volume.data_file)} > ${bound}`);
    if ((writes[volume.volume] ?? []).length > 0) assert.ok(volume.copied_bytes > 0, `${volume.volume}: written, yet nothing copied`);
  }
}

suite.test('full backup of two volumes: one snapshot, sparse files, no snapshot left', async () => {
  await recordPoint(1);
  const result = await backupJson(daemon, ['-d', 'a', '-d', 'b', '--dir', backups]);
  assert.is(result.seq, 1);
  assert.equal(result.volumes.map((volume) => [volume.volume, volume.kind, volume.seq]), [['a', 'full', 1], ['b', 'full', 1]]);
  assert.match(result.volumes[0]!.full_reason ?? '', /no complete backup/);
  assert.is(result.copied_bytes, A_BYTES + B_BYTES);
  const b_full = result.volumes[1]!;
  assert.is(b_full.written_bytes, MiB, 'only the data of the sparse volume is written');
  assert.ok(allocatedBytes(b_full.data_file) <= 2 * MiB, `the full backup of a sparse volume stays sparse (${allocatedBytes(b_full.data_file)} bytes)`);
  assert.equal(await snapshotIds(daemon), [], 'the backup destroyed its snapshot');
});

suite.test(`${INCREMENTALS} incrementals with writes in between, one of them copying while the volumes are written`, async () => {
  let pending_writes: Record<string, VolumeWrite[]> = { a: [], b: [] };
  for (let round = 1; round <= INCREMENTALS; round += 1) {
    const seq = round + 1;
    const writes = {
      a: randomWrites(testSeed(`backup chain a ${round}`), 12, A_BYTES, 256 * 1024),
      b: randomWrites(testSeed(`backup chain b ${round}`), 6, B_BYTES, 128 * 1024),
    };
    await applyWrites(volumeUri(daemon, 'a'), writes.a);
    await applyWrites(volumeUri(daemon, 'b'), writes.b);
    const since_base = { a: [...pending_writes.a!, ...writes.a], b: [...pending_writes.b!, ...writes.b] };
    pending_writes = { a: [], b: [] };
    await recordPoint(seq);
    if (round !== CONCURRENT_ROUND) {
      checkIncremental(await backupJson(daemon, ['-d', 'a', 'b', '--dir', backups]), seq - 1, since_base);
      continue;
    }
    // Write while the backup copies: its image must not see these writes; the next incremental must.
    let settled = false;
    const running = cli(daemon, ['backup', '-j', '-d', 'a', 'b', '--dir', backups, '--max-rate', SLOW_RATE]).finally(() => { settled = true; });
    const data_file = path.join(backups, 'a', `${String(seq).padStart(6, '0')}-incr.img`);
    assert.ok(await eventually(() => existsSync(data_file), 30_000), 'the backup started copying');
    const during = {
      a: randomWrites(testSeed(`backup chain a during ${round}`), 8, A_BYTES, 128 * 1024),
      b: randomWrites(testSeed(`backup chain b during ${round}`), 4, B_BYTES, 128 * 1024),
    };
    await applyWrites(volumeUri(daemon, 'a'), during.a);
    await applyWrites(volumeUri(daemon, 'b'), during.b);
    assert.not.ok(settled, 'the writes landed while the backup was still copying (else this round proves nothing)');
    const finished = await running;
    assert.is(finished.code, 0, finished.stderr);
    checkIncremental(JSON.parse(finished.stdout) as BackupJson, seq - 1, since_base);
    pending_writes = during;
  }
  assert.equal(await snapshotIds(daemon), []);
});

suite.test('every point of both volumes restores byte for byte, into files and onto a block device', async () => {
  for (const volume of ['a', 'b']) {
    for (const [seq, digest] of digests[volume]!) {
      const target = daemon.file(`restored-${volume}-${seq}.img`);
      const out = keyValues(await cliOk(daemon, ['restore', '--dir', backups, '-d', volume, '--to', target, '--point', String(seq)]));
      assert.is(out.chain, Array.from({ length: seq }, (_, index) => index + 1).join(','), 'the chain: the full backup and every incremental up to the point');
      assert.is(await sha256File(target), digest, `${volume} at point ${seq}`);
    }
  }
  // The newest point by default, onto a loop device over a file full of another pattern.
  const device_file = daemon.file('device.img');
  writeFileSync(device_file, Buffer.alloc(B_BYTES + MiB, 0xee));
  const loop = makeLoopDevice(device_file);
  try {
    const out = keyValues(await cliOk(daemon, ['restore', '--dir', backups, '-d', 'b', '--to', loop.device]));
    assert.is(out.target_kind, 'block');
    assert.is(out.point, String(INCREMENTALS + 1));
    // A device in use (here held by the daemon as a volume) is refused, never overwritten.
    await cliOk(daemon, ['attach', '-d', loop.device, '--name', 'held']);
    try {
      const refused = await cli(daemon, ['restore', '--dir', backups, '-d', 'b', '--to', loop.device]);
      assert.is(refused.code, 1);
      assert.match(refused.stderr, /^ublksnap: restore: cannot open \/dev\/loop\d+.*\(EBUSY\)\n$/);
    } finally {
      await cliOk(daemon, ['detach', '-d', 'held']);
    }
  } finally {
    loop.detach();
  }
  const restored = daemon.file('from-device.img');
  copyFileSync(device_file, restored);
  const whole = readFileSync(restored);
  writeFileSync(restored, whole.subarray(0, B_BYTES));
  assert.is(await sha256File(restored), digests.b!.get(INCREMENTALS + 1), 'the device holds the point, zeros included');
  assert.ok(whole.subarray(B_BYTES).every((byte) => byte === 0xee), 'nothing written past the volume size');
});

suite.test('verify passes on the untouched directory and lists no interrupted backup', async () => {
  const out = keyValues(await cliOk(daemon, ['verify', '--dir', backups]));
  assert.is(out.backups_checked, String(2 * (INCREMENTALS + 1)));
  assert.is(out.incomplete, '');
  const json = JSON.parse(await cliOk(daemon, ['verify', '-j', '--dir', backups, '-d', 'a', '--point', '2'])) as { backups_checked: number };
  assert.is(json.backups_checked, 2);
  const run = await runNode(CLI_PATH, ['verify', '--dir', backups, '-d', 'nosuch'], { cwd: daemon.dir });
  assert.is(run.code, 1);
  assert.match(run.stderr, /no complete backup of nosuch .*\(ENOENT\)/);
});

suite.test('a full backup file is a raw image that qemu-img reads directly', async () => {
  const full = path.join(backups, 'a', '000001-full.img');
  const info = JSON.parse(await runOk('qemu-img', ['info', '--output=json', '-f', 'raw', full])) as { 'virtual-size': number };
  assert.is(info['virtual-size'], A_BYTES);
});

test.run();

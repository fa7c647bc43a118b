// Goal: when the snapshot's difference storage overflows during a backup
// (a small -l and heavy writes), the backup fails with a clear message and
// ENOSPC, the volume is intact (every write landed), no snapshot is left,
// nothing of the run is complete, and the next backup works.
// Method: a real daemon, a volume of random data and a copy of it kept as
// the expected content; a full backup; then a slow full backup with -l 1M
// while qemu-io writes 8 MiB over the volume (and the same writes go to the
// expected copy); then a plain backup, a restore, and comparisons.

import { copyFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { applyWrites, backupJson, cli, cliOk, manifestsOf, sha256File, snapshotIds, startWithVolume, volumeUri } from '../lib/backup-fixture';
import { disposeDaemon, hardTimeout, type TestDaemon } from '../lib/daemon';
import { eventually } from '../lib/nbd-tools';
import { gate } from '../lib/system';

const suite = gate(test, 'backup/overflow', { tools: ['qemu-io'] });
hardTimeout(200_000, 'backup/overflow');

const MiB = 1 << 20;
const VOLUME_BYTES = 32 * MiB;
const HEAVY_WRITES = [{ offset: 0, length_bytes: 8 * MiB, pattern: 0x33 }, { offset: 20 * MiB, length_bytes: 4 * MiB, pattern: 0x44 }];

let daemon: TestDaemon;
let backups: string;
let volume: string;
let expected: string;

suite.before(async () => {
  ({ daemon, backups, volume } = await startWithVolume('overflow', VOLUME_BYTES));
  expected = daemon.file('expected.img');
  copyFileSync(volume, expected);
});

suite.after(async () => {
  await disposeDaemon(daemon);
});

suite.test('overflow mid-backup: ENOSPC and a clear message, volume intact, no snapshot, next backup works', async () => {
  await backupJson(daemon, ['-d', 'vol', '--dir', backups]);
  const running = cli(daemon, ['backup', '-d', 'vol', '--dir', backups, '--full', '-l', '1M', '--max-rate', '4M'], 60_000);
  assert.ok(await eventually(() => existsSync(path.join(backups, 'vol', '000002-full.img')), 30_000), 'the backup started copying');
  await applyWrites(volumeUri(daemon, 'vol'), HEAVY_WRITES);
  await applyWrites(expected, HEAVY_WRITES);
  const failed = await running;
  assert.is(failed.code, 1, `a backup whose snapshot overflowed must fail\n${failed.stdout}${failed.stderr}`);
  assert.match(failed.stderr, /ublksnap: backup: the snapshot broke during the backup of vol: its difference storage overflowed the limit of 1048576 bytes \(-l\).*\(ENOSPC\)/);
  assert.equal(await snapshotIds(daemon), [], 'the failed backup destroyed its snapshot');
  assert.equal(manifestsOf(backups, 'vol'), [1], 'nothing of the failed run is complete');
  assert.is(await sha256File(volume), await sha256File(expected), 'the volume holds every write: overflow broke the snapshot, not the volume');

  const next = await backupJson(daemon, ['-d', 'vol', '--dir', backups]);
  assert.is(next.volumes[0]!.kind, 'incremental');
  assert.is(next.volumes[0]!.base_seq, 1);
  const restored = daemon.file('restored.img');
  await cliOk(daemon, ['restore', '--dir', backups, '-d', 'vol', '--to', restored]);
  assert.is(await sha256File(restored), await sha256File(expected));
});

test.run();

// Goal: a newcomer's first incremental after a daemon restart is still
// incremental (issue 12's "done when"): after a clean stop and start the
// volume comes back by itself with its change tracking, and `ublksnap
// backup` copies only what changed; after SIGKILL the tracking cannot be
// trusted, and the backup is full and says why. Both restore byte for byte.
// Method: a real daemon restarted on its state dir (test/lib/daemon.ts),
// writes through the volume's NBD export (qemu-io), the real CLI.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { applyWrites, backupJson, cliOk, randomWrites, sha256File, startWithVolume, volumeUri } from '../lib/backup-fixture';
import { disposeDaemon, hardTimeout, type TestDaemon } from '../lib/daemon';
import { gate } from '../lib/system';
import { testSeed } from '../lib/workers';

const suite = gate(test, 'backup/restart', { tools: ['qemu-io'] });
hardTimeout(200_000, 'backup/restart');

const MiB = 1 << 20;
const VOLUME_BYTES = 32 * MiB;
const WRITE_MAX_BYTES = 128 * 1024;
/** The test daemon's tracking block (SMALL_PARAMS: tracking_block_minimum_shift=16). */
const CBT_BLOCK_BYTES = 64 * 1024;

let daemon: TestDaemon;
let backups: string;
let volume: string;

suite.before(async () => {
  ({ daemon, backups, volume } = await startWithVolume('restart', VOLUME_BYTES));
});

suite.after(async () => {
  await disposeDaemon(daemon);
});

async function writeAndBackUp(label: string): Promise<{ kind: string; full_reason: string | null; copied_bytes: number }> {
  await applyWrites(volumeUri(daemon, 'vol'), randomWrites(testSeed(label), 4, VOLUME_BYTES, WRITE_MAX_BYTES));
  const expected = await sha256File(volume);
  const summary = await backupJson(daemon, ['-d', 'vol', '--dir', backups]);
  const restored = daemon.file(`${label}.img`);
  await cliOk(daemon, ['restore', '--dir', backups, '-d', 'vol', '--to', restored]);
  assert.is(await sha256File(restored), expected, `${label}: the restored point equals the volume`);
  return summary.volumes[0]!;
}

suite.test('a clean restart keeps the next backup incremental; a SIGKILL makes it full, saying why', async () => {
  const first = await backupJson(daemon, ['-d', 'vol', '--dir', backups]);
  assert.is(first.volumes[0]!.kind, 'full');

  await daemon.stop('SIGTERM');
  await daemon.start();
  const after_clean = await writeAndBackUp('after clean restart');
  assert.is(after_clean.kind, 'incremental', `after a clean restart: ${JSON.stringify(after_clean)}`);
  // Each write touches at most WRITE_MAX_BYTES / CBT block + 2 tracking blocks.
  const bound = 4 * (WRITE_MAX_BYTES + 2 * CBT_BLOCK_BYTES);
  assert.ok(after_clean.copied_bytes <= bound, `copied ${after_clean.copied_bytes} bytes for 4 small writes (bound ${bound})`);

  await daemon.stop('SIGKILL');
  await daemon.start();
  const after_kill = await writeAndBackUp('after kill');
  assert.is(after_kill.kind, 'full', `after SIGKILL: ${JSON.stringify(after_kill)}`);
  assert.match(String(after_kill.full_reason), /generation/);
});

test.run();

// Goal: Ctrl-C in the middle of `ublksnap backup` leaves no snapshot behind,
// exits non-zero, leaves the partial backup without a manifest so that it
// is never a base, and the next run succeeds (incremental on the last
// complete backup, saying that it ignores the interrupted one).
// Method: a real daemon and a volume of random data; a full backup, writes,
// then a second full backup slowed by --max-rate and sent SIGINT once its
// data file holds data; then a plain run and a restore compared with the
// volume.

import { existsSync } from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  allocatedBytes, applyWrites, backupJson, cliOk, keyValues, manifestsOf, randomWrites, sha256File, snapshotIds, startWithVolume, volumeUri,
} from '../lib/backup-fixture';
import { CLI_PATH, disposeDaemon, hardTimeout, runNode, type TestDaemon } from '../lib/daemon';
import { eventually } from '../lib/nbd-tools';
import { gate } from '../lib/system';
import { testSeed } from '../lib/workers';

const suite = gate(test, 'backup/interrupt', { tools: ['qemu-io'] });
hardTimeout(200_000, 'backup/interrupt');

const MiB = 1 << 20;
const VOLUME_BYTES = 32 * MiB;
/** 32 MiB at 4 MiB/s: eight seconds to interrupt it in. */
const SLOW_RATE = '4M';

let daemon: TestDaemon;
let backups: string;
let volume: string;

suite.before(async () => {
  ({ daemon, backups, volume } = await startWithVolume('interrupt', VOLUME_BYTES));
});

suite.after(async () => {
  await disposeDaemon(daemon);
});

suite.test('Ctrl-C mid-backup: no snapshot left, exit non-zero, no manifest; the next run is incremental on the last complete one', async () => {
  const first = await backupJson(daemon, ['-d', 'vol', '--dir', backups]);
  assert.is(first.volumes[0]!.kind, 'full');
  await applyWrites(volumeUri(daemon, 'vol'), randomWrites(testSeed('backup interrupt writes'), 10, VOLUME_BYTES, 256 * 1024));

  let child: ChildProcess | undefined;
  const running = runNode(CLI_PATH, ['--socket', daemon.socket, 'backup', '-d', 'vol', '--dir', backups, '--full', '--max-rate', SLOW_RATE],
    { cwd: daemon.dir, timeout_ms: 60_000, onSpawn: (spawned) => { child = spawned; } });
  const partial = path.join(backups, 'vol', '000002-full.img');
  assert.ok(await eventually(() => existsSync(partial) && allocatedBytes(partial) > 0, 30_000), 'the backup copied something');
  child!.kill('SIGINT');
  const interrupted = await running;
  assert.is(interrupted.code, 1, `exit status after Ctrl-C: ${interrupted.code}\n${interrupted.stderr}`);
  assert.match(interrupted.stderr, /ublksnap: backup: interrupted \(ECANCELED\)/);
  assert.is(interrupted.stdout, '', 'no summary for a backup that did not complete');
  assert.equal(await snapshotIds(daemon), [], 'the interrupted backup destroyed its snapshot');
  assert.equal(manifestsOf(backups, 'vol'), [1], 'the partial backup has no manifest');
  assert.ok(allocatedBytes(partial) < VOLUME_BYTES, 'it was really interrupted before the end');

  const expected = await sha256File(volume);
  const next = await runNode(CLI_PATH, ['--socket', daemon.socket, 'backup', '-j', '-d', 'vol', '--dir', backups], { cwd: daemon.dir, timeout_ms: 60_000 });
  assert.is(next.code, 0, next.stderr);
  assert.match(next.stderr, /ignoring interrupted backup 000002/);
  const summary = JSON.parse(next.stdout) as { seq: number; volumes: Array<{ kind: string; base_seq: number }> };
  assert.is(summary.seq, 3, 'a new number: the interrupted one is never reused');
  assert.is(summary.volumes[0]!.kind, 'incremental');
  assert.is(summary.volumes[0]!.base_seq, 1, 'based on the last complete backup, not the interrupted one');
  const restored = daemon.file('restored.img');
  await cliOk(daemon, ['restore', '--dir', backups, '-d', 'vol', '--to', restored]);
  assert.is(await sha256File(restored), expected);
  const verified = keyValues(await cliOk(daemon, ['verify', '--dir', backups]));
  assert.is(verified.incomplete, path.join(backups, 'vol', '000002'), 'verify lists the interrupted backup');
  assert.equal(await snapshotIds(daemon), []);
});

test.run();

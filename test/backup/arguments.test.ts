// Goal: the backup commands validate what they are given and answer with
// one clear line and an errno name, leave no snapshot behind when they
// refuse, and never disturb the daemon: missing or malformed options, an
// unknown volume, a volume busy in another snapshot, a backup directory
// with a broken manifest, an impossible restore target, a bad export URI.
// Method: a real daemon and the real CLI; each case checks the exit
// status, the stderr line, an empty stdout, and that no snapshot remains.

import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { backupJson, cli, cliOk, snapshotIds } from '../lib/backup-fixture';
import { disposeDaemon, hardTimeout, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';

hardTimeout(200_000, 'backup/arguments');

const MiB = 1 << 20;
let daemon: TestDaemon;
let backups: string;

test.before(async () => {
  daemon = await startDaemon('backup-arguments');
  backups = daemon.file('backups');
  await cliOk(daemon, ['attach', '-d', sparseFile(daemon.file('vol.img'), 4 * MiB), '--name', 'vol']);
});

test.after(async () => {
  await disposeDaemon(daemon);
});

async function refused(args: string[], pattern: RegExp): Promise<void> {
  const result = await cli(daemon, args);
  assert.is(result.code, 1, `ublksnap ${args.join(' ')} must fail: ${result.stdout}${result.stderr}`);
  assert.is(result.stdout, '', 'nothing on stdout');
  const lines = result.stderr.trimEnd().split('\n');
  assert.match(lines[lines.length - 1]!, pattern);
  assert.equal(await snapshotIds(daemon), [], 'no snapshot left behind');
}

test('backup: missing and malformed options', async () => {
  await refused(['backup', '--dir', backups], /^ublksnap: backup: -d is required.*\(EINVAL\)$/);
  await refused(['backup', '-d', 'vol'], /^ublksnap: backup: --dir is required.*\(EINVAL\)$/);
  await refused(['backup', '-d', 'vol', '--dir', backups, '-l', 'lots'], /^ublksnap: backup: -l: expected a size.*\(EINVAL\)$/);
  await refused(['backup', '-d', 'vol', '--dir', backups, '--max-rate', '-3'], /^ublksnap: backup: .*max-rate.*\(EINVAL\)$/);
  await refused(['backup', '-d', 'vol', '--dir', backups, '--bogus'], /^ublksnap: backup: unknown option --bogus \(EINVAL\)$/);
});

test('backup: an unknown volume, a volume named twice, a volume busy in another snapshot', async () => {
  await refused(['backup', '-d', 'nosuch', '--dir', backups], /^ublksnap: backup: no attached volume nosuch .*\(ESRCH\)$/);
  await refused(['backup', '-d', 'vol', 'vol', '--dir', backups], /^ublksnap: backup: volume vol named twice \(EINVAL\)$/);
  const id = (await cliOk(daemon, ['snapshot_create', '-d', 'vol', '-f', daemon.dir, '-l', '16M'])).trim();
  try {
    const result = await cli(daemon, ['backup', '-d', 'vol', '--dir', backups]);
    assert.is(result.code, 1);
    assert.match(result.stderr, /^ublksnap: backup: .*\(EBUSY\)\n$/);
    assert.equal(await snapshotIds(daemon), [id], 'only the other snapshot remains');
  } finally {
    await cliOk(daemon, ['snapshot_destroy', '-i', id]);
  }
});

test('backup, verify: a broken manifest is named, before any snapshot is made', async () => {
  const broken = daemon.file('broken');
  mkdirSync(path.join(broken, 'vol'), { recursive: true });
  writeFileSync(path.join(broken, 'vol', '000001.json'), '{"format": "ublksnap-backup", "format_ver');
  await refused(['backup', '-d', 'vol', '--dir', broken], /^ublksnap: backup: .*broken\/vol\/000001\.json: not JSON.*\(EINVAL\)$/);
  writeFileSync(path.join(broken, 'vol', '000001.json'), '{"format": "ublksnap-backup", "format_version": 99}');
  await refused(['verify', '--dir', broken], /^ublksnap: verify: .*000001\.json: not a valid backup manifest: format_version 99 .*\(EINVAL\)$/);
});

test('restore and verify: bad options, nothing to restore, impossible targets', async () => {
  await backupJson(daemon, ['-d', 'vol', '--dir', backups]);
  await refused(['restore', '--dir', backups, '-d', 'vol'], /^ublksnap: restore: --to is required.*\(EINVAL\)$/);
  await refused(['restore', '--dir', backups, '-d', 'vol', '--to', daemon.file('r.img'), '--point', 'last'], /^ublksnap: restore: --point: expected a whole number.*\(EINVAL\)$/);
  await refused(['restore', '--dir', backups, '-d', 'vol', '--to', daemon.file('r.img'), '--point', '7'], /^ublksnap: restore: no complete backup 000007 of vol \(complete: 000001\) \(ENOENT\)$/);
  await refused(['restore', '--dir', backups, '-d', 'other', '--to', daemon.file('r.img')], /^ublksnap: restore: no complete backup of other .*\(ENOENT\)$/);
  await refused(['restore', '--dir', backups, '-d', 'vol', '--to', daemon.dir], /^ublksnap: restore: .* is neither a regular file nor a block device \(EINVAL\)$/);
  await refused(['restore', '--dir', backups, '-d', 'vol', '--to', daemon.file('no/such/dir/r.img')], /^ublksnap: restore: cannot open .*\(ENOENT\)$/);
  await refused(['verify', '--dir', daemon.file('nowhere')], /^ublksnap: verify: no backup directory .*\(ENOENT\)$/);
  await refused(['verify', '--dir', backups, '-d', 'vol', '--against-export', 'http://example.com/vol'], /^ublksnap: verify: --against-export: expected an NBD URI.*\(EINVAL\)$/);
  await refused(['verify', '--dir', backups, '--against-export', 'nbd+unix:///vol?socket=/nowhere'], /^ublksnap: verify: --against-export needs -d VOLUME.*\(EINVAL\)$/);
  await refused(['verify', '--dir', backups, '-d', 'vol', '--against-export', `nbd+unix:///nosuch?socket=${daemon.nbd_socket}`], /^ublksnap: verify: .*no export "nosuch".*\(EINVAL\)$/);
  await refused(['verify', '--dir', backups, '-d', 'vol', '--against-export', 'nbd+unix:///vol?socket=/nowhere.sock'], /^ublksnap: verify: .*cannot connect.*\(ENOENT\)$/);
});

test('the daemon is unharmed', async () => {
  assert.match(await cliOk(daemon, ['version']), /^\d+\.\d+\.\d+\.\d+\n$/);
  const again = await backupJson(daemon, ['-d', 'vol', '--dir', backups]);
  assert.is(again.volumes[0]!.kind, 'incremental');
});

test.run();

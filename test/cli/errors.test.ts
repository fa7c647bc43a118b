// Goal: every error path of the CLI ends with a non-zero exit status, an
// empty stdout and exactly one line on stderr of the form
// `ublksnap: COMMAND: what went wrong (ERRNO_NAME)`, and the daemon keeps
// serving afterwards (ACCEPTANCE scenario 12, bad control input).
// Method: a spawned daemon with two attached volumes; each case runs the
// CLI into one refusal (unknown snapshot, adding twice, busy volume, taking
// twice, destroying twice, bad sizes, missing paths, diff storage on a
// snapshotted volume, bad options) and checks the line and the code; a
// final snapshot cycle proves nothing is stuck.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CLI_PATH, disposeDaemon, hardTimeout, runNode, scratchDir, sparseFile, startDaemon, type RunResult, type TestDaemon,
} from '../lib/daemon';

const MiB = 1 << 20;
const UNKNOWN_ID = '0badc0de-0000-4000-8000-000000000000';
let daemon: TestDaemon;

hardTimeout(240_000, 'cli/errors');

/** Asserts the error contract and returns the one stderr line. */
function refused(result: RunResult, command: string, code: string, message?: RegExp): string {
  assert.is.not(result.code, 0, `expected a failure, got exit 0 with ${result.stdout}`);
  assert.is(result.stdout, '', 'nothing on stdout');
  const lines = result.stderr.split('\n').filter((line) => line !== '');
  assert.is(lines.length, 1, `exactly one line on stderr, got: ${result.stderr}`);
  const line = lines[0] as string;
  assert.match(line, new RegExp(`^ublksnap: ${command}: .+ \\(${code}\\)$`), line);
  if (message) assert.match(line, message);
  return line;
}

test.before(async () => {
  daemon = await startDaemon('cli-errors');
  sparseFile(daemon.file('a.img'), 8 * MiB);
  sparseFile(daemon.file('b.img'), 8 * MiB);
  await daemon.ok(['attach', '-d', 'a.img', '--name', 'a']);
  await daemon.ok(['attach', '-d', 'b.img', '--name', 'b']);
});

test.after(async () => {
  await disposeDaemon(daemon);
});

test('unknown snapshot: ESRCH from take, destroy, add, waitevent, watcher', async () => {
  for (const command of ['snapshot_take', 'snapshot_destroy', 'snapshot_watcher']) {
    refused(await daemon.cli([command, '-i', UNKNOWN_ID]), command, 'ESRCH', new RegExp(UNKNOWN_ID));
  }
  refused(await daemon.cli(['snapshot_add', '-i', UNKNOWN_ID, '-d', 'a']), 'snapshot_add', 'ESRCH');
  // Upstream answers an unknown id with a result, and exit 0.
  const waited = await daemon.cli(['snapshot_waitevent', '-i', UNKNOWN_ID, '-t', '10']);
  assert.equal([waited.code, waited.stdout, waited.stderr], [0, 'result=not found\n', '']);
});

test('unknown volume: ESRCH; a relative path with a slash is resolved by the CLI', async () => {
  refused(await daemon.cli(['cbtinfo', '-d', 'nope']), 'cbtinfo', 'ESRCH', /nope/);
  refused(await daemon.cli(['cbtinfo', '-d', './nope.img']), 'cbtinfo', 'ESRCH', new RegExp(daemon.file('nope.img')));
  refused(await daemon.cli(['snapshot_info', '-d', 'nope']), 'snapshot_info', 'ESRCH');
  refused(await daemon.cli(['detach', '-d', 'nope']), 'detach', 'ESRCH');
});

test('attach: twice (exit 0 with a note, as upstream; EALREADY under another name), a taken name (EEXIST), missing path (ENOENT), a directory (EINVAL), bad names', async () => {
  const twice = await daemon.cli(['attach', '-d', 'a.img']);
  assert.equal([twice.code, twice.stdout, twice.stderr], [0, 'name=a\n', `ublksnap: attach: ${daemon.file('a.img')} was already attached as a\n`]);
  refused(await daemon.cli(['attach', '-d', 'a.img', '--name', 'other']), 'attach', 'EALREADY', /already attached as a, not other/);
  sparseFile(daemon.file('c.img'), MiB);
  refused(await daemon.cli(['attach', '-d', 'c.img', '--name', 'a']), 'attach', 'EEXIST');
  refused(await daemon.cli(['attach', '-d', 'missing.img']), 'attach', 'ENOENT', /missing\.img/);
  refused(await daemon.cli(['attach', '-d', daemon.dir]), 'attach', 'EINVAL');
  refused(await daemon.cli(['attach', '-d', 'c.img', '--name', 'x@y']), 'attach', 'EINVAL', /--name: expected 1-64 of letters/);
  refused(await daemon.cli(['attach', '-d', 'c.img', '--name', 'n'.repeat(65)]), 'attach', 'EINVAL');
  refused(await daemon.cli(['attach']), 'attach', 'EINVAL', /-d is required/);
  refused(await daemon.cli(['attach', '-d', 'c.img', '--ublk']), 'attach', 'ENODEV', /ublk/);
  // The refused --ublk attach attached nothing.
  const volumes = JSON.parse(await daemon.ok(['status', '-j'])).volumes.map((v: { name: string }) => v.name);
  assert.equal(volumes, ['a', 'b']);
});

test('snapshot rules: adding twice, busy volume, taking twice, destroying twice, storage on a snapshotted volume', async () => {
  const id = (await daemon.ok(['snapshot_create', '-d', 'a', '-f', daemon.dir, '-l', '16M'])).trim();
  refused(await daemon.cli(['snapshot_add', '-i', id, '-d', 'a']), 'snapshot_add', 'EALREADY');
  // a belongs to snapshot id: another snapshot may not take it.
  refused(await daemon.cli(['snapshot_create', '-d', 'a', '-f', daemon.dir, '-l', '16M']), 'snapshot_create', 'EBUSY', new RegExp(id));
  refused(await daemon.cli(['detach', '-d', 'a']), 'detach', 'EBUSY');
  // The difference storage may not live on a volume of the snapshot (it would copy itself).
  refused(await daemon.cli(['snapshot_create', '-d', 'b', '-f', daemon.file('b.img'), '-l', '16M']), 'snapshot_create', 'EBUSY', /b\.img is the attached volume b/);
  refused(await daemon.cli(['snapshot_create', '-d', 'b', '-f', daemon.file('a.img'), '-l', '16M']), 'snapshot_create', 'EBUSY', /a\.img is the attached volume a/);
  await daemon.ok(['snapshot_take', '-i', id]);
  refused(await daemon.cli(['snapshot_take', '-i', id]), 'snapshot_take', 'EALREADY');
  refused(await daemon.cli(['snapshot_add', '-i', id, '-d', 'b']), 'snapshot_add', 'EPERM');
  await daemon.ok(['snapshot_destroy', '-i', id]);
  refused(await daemon.cli(['snapshot_destroy', '-i', id]), 'snapshot_destroy', 'ESRCH');
  refused(await daemon.cli(['snapshot_take', '-i', id]), 'snapshot_take', 'ESRCH');
});

test('bad sizes: -l refused by the CLI with an example, or by the daemon', async () => {
  for (const limit of ['abc', '', '-1', '1.5', '12Q', '1e9', '99999999999999999', '9999999T', '10 M B']) {
    refused(await daemon.cli(['snapshot_create', '-d', 'a', '-f', daemon.dir, '-l', limit]), 'snapshot_create', 'EINVAL');
  }
  refused(await daemon.cli(['snapshot_create', '-d', 'a', '-f', daemon.dir]), 'snapshot_create', 'EINVAL', /-l is required/);
  // Parsed fine, refused by the engine: less than a sector.
  refused(await daemon.cli(['snapshot_create', '-d', 'a', '-f', daemon.dir, '-l', '100']), 'snapshot_create', 'EINVAL', /limit/);
  refused(await daemon.cli(['snapshot_waitevent', '-i', UNKNOWN_ID, '-t', 'soon']), 'snapshot_waitevent', 'EINVAL', /-t/);
  refused(await daemon.cli(['snapshot_waitevent', '-i', UNKNOWN_ID, '-t', '3600001']), 'snapshot_waitevent', 'EINVAL', /3600000/);
  refused(await daemon.cli(['markdirtyblock', '-d', 'a', '-r', '0:0']), 'markdirtyblock', 'EINVAL', /COUNT/);
  refused(await daemon.cli(['markdirtyblock', '-d', 'a', '-r', '12']), 'markdirtyblock', 'EINVAL', /SECTOR:COUNT/);
  refused(await daemon.cli(['markdirtyblock', '-d', 'a', '-r', '16384:1']), 'markdirtyblock', 'ERANGE');
  // Nothing was created by any of these.
  assert.is(await daemon.ok(['snapshot_collect']), '');
});

test('missing paths: diff storage in a directory that does not exist', async () => {
  refused(await daemon.cli(['snapshot_create', '-d', 'a', '-f', daemon.file('no/such/dir/diff'), '-l', '16M']), 'snapshot_create', 'ENOENT');
  refused(await daemon.cli(['readcbtmap', '-d', 'a', '-f', daemon.file('no/such/dir/map')]), 'readcbtmap', 'ENOENT');
  assert.is(await daemon.ok(['snapshot_collect']), '');
});

test('bad options: unknown option, stray argument, bad id, missing value, unknown field', async () => {
  refused(await daemon.cli(['status', '--frobnicate']), 'status', 'EINVAL', /frobnicate/);
  refused(await daemon.cli(['snapshot_take', '-i', UNKNOWN_ID, 'extra']), 'snapshot_take', 'EINVAL', /extra/);
  refused(await daemon.cli(['snapshot_take', '-i', 'not-a-uuid']), 'snapshot_take', 'EINVAL', /UUID/);
  refused(await daemon.cli(['snapshot_take', '-i']), 'snapshot_take', 'EINVAL');
  refused(await daemon.cli(['snapshot_take']), 'snapshot_take', 'EINVAL', /-i is required/);
  refused(await daemon.cli(['snapshot_info', '-d', 'a', '-f', 'colour']), 'snapshot_info', 'EINVAL', /colour/);
});

test('unknown command: exit 1 (as upstream); no command: exit 2; no daemon: ENOENT naming the socket', async () => {
  const unknown = await runNode(CLI_PATH, ['frobnicate']);
  assert.is(unknown.code, 1);
  assert.match(unknown.stderr, /^ublksnap: unknown command "frobnicate" \(see 'ublksnap --help'\) \(EINVAL\)\n$/);
  const none = await runNode(CLI_PATH, []);
  assert.is(none.code, 2);
  assert.match(none.stderr, /^Usage: ublksnap/);
  const dir = scratchDir('no-daemon');
  const missing = await runNode(CLI_PATH, ['version'], { env: { UBLKSNAP_SOCKET: `${dir}/none.sock` } });
  refused(missing, 'version', 'ENOENT', new RegExp(`${dir}/none\\.sock`));
});

test('the daemon still serves after all of it', async () => {
  const id = (await daemon.ok(['snapshot_create', '-d', 'a', 'b', '-f', daemon.dir, '-l', '16M'])).trim();
  await daemon.ok(['snapshot_take', '-i', id]);
  await daemon.ok(['snapshot_destroy', '-i', id]);
  assert.ok(daemon.running);
});

test.run();

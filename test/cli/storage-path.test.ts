// Goal: `snapshot_create -f PATH` with a PATH that does not exist does what
// a new user means, and says what it chose: `-f diffdir/` (a trailing '/')
// makes a directory and puts an unnamed temporary file in it; `-f diffdir`
// makes a storage file and says so on stderr, while stdout stays the bare id
// scripts capture; -j names the kind; an existing file given with a '/' is
// refused instead of being used as a file.
// Method: a real daemon and the real CLI in a scratch dir; the filesystem is
// checked with stat after each call (a directory that stays after destroy,
// a file that goes).

import { existsSync, statSync, writeFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { disposeDaemon, hardTimeout, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';

const MiB = 1 << 20;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
let daemon: TestDaemon;

hardTimeout(120_000, 'cli/storage-path');

test.before(async () => {
  daemon = await startDaemon('cli-storage-path');
  sparseFile(daemon.file('vol.img'), 8 * MiB);
  await daemon.ok(['attach', '-d', 'vol.img']);
});

test.after(async () => {
  await disposeDaemon(daemon);
});

test('-f missing/ (trailing slash) creates a directory and a temporary file in it', async () => {
  const result = await daemon.cli(['snapshot_create', '-d', 'vol.img', '-f', 'diffdir/', '-l', '16M']);
  assert.is(result.code, 0, result.stderr);
  const id = result.stdout.trim();
  assert.match(id, UUID, 'stdout is the bare id');
  assert.ok(statSync(daemon.file('diffdir')).isDirectory(), 'diffdir is a directory');
  assert.match(result.stderr, /^ublksnap: snapshot_create: created directory .*\/diffdir for the difference storage/);
  const status = JSON.parse(await daemon.ok(['status', '-j']));
  assert.is(status.snapshots[0].storage.kind, 'tmpfile');
  await daemon.ok(['snapshot_destroy', '-i', id]);
  assert.ok(statSync(daemon.file('diffdir')).isDirectory(), 'the directory stays after destroy');
  // The user's next step from the issue: it is a directory, so this works as one.
  writeFileSync(daemon.file('diffdir/note'), 'x');
});

test('-f missing (no slash) creates a file, says so on stderr; -j names the kind', async () => {
  const result = await daemon.cli(['snapshot_create', '-d', 'vol.img', '-f', 'diff.file', '-l', '16M']);
  assert.is(result.code, 0, result.stderr);
  assert.match(result.stdout.trim(), UUID);
  assert.match(result.stderr, /created difference storage file .*\/diff\.file \(removed at destroy; end the path with \/ for a directory\)/);
  assert.ok(statSync(daemon.file('diff.file')).isFile());
  await daemon.ok(['snapshot_destroy', '-i', result.stdout.trim()]);
  assert.not.ok(existsSync(daemon.file('diff.file')), 'a file the snapshot made is removed at destroy');

  const json = JSON.parse(await daemon.ok(['snapshot_create', '-d', 'vol.img', '-f', daemon.dir, '-l', '16M', '-j']));
  assert.equal(json, { id: json.id, storage: daemon.dir, storage_kind: 'tmpfile', storage_created: false });
  await daemon.ok(['snapshot_destroy', '-i', json.id]);
});

test('an existing directory says nothing on stderr; a file given with a trailing slash is refused', async () => {
  const quiet = await daemon.cli(['snapshot_create', '-d', 'vol.img', '-f', `${daemon.dir}/`, '-l', '16M']);
  assert.is(quiet.code, 0, quiet.stderr);
  assert.is(quiet.stderr, '', 'nothing was created: nothing to say');
  await daemon.ok(['snapshot_destroy', '-i', quiet.stdout.trim()]);

  writeFileSync(daemon.file('plain'), '');
  const refused = await daemon.cli(['snapshot_create', '-d', 'vol.img', '-f', 'plain/', '-l', '16M']);
  assert.is(refused.code, 1);
  assert.match(refused.stderr, /^ublksnap: snapshot_create: difference storage .*plain\/ ends in '\/' \(a directory\) but .*plain is not a directory \(EINVAL\)\n$/);
});

test.run();

// Goal: the NBD tools make a correct incremental backup from the change
// context: a full copy of the image with nbdcopy, scattered writes, a
// second take, and an incremental that copies only the extents `nbdinfo
// --map=ublksnap:changed-since:K` reports (dd from the image exposed by
// nbdfuse) yields exactly the second image, copying far less than the
// whole volume. (docs/nbd.md's recipe itself, as written, runs in
// test/docs/recipes.test.ts; this file checks the method on the in-process
// engine with many random writes.)
// Method: the same steps as separate tools against the engine's NBD
// server; qemu-img compare checks the result against the image export.

import { readFile, stat } from 'node:fs/promises';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { seededRandom } from '../lib/engine-fixture';
import { fuseExport } from '../lib/nbd-block';
import { nbdFixtureHooks } from '../lib/nbd-fixture';
import { run, runOk } from '../lib/nbd-tools';
import { gate } from '../lib/system';
import { testSeed } from '../lib/workers';

const suite = gate(test, 'nbd/incremental', {
  root: true,
  tools: ['nbdcopy', 'nbdinfo', 'nbdfuse', 'fusermount3', 'dd', 'qemu-img', 'qemu-io'],
  paths: ['/dev/fuse'],
});
const VOLUME_BYTES = 32 * 1024 * 1024;

const fixture = nbdFixtureHooks(suite, { volumes: { vol: VOLUME_BYTES } });

suite.test('full backup, then an incremental from the change context equals the new image', async () => {
  const seed = testSeed('incremental backup');
  const random = seededRandom(seed);
  const source = fixture.file('initial.img', 0);
  await runOk('dd', ['if=/dev/urandom', `of=${source}`, 'bs=1M', `count=${VOLUME_BYTES / (1024 * 1024)}`, 'status=none']);
  await runOk('nbdcopy', [source, fixture.uri('vol')]);

  // Full backup.
  const first = await fixture.snapshot(['vol']);
  const recorded = fixture.engine.cbtInfo('vol');
  const backup = fixture.file('backup.img', 0);
  await runOk('nbdcopy', [fixture.uri(`vol@${first}`), backup]);
  await fixture.engine.snapshotDestroy(first);

  // Life goes on: scattered writes over NBD.
  const commands: string[] = [];
  for (let i = 0; i < 25; i += 1) {
    const length = 1 + Math.floor(random() * 200_000);
    const offset = Math.floor(random() * (VOLUME_BYTES - length));
    commands.push('-c', `write -P ${1 + Math.floor(random() * 254)} ${offset} ${length}`);
  }
  await runOk('qemu-io', ['-f', 'raw', ...commands, fixture.uri('vol')]);

  // Incremental.
  const second = await fixture.snapshot(['vol']);
  const now = fixture.engine.cbtInfo('vol');
  assert.is(now.generation_id, recorded.generation_id, 'same CBT generation: an incremental is possible');
  const uri = fixture.uri(`vol@${second}`);
  const fuse = await fuseExport(uri, fixture.dir, { readonly: true });
  let copied_bytes = 0;
  try {
    const rows = (await runOk('nbdinfo', [`--map=ublksnap:changed-since:${recorded.changes_number}`, uri])).trim().split('\n');
    for (const row of rows) {
      const [offset, length, status] = row.trim().split(/\s+/);
      if (status !== '1') continue;
      await runOk('dd', [`if=${fuse.file}`, `of=${backup}`, 'bs=64K', 'iflag=skip_bytes,count_bytes', 'oflag=seek_bytes',
        `skip=${offset}`, `seek=${offset}`, `count=${length}`, 'conv=notrunc', 'status=none']);
      copied_bytes += Number(length);
    }
  } finally {
    await fuse.stop();
  }
  assert.ok(copied_bytes > 0, 'something changed');
  assert.ok(copied_bytes < VOLUME_BYTES / 2, `the incremental copied ${copied_bytes} of ${VOLUME_BYTES} bytes`);
  assert.is((await stat(backup)).size, VOLUME_BYTES);
  const compare = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', backup, uri]);
  assert.is(compare.code, 0, `backup vs image: ${compare.stdout}${compare.stderr}`);
  const initial = await readFile(source);
  const restored = await readFile(backup);
  assert.not.ok(initial.equals(restored), 'the backup moved on from the full copy');
  await fixture.engine.snapshotDestroy(second);
});

test.run();

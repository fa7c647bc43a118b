// Goal: openTmpfile gives a diff storage on a real ext4 that holds data
// durably while open (fdatasync), with and without O_DIRECT, never appears
// in its directory, and gives its blocks back when closed.
// Method: mkfs.ext4 on a loop device over a 64 MiB sparse file, mounted in
// a temp dir; the storage directory is a fresh subdirectory (the mount's
// root holds lost+found); free space is read with statfs before, during
// and after.

import { closeSync, mkdirSync, openSync, readdirSync, readSync, statfsSync, truncateSync, writeSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DIRECT_IO_ALIGNMENT_BYTES, alignedView, fdatasync, openTmpfile } from '../../src/native/index';
import { gate, makeLoopDevice, mkfsExt4AndMount, tempDir, type LoopDevice, type Mount, type TempDir } from '../lib/system';

const VOLUME_BYTES = 64 << 20;
const DATA_BYTES = 8 << 20;
const PATTERN_MULTIPLIER = 131;
/** Free space may move by a few blocks of metadata (journal, bitmaps). */
const FREE_SLACK_BYTES = 256 << 10;

function freeBytes(dir: string): number {
  const status = statfsSync(dir);
  return status.bfree * status.bsize;
}

function patterned(view: Uint8Array): Uint8Array {
  for (let index = 0; index < view.length; index += 1) view[index] = (index * PATTERN_MULTIPLIER) & 0xff;
  return view;
}

const tmpfile = suite('openTmpfile on ext4');
const guard = gate(tmpfile, 'openTmpfile on ext4', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount', 'umount'] });
let work: TempDir | undefined;
let loop: LoopDevice | undefined;
let mount: Mount | undefined;
let storage_dir = '';

guard.before(() => {
  work = tempDir('tmpfile-ext4');
  const image = path.join(work.path, 'volume.img');
  closeSync(openSync(image, 'w'));
  truncateSync(image, VOLUME_BYTES);
  loop = makeLoopDevice(image);
  mount = mkfsExt4AndMount(loop.device);
  storage_dir = path.join(mount.path, 'storage');
  mkdirSync(storage_dir);
});
guard.after(() => {
  mount?.unmount();
  loop?.detach();
  work?.remove();
});

for (const direct of [false, true]) {
  guard.test(`direct: ${direct} — data round-trips, the directory stays empty, close frees the blocks`, () => {
    const free_before_bytes = freeBytes(storage_dir);
    const fd = openTmpfile(storage_dir, { direct });
    try {
      const source = patterned(alignedView(new SharedArrayBuffer(DATA_BYTES + DIRECT_IO_ALIGNMENT_BYTES), DATA_BYTES));
      assert.is(writeSync(fd, source, 0, DATA_BYTES, 0), DATA_BYTES);
      fdatasync(fd);
      assert.ok(freeBytes(storage_dir) <= free_before_bytes - DATA_BYTES, 'the data takes room');
      assert.equal(readdirSync(storage_dir), []);

      const target = alignedView(new SharedArrayBuffer(DATA_BYTES + DIRECT_IO_ALIGNMENT_BYTES), DATA_BYTES);
      assert.is(readSync(fd, target, 0, DATA_BYTES, 0), DATA_BYTES);
      assert.ok(Buffer.compare(source, target) === 0, 'read back what was written');
    } finally {
      closeSync(fd);
    }
    assert.equal(readdirSync(storage_dir), []);
    assert.ok(freeBytes(storage_dir) >= free_before_bytes - FREE_SLACK_BYTES, 'close gives the blocks back');
  });
}

tmpfile.run();

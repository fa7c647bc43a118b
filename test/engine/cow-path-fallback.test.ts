// Goal: where a clone cannot work, copy-before-write copies, says so and
// why, and the image is right: volume and storage on ext4, on tmpfs, on two
// different filesystems, a block-device volume, a block-device storage.
// No chunk is cloned in any of them.
// Method: real filesystems (the root ext4 under the system temp dir,
// /dev/shm, a loop-mounted XFS for "different filesystems" so that one side
// could clone), real loop devices; the reason read from snapshotInfo as
// `status` prints it; data compared byte for byte.

import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gate, makeLoopDevice } from '../lib/system';
import { startXfsEngine, type XfsEngine } from '../lib/xfs-engine';

const MiB = 1 << 20;
const VOLUME_BYTES = 4 * MiB;
const XFS_IMAGE_BYTES = 512 * MiB;
const STORAGE_LIMIT_BYTES = 64 * MiB;

const suite = gate(test, 'copy-before-write fallback', { root: true, tools: ['losetup', 'mkfs.xfs', 'mount', 'umount'] });
let fixture: XfsEngine | undefined;
let shm_dir = '';

function sparseFile(file: string, size_bytes: number): string {
  writeFileSync(file, '');
  truncateSync(file, size_bytes);
  return file;
}

function pattern(seed: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  for (let i = 0; i < length; i += 1) buffer[i] = (i * 31 + seed * 17 + (i >> 9)) & 0xff;
  return buffer;
}

suite.before(async () => {
  fixture = await startXfsEngine('cow-fallback', XFS_IMAGE_BYTES);
  shm_dir = mkdtempSync('/dev/shm/ublksnap-cow-fallback-');
});

suite.after(async () => {
  try {
    await fixture?.dispose();
  } finally {
    if (shm_dir !== '') rmSync(shm_dir, { recursive: true, force: true });
  }
});

/** Snapshot of `volume_path` with `storage`; overwrites the volume; checks the image, the path and the reason. */
async function copiedWithReason(name: string, volume_path: string, storage: string, reason: RegExp): Promise<void> {
  const e = fixture!.engine;
  const c = fixture!.client;
  await e.attach(volume_path, { name });
  let id: string | undefined;
  try {
    const volume = e.resolveExport(name).handle;
    const before = pattern(1, VOLUME_BYTES);
    await c.write(volume, 0, before);
    id = await e.snapshotCreate({ volumes: [name], storage, limit_bytes: STORAGE_LIMIT_BYTES });
    await e.snapshotTake(id);
    await c.write(volume, 0, pattern(2, VOLUME_BYTES));
    const area = e.snapshotInfo(id).chunks[0]!;
    assert.is(area.cbw, 'copy', `${name}: ${JSON.stringify(area)}`);
    assert.match(area.cbw_reason, reason);
    assert.is(area.cloned, 0, `${name}: nothing cloned`);
    assert.is(area.copied, VOLUME_BYTES / (64 * 1024), `${name}: every chunk copied`);
    const image = e.resolveExport(`${name}@${id}`).handle;
    assert.ok((await c.read(image, 0, VOLUME_BYTES)).equals(before), `${name}: the image is the pre-take data`);
  } finally {
    // Clean up without hiding the assertion that failed.
    if (id !== undefined) await e.snapshotDestroy(id);
    await e.detach(name);
  }
}

suite.test('ext4: volume and storage on one ext4, which does not clone', async () => {
  const dir = path.join(fixture!.work.path, 'ext4');
  mkdirSync(dir);
  await copiedWithReason('onext4', sparseFile(path.join(dir, 'v.img'), VOLUME_BYTES), path.join(dir, 'v.diff'),
    /^the filesystem does not clone ranges \(E[A-Z]+\)$/);
});

suite.test('tmpfs: volume and storage (a directory: O_TMPFILE) on /dev/shm', async () => {
  await copiedWithReason('ontmpfs', sparseFile(path.join(shm_dir, 'v.img'), VOLUME_BYTES), shm_dir,
    /^the filesystem does not clone ranges \(E[A-Z]+\)$/);
});

suite.test('two filesystems: the volume on XFS with reflink, the storage on tmpfs', async () => {
  await copiedWithReason('twofs', sparseFile(path.join(fixture!.mount.path, 'v.img'), VOLUME_BYTES), path.join(shm_dir, 'twofs.diff'),
    /^the volume and the difference storage are on different filesystems$/);
});

suite.test('a block-device volume', async () => {
  const loop = makeLoopDevice(sparseFile(path.join(fixture!.work.path, 'blockvol.raw'), VOLUME_BYTES));
  try {
    await copiedWithReason('blockvol', loop.device, path.join(fixture!.mount.path, 'blockvol.diff'), /^the volume is a block device$/);
  } finally {
    loop.detach();
  }
});

suite.test('a block-device storage', async () => {
  const loop = makeLoopDevice(sparseFile(path.join(fixture!.work.path, 'blockstore.raw'), 2 * VOLUME_BYTES));
  try {
    await copiedWithReason('blockstore', sparseFile(path.join(fixture!.mount.path, 'bs.img'), VOLUME_BYTES), loop.device,
      /^the difference storage is a block device$/);
  } finally {
    loop.detach();
  }
});

test.run();

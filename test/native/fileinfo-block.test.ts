// Goal: fileInfo gives the engine what it needs to refuse a diff storage
// that lives on a volume of the same snapshot: a block device reports kind
// 'block' and its device number in rdev, and a file on a file system
// mounted from that device reports the same number in dev.
// Method: a loop device over a sparse file, checked against the number in
// /sys/block/loopN/dev; then ext4 made on it and mounted, and a file there
// (and one elsewhere) compared with the device.

import { closeSync, openSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fileInfo, openTmpfile, type FileInfo } from '../../src/native/index';
import { gate, makeLoopDevice, mkfsExt4AndMount, tempDir, type LoopDevice, type Mount, type TempDir } from '../lib/system';

const VOLUME_BYTES = 64 << 20;

function infoOf(file: string): FileInfo {
  const fd = openSync(file, 'r');
  try {
    return fileInfo(fd);
  } finally {
    closeSync(fd);
  }
}

/** "7:3" from sysfs, as numbers. */
function sysfsDeviceNumber(device: string): { major: number; minor: number } {
  const [major, minor] = readFileSync(path.join('/sys/block', path.basename(device), 'dev'), 'utf8').trim().split(':').map(Number);
  return { major, minor };
}

const block = suite('fileInfo on a block device and the files it holds');
const guard = gate(block, 'fileInfo on a block device', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount', 'umount'] });
let work: TempDir | undefined;
let loop: LoopDevice | undefined;
let mount: Mount | undefined;

guard.before(() => {
  work = tempDir('fileinfo-block');
  const image = path.join(work.path, 'volume.img');
  writeFileSync(image, '');
  truncateSync(image, VOLUME_BYTES);
  loop = makeLoopDevice(image);
  mount = mkfsExt4AndMount(loop.device);
});
guard.after(() => {
  mount?.unmount();
  loop?.detach();
  work?.remove();
});

guard.test('a loop device is "block", with its number in rdev and size 0', () => {
  const result = infoOf(loop!.device);
  const expected = sysfsDeviceNumber(loop!.device);
  assert.is(result.kind, 'block');
  assert.is(result.rdev_major, expected.major);
  assert.is(result.rdev_minor, expected.minor);
  assert.is(result.size_bytes, 0);
});

guard.test('a file on the mounted device has the device as its dev; a file elsewhere does not', () => {
  const volume = infoOf(loop!.device);
  const storage = openTmpfile(mount!.path);
  let on_volume: FileInfo;
  try {
    on_volume = fileInfo(storage);
  } finally {
    closeSync(storage);
  }
  assert.equal([on_volume.dev_major, on_volume.dev_minor], [volume.rdev_major, volume.rdev_minor]);

  const elsewhere = infoOf(path.join(work!.path, 'volume.img'));
  assert.not.equal([elsewhere.dev_major, elsewhere.dev_minor], [volume.rdev_major, volume.rdev_minor]);
});

block.run();

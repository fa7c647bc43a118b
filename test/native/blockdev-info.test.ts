// Goal: blockDeviceInfo reports a real block device's geometry exactly —
// size, logical and physical block, minimum and optimal I/O, discard — for
// 512-byte and 4096-byte sectors, and refuses anything that is not a block
// device with ENOTBLK before issuing any ioctl.
// Method: a 64 MiB sparse file attached to a loop device (losetup, with and
// without --sector-size 4096); the expected numbers are read independently
// from the device's sysfs queue directory.

import { closeSync, openSync, readFileSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blockDeviceInfo } from '../../src/native/index';
import { expectSystemError, gate, makeLoopDevice, tempDir, type LoopDevice, type TempDir } from '../lib/system';

const VOLUME_BYTES = 64 << 20;
const SECTOR_BYTES_VARIANTS = [512, 4096];
/** sysfs block/<dev>/size counts 512-byte sectors whatever the device's own. */
const SYSFS_SECTOR_BYTES = 512;
const LOOP_NEEDS = { root: true, tools: ['losetup'] };

function sysfsNumber(device: string, file: string): number {
  return Number(readFileSync(path.join('/sys/block', path.basename(device), file), 'utf8').trim());
}

function defineSuite(sector_bytes: number): void {
  const name = `blockDeviceInfo on a loop device with ${sector_bytes}-byte sectors`;
  const info = suite(name);
  const guard = gate(info, name, LOOP_NEEDS);
  let work: TempDir | undefined;
  let loop: LoopDevice | undefined;

  guard.before(() => {
    work = tempDir('blockdev-info');
    const image = path.join(work.path, 'volume.img');
    closeSync(openSync(image, 'w'));
    truncateSync(image, VOLUME_BYTES);
    loop = makeLoopDevice(image, { sector_bytes });
  });
  guard.after(() => {
    loop?.detach();
    work?.remove();
  });

  guard.test('reports the geometry sysfs reports', () => {
    const fd = openSync(loop!.device, 'r');
    try {
      const geometry = blockDeviceInfo(fd);
      assert.equal(Object.keys(geometry).sort(), [
        'discard_supported', 'logical_block_bytes', 'min_io_bytes', 'opt_io_bytes', 'physical_block_bytes', 'size_bytes',
      ]);
      assert.is(geometry.size_bytes, VOLUME_BYTES);
      assert.is(geometry.size_bytes, sysfsNumber(loop!.device, 'size') * SYSFS_SECTOR_BYTES);
      assert.is(geometry.logical_block_bytes, sector_bytes);
      assert.is(geometry.logical_block_bytes, sysfsNumber(loop!.device, 'queue/logical_block_size'));
      assert.is(geometry.physical_block_bytes, sysfsNumber(loop!.device, 'queue/physical_block_size'));
      assert.ok(geometry.physical_block_bytes >= geometry.logical_block_bytes);
      assert.is(geometry.min_io_bytes, sysfsNumber(loop!.device, 'queue/minimum_io_size'));
      assert.is(geometry.opt_io_bytes, sysfsNumber(loop!.device, 'queue/optimal_io_size'));
      assert.is(geometry.discard_supported, sysfsNumber(loop!.device, 'queue/discard_max_bytes') > 0);
    } finally {
      closeSync(fd);
    }
  });

  guard.test('a loop over a file on a file system that punches holes accepts discards', () => {
    const fd = openSync(loop!.device, 'r');
    try {
      assert.is(blockDeviceInfo(fd).discard_supported, true);
    } finally {
      closeSync(fd);
    }
  });

  info.run();
}

for (const sector_bytes of SECTOR_BYTES_VARIANTS) defineSuite(sector_bytes);

// ── not a block device ──────────────────────────────────────────────────

const refused = suite('blockDeviceInfo on what is not a block device');
let work: TempDir | undefined;

refused.before(() => {
  work = tempDir('blockdev-refused');
});
refused.after(() => work?.remove());

refused('a regular file fails ENOTBLK', () => {
  const fd = openSync(path.join(work!.path, 'file'), 'w+');
  try {
    expectSystemError(() => blockDeviceInfo(fd), 'ENOTBLK', 'ioctl');
  } finally {
    closeSync(fd);
  }
});

refused('a character device fails ENOTBLK', () => {
  const fd = openSync('/dev/null', 'r');
  try {
    expectSystemError(() => blockDeviceInfo(fd), 'ENOTBLK', 'ioctl');
  } finally {
    closeSync(fd);
  }
});

refused('a directory fails ENOTBLK', () => {
  const fd = openSync(work!.path, 'r');
  try {
    expectSystemError(() => blockDeviceInfo(fd), 'ENOTBLK', 'ioctl');
  } finally {
    closeSync(fd);
  }
});

refused('a closed fd fails EBADF from fstat', () => {
  const fd = openSync(path.join(work!.path, 'closed'), 'w+');
  closeSync(fd);
  expectSystemError(() => blockDeviceInfo(fd), 'EBADF', 'fstat');
});

refused.run();

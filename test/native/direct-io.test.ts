// Goal: alignedView makes a SharedArrayBuffer usable for O_DIRECT: data
// written with fs.writeSync through an aligned view on an O_DIRECT fd of a
// block device reads back the same, and reaches the device (not a cache);
// a view, offset or length off the alignment is refused with EINVAL.
// Method: loop devices with 512- and 4096-byte sectors over sparse files,
// opened with openExclusive({ direct: true }); the written bytes are also
// read from the loop's backing file, which only the device could have
// changed.

import { closeSync, openSync, readSync, truncateSync, writeSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DIRECT_IO_ALIGNMENT_BYTES, alignedOffset, alignedView, bufferAddress, openExclusive } from '../../src/native/index';
import { gate, makeLoopDevice, tempDir, type LoopDevice, type TempDir } from '../lib/system';

const VOLUME_BYTES = 64 << 20;
const IO_BYTES = 256 << 10;
/** Where the round trip writes: past the first MiB, a multiple of every sector size. */
const IO_OFFSET_BYTES = 3 << 20;
const SECTOR_BYTES_VARIANTS = [512, 4096];
/** Primes, so the pattern does not repeat with any power-of-two period. */
const PATTERN_MULTIPLIER = 131;
const PATTERN_SHIFT = 7;

/** A pattern that differs per byte and per call, so a stale read cannot pass. */
function fillPattern(view: Uint8Array, salt: number): void {
  for (let index = 0; index < view.length; index += 1) {
    view[index] = (index * PATTERN_MULTIPLIER + salt * PATTERN_SHIFT) & 0xff;
  }
}

/** Asserts that a Node fs call fails with code (Node's errors carry a negative errno). */
function expectFsError(call: () => unknown, code: string, syscall: string): void {
  assert.throws(call, (error: unknown) => {
    const fields = error as { code?: string; syscall?: string };
    return fields.code === code && fields.syscall === syscall;
  });
}

/** A fresh shared buffer and its aligned view of IO_BYTES. */
function sharedAlignedView(): { buffer: SharedArrayBuffer; view: Uint8Array } {
  const buffer = new SharedArrayBuffer(IO_BYTES + DIRECT_IO_ALIGNMENT_BYTES);
  return { buffer, view: alignedView(buffer, IO_BYTES) };
}

function defineSuite(sector_bytes: number): void {
  const name = `O_DIRECT through aligned views, ${sector_bytes}-byte sectors`;
  const direct = suite(name);
  const guard = gate(direct, name, { root: true, tools: ['losetup'] });
  let work: TempDir | undefined;
  let image = '';
  let loop: LoopDevice | undefined;
  let fd = -1;

  guard.before(() => {
    work = tempDir('direct-io');
    image = path.join(work.path, 'volume.img');
    closeSync(openSync(image, 'w'));
    truncateSync(image, VOLUME_BYTES);
    loop = makeLoopDevice(image, { sector_bytes });
    fd = openExclusive(loop.device, { write: true, direct: true });
  });
  guard.after(() => {
    if (fd >= 0) closeSync(fd);
    loop?.detach();
    work?.remove();
  });

  guard.test('the view starts on an aligned address', () => {
    const { buffer, view } = sharedAlignedView();
    const address = bufferAddress(buffer) + BigInt(view.byteOffset);
    assert.is(address % BigInt(DIRECT_IO_ALIGNMENT_BYTES), 0n);
    assert.is(view.byteOffset, alignedOffset(buffer, DIRECT_IO_ALIGNMENT_BYTES));
    assert.is(view.buffer, buffer);
  });

  guard.test('a write reads back the same and reaches the device', () => {
    const source = sharedAlignedView();
    fillPattern(source.view, sector_bytes);
    assert.is(writeSync(fd, source.view, 0, IO_BYTES, IO_OFFSET_BYTES), IO_BYTES);

    const target = sharedAlignedView();
    assert.is(readSync(fd, target.view, 0, IO_BYTES, IO_OFFSET_BYTES), IO_BYTES);
    assert.ok(Buffer.compare(target.view, source.view) === 0, 'read back what was written');

    // The backing file holds the bytes: they went through the loop device.
    const backing = openSync(image, 'r');
    try {
      const stored = Buffer.alloc(IO_BYTES);
      assert.is(readSync(backing, stored, 0, IO_BYTES, IO_OFFSET_BYTES), IO_BYTES);
      assert.ok(Buffer.compare(stored, source.view) === 0, 'the backing file holds the write');
    } finally {
      closeSync(backing);
    }
  });

  guard.test('a view one byte off the alignment fails EINVAL', () => {
    const buffer = new SharedArrayBuffer(IO_BYTES + 2 * DIRECT_IO_ALIGNMENT_BYTES);
    const misaligned = new Uint8Array(buffer, alignedOffset(buffer, DIRECT_IO_ALIGNMENT_BYTES) + 1, IO_BYTES);
    expectFsError(() => writeSync(fd, misaligned, 0, IO_BYTES, IO_OFFSET_BYTES), 'EINVAL', 'write');
    expectFsError(() => readSync(fd, misaligned, 0, IO_BYTES, IO_OFFSET_BYTES), 'EINVAL', 'read');
  });

  guard.test('an offset or a length off the sector fails EINVAL', () => {
    const { view } = sharedAlignedView();
    const half_sector_bytes = sector_bytes / 2;
    expectFsError(() => writeSync(fd, view, 0, IO_BYTES, IO_OFFSET_BYTES + half_sector_bytes), 'EINVAL', 'write');
    expectFsError(() => writeSync(fd, view, 0, half_sector_bytes, IO_OFFSET_BYTES), 'EINVAL', 'write');
  });

  direct.run();
}

for (const sector_bytes of SECTOR_BYTES_VARIANTS) defineSuite(sector_bytes);

// Goal: fallocate's modes do what fallocate(2) promises on the file systems
// a diff storage lives on — tmpfs (/dev/shm) and ext4 — with offsets past
// 2^32 arriving intact.
// Method: one suite per file system (ext4 is a fresh loop-mounted one, so
// the test does not depend on the host's layout); each test takes a fresh
// file, calls fallocate, then checks the size (fstat), the allocation
// (st_blocks) and the content (readSync) the mode promises.

import { closeSync, fstatSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocate, fdatasync, isNativeError,
} from '../../src/native/index';
import { gate, makeLoopDevice, mkfsExt4AndMount, tempDir, type Prerequisites } from '../lib/system';

const BLOCK_BYTES = 4096;
const FILE_BYTES = 1 << 20;
/** The unit of st_blocks. */
const STAT_BLOCK_BYTES = 512;
/** An offset that a 32-bit truncation would turn into BLOCK_BYTES. */
const OFFSET_PAST_32_BITS_BYTES = 2 ** 32 + BLOCK_BYTES;
const PATTERN_BYTE = 0xab;
/** The ext4 volume: room for FILE_BYTES files and the journal. */
const EXT4_VOLUME_BYTES = 64 << 20;
const SHM_DIR = '/dev/shm';

function allocatedBytes(fd: number): number {
  return fstatSync(fd).blocks * STAT_BLOCK_BYTES;
}

function readRange(fd: number, offset_bytes: number, length_bytes: number): Buffer {
  const data = Buffer.alloc(length_bytes);
  assert.is(readSync(fd, data, 0, length_bytes, offset_bytes), length_bytes);
  return data;
}

function isFilledWith(data: Buffer, byte: number): boolean {
  return data.every((value) => value === byte);
}

/** A file of FILE_BYTES of PATTERN_BYTE, durable so st_blocks counts it. */
function writePattern(fd: number): void {
  writeSync(fd, Buffer.alloc(FILE_BYTES, PATTERN_BYTE), 0, FILE_BYTES, 0);
  fdatasync(fd);
}

interface FileSystem {
  name: string;
  needs: Prerequisites;
  /** Makes the directory the test files go in; returns it and its release. */
  setUp(): { dir: string; tearDown(): void };
  zero_range_supported: boolean;
}

function defineSuite(fs: FileSystem): void {
  const fallocateSuite = suite(`fallocate on ${fs.name}`);
  const guard = gate(fallocateSuite, `fallocate on ${fs.name}`, fs.needs);
  let dir = '';
  let tearDown = (): void => undefined;
  let file_index = 0;
  let fd = -1;

  guard.before(() => {
    const made = fs.setUp();
    dir = made.dir;
    tearDown = made.tearDown;
  });
  guard.after(() => tearDown());
  fallocateSuite.before.each(() => {
    if (!guard.ready) return;
    file_index += 1;
    fd = openSync(path.join(dir, `file-${file_index}`), 'w+');
  });
  fallocateSuite.after.each(() => {
    if (fd >= 0) closeSync(fd);
    fd = -1;
  });

  guard.test('mode 0 allocates and extends the file', () => {
    fallocate(fd, 0, FILE_BYTES, 0);
    assert.is(fstatSync(fd).size, FILE_BYTES);
    assert.ok(allocatedBytes(fd) >= FILE_BYTES, `allocated ${allocatedBytes(fd)} bytes`);
  });

  guard.test('an offset past 2^32 arrives intact', () => {
    fallocate(fd, OFFSET_PAST_32_BITS_BYTES, BLOCK_BYTES, 0);
    assert.is(fstatSync(fd).size, OFFSET_PAST_32_BITS_BYTES + BLOCK_BYTES);
    // Only the one block is allocated: the file stays sparse below it.
    assert.ok(allocatedBytes(fd) >= BLOCK_BYTES);
    assert.ok(allocatedBytes(fd) < FILE_BYTES, `allocated ${allocatedBytes(fd)} bytes`);
  });

  guard.test('KEEP_SIZE allocates without changing the size', () => {
    fallocate(fd, 0, FILE_BYTES, FALLOC_FL_KEEP_SIZE);
    assert.is(fstatSync(fd).size, 0);
    assert.ok(allocatedBytes(fd) >= FILE_BYTES, `allocated ${allocatedBytes(fd)} bytes`);
  });

  guard.test('PUNCH_HOLE|KEEP_SIZE frees a range that reads back as zeros', () => {
    writePattern(fd);
    const allocated_before_bytes = allocatedBytes(fd);
    const hole_offset_bytes = 4 * BLOCK_BYTES;
    const hole_bytes = 8 * BLOCK_BYTES;
    fallocate(fd, hole_offset_bytes, hole_bytes, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
    assert.is(fstatSync(fd).size, FILE_BYTES);
    assert.ok(isFilledWith(readRange(fd, hole_offset_bytes, hole_bytes), 0), 'the hole reads as zeros');
    assert.ok(isFilledWith(readRange(fd, 0, hole_offset_bytes), PATTERN_BYTE), 'the head is intact');
    const tail_offset_bytes = hole_offset_bytes + hole_bytes;
    assert.ok(isFilledWith(readRange(fd, tail_offset_bytes, FILE_BYTES - tail_offset_bytes), PATTERN_BYTE), 'the tail is intact');
    assert.ok(allocatedBytes(fd) <= allocated_before_bytes - hole_bytes, 'the hole is freed');
  });

  guard.test('PUNCH_HOLE without KEEP_SIZE is refused with EOPNOTSUPP', () => {
    writePattern(fd);
    assert.throws(() => fallocate(fd, 0, BLOCK_BYTES, FALLOC_FL_PUNCH_HOLE),
      (error: unknown) => isNativeError(error) && error.code === 'EOPNOTSUPP' && error.syscall === 'fallocate');
  });

  if (fs.zero_range_supported) {
    guard.test('ZERO_RANGE zeroes a range and keeps it allocated', () => {
      writePattern(fd);
      const allocated_before_bytes = allocatedBytes(fd);
      fallocate(fd, BLOCK_BYTES, 2 * BLOCK_BYTES, FALLOC_FL_ZERO_RANGE);
      assert.is(fstatSync(fd).size, FILE_BYTES);
      assert.ok(isFilledWith(readRange(fd, BLOCK_BYTES, 2 * BLOCK_BYTES), 0));
      assert.ok(isFilledWith(readRange(fd, 0, BLOCK_BYTES), PATTERN_BYTE));
      assert.ok(isFilledWith(readRange(fd, 3 * BLOCK_BYTES, BLOCK_BYTES), PATTERN_BYTE));
      assert.ok(allocatedBytes(fd) >= allocated_before_bytes, 'the range stays allocated');
    });
    guard.test('ZERO_RANGE past the end extends the file', () => {
      fallocate(fd, 0, FILE_BYTES, FALLOC_FL_ZERO_RANGE);
      assert.is(fstatSync(fd).size, FILE_BYTES);
      assert.ok(isFilledWith(readRange(fd, 0, FILE_BYTES), 0));
    });
  } else {
    guard.test('ZERO_RANGE is refused with EOPNOTSUPP', () => {
      writePattern(fd);
      assert.throws(() => fallocate(fd, 0, BLOCK_BYTES, FALLOC_FL_ZERO_RANGE),
        (error: unknown) => isNativeError(error) && error.code === 'EOPNOTSUPP' && error.errno > 0);
      assert.ok(isFilledWith(readRange(fd, 0, BLOCK_BYTES), PATTERN_BYTE), 'the data is untouched');
    });
  }

  fallocateSuite.run();
}

defineSuite({
  name: `tmpfs (${SHM_DIR})`,
  needs: { paths: [SHM_DIR] },
  setUp() {
    const dir = mkdtempSync(path.join(SHM_DIR, 'ublksnap-fallocate-'));
    return { dir, tearDown: () => rmSync(dir, { recursive: true, force: true }) };
  },
  // shmem_fallocate knows PUNCH_HOLE and KEEP_SIZE only.
  zero_range_supported: false,
});

defineSuite({
  name: 'ext4 (loop-mounted)',
  needs: { root: true, tools: ['losetup', 'mkfs.ext4', 'mount', 'umount'] },
  setUp() {
    const work = tempDir('fallocate-ext4');
    const image = path.join(work.path, 'volume.img');
    closeSync(openSync(image, 'w'));
    truncateSync(image, EXT4_VOLUME_BYTES);
    const loop = makeLoopDevice(image);
    const mount = mkfsExt4AndMount(loop.device);
    return {
      dir: mount.path,
      tearDown() {
        mount.unmount();
        loop.detach();
        work.remove();
      },
    };
  },
  zero_range_supported: true,
});

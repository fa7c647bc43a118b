// Goal: populateFileRange makes a range of a tmpfs file real memory
// (every page data for lseek SEEK_DATA) without changing a byte, whether
// the page was never written or already holds data; an unaligned offset
// is EINVAL, a range past the end of the file EFAULT, a zero length does
// nothing; bad arguments are TypeErrors naming its signature.
// Method: a file in /dev/shm, fallocated and partly written with seeded
// random bytes, read back byte for byte.

import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fallocate, populateFileRange, seekData } from '../../src/native/index';
import { randomBytes, seededRandom } from '../lib/random';
import { SCRATCH_ROOT } from '../lib/engine-fixture';

const KiB = 1024;
const PAGE = 4 * KiB;
const FILE_BYTES = 1024 * KiB;
const dir = mkdtempSync(path.join(SCRATCH_ROOT, 'ublksnap-populate-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const stamp = randomBytes(seededRandom(11), 96 * KiB);

/** A file fallocated whole, with the stamp written at 256 KiB. */
function preparedFile(name: string): { fd: number; file: string } {
  const file = path.join(dir, name);
  const fd = openSync(file, 'w+');
  fallocate(fd, 0, FILE_BYTES, 0);
  writeSync(fd, stamp, 0, stamp.length, 256 * KiB);
  return { fd, file };
}

test('the range becomes data and reads as before: zeros where nothing was written, the stamp where it was', () => {
  const { fd, file } = preparedFile('range');
  try {
    assert.is(seekData(fd, 0), 256 * KiB, 'before: the stamp is the first data');
    populateFileRange(fd, 128 * KiB, 512 * KiB);
    for (let offset = 128 * KiB; offset < 640 * KiB; offset += PAGE) assert.is(seekData(fd, offset), offset, `data at ${offset}`);
    assert.is(seekData(fd, 0), 128 * KiB, 'nothing before the range');
    assert.is(seekData(fd, 640 * KiB), -1, 'nothing after it');
  } finally {
    closeSync(fd);
  }
  const back = readFileSync(file);
  assert.ok(back.subarray(256 * KiB, 256 * KiB + stamp.length).equals(stamp), 'the stamp is unchanged');
  assert.ok(back.subarray(0, 256 * KiB).every((byte) => byte === 0), 'zeros before the stamp');
  assert.ok(back.subarray(256 * KiB + stamp.length).every((byte) => byte === 0), 'zeros after it');
});

test('errors: an unaligned offset, a range past the end; a zero length does nothing', () => {
  const { fd } = preparedFile('errors');
  try {
    assert.throws(() => populateFileRange(fd, 512, PAGE), (error: { code?: string }) => error.code === 'EINVAL');
    assert.throws(() => populateFileRange(fd, FILE_BYTES, PAGE), (error: { code?: string }) => error.code === 'EFAULT');
    populateFileRange(fd, 0, 0);
    assert.is(seekData(fd, 0), 256 * KiB, 'nothing warmed');
  } finally {
    closeSync(fd);
  }
});

test('bad arguments are TypeErrors naming the signature', () => {
  const signature = /populateFileRange\(fd, offset_bytes, length_bytes\)/;
  const call = populateFileRange as unknown as (...args: unknown[]) => void;
  for (const args of [[], [3, 0], [-1, 0, PAGE], [3, -1, PAGE], [3, 0, 2 ** 53], ['3', 0, PAGE], [3, 0, PAGE, 1]]) {
    assert.throws(() => call(...args), (error: Error) => error instanceof TypeError && signature.test(error.message), JSON.stringify(args));
  }
});

test.run();

// Goal: copyRange copies a range of one file into another inside the
// kernel (copy_file_range), to any offset; returns fewer bytes only where
// the source ended; says EXDEV where the two files are on filesystems
// that cannot copy between them and EINVAL for a device; refuses bad
// arguments with TypeErrors naming its signature.
// Method: files in /dev/shm and in the OS temporary directory (ext4 here),
// read back byte for byte; /dev/zero as a source that is no regular file.

import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { copyRange } from '../../src/native/index';
import { randomBytes, seededRandom } from '../lib/random';
import { SCRATCH_ROOT } from '../lib/engine-fixture';

const KiB = 1024;
const shm = mkdtempSync(path.join(SCRATCH_ROOT, 'ublksnap-copy-range-'));
const other = mkdtempSync(path.join(tmpdir(), 'ublksnap-copy-range-'));
test.after(() => {
  rmSync(shm, { recursive: true, force: true });
  rmSync(other, { recursive: true, force: true });
});

const source_bytes = randomBytes(seededRandom(7), 768 * KiB);

function sourceFd(): number {
  const file = path.join(shm, 'source');
  writeFileSync(file, source_bytes);
  return openSync(file, 'r');
}

test('a range lands at the offset asked, byte for byte; the rest of the target is untouched', () => {
  const source = sourceFd();
  const target_path = path.join(shm, 'target');
  writeFileSync(target_path, Buffer.alloc(1024 * KiB, 0xee));
  const target = openSync(target_path, 'r+');
  try {
    assert.is(copyRange(target, 300 * KiB, source, 64 * KiB, 512 * KiB), 512 * KiB);
  } finally {
    closeSync(target);
    closeSync(source);
  }
  const back = readFileSync(target_path);
  assert.ok(back.subarray(300 * KiB, 812 * KiB).equals(source_bytes.subarray(64 * KiB, 576 * KiB)), 'the copied range');
  assert.ok(back.subarray(0, 300 * KiB).every((byte) => byte === 0xee), 'before the range');
  assert.ok(back.subarray(812 * KiB).every((byte) => byte === 0xee), 'after the range');
});

test('past the source end: the bytes there were, and their count', () => {
  const source = sourceFd();
  const target = openSync(path.join(shm, 'short'), 'w+');
  try {
    assert.is(copyRange(target, 0, source, 700 * KiB, 256 * KiB), 68 * KiB);
  } finally {
    closeSync(target);
    closeSync(source);
  }
  assert.ok(readFileSync(path.join(shm, 'short')).equals(source_bytes.subarray(700 * KiB)));
});

test('another filesystem is EXDEV, a device EINVAL; bad arguments are TypeErrors', () => {
  const source = sourceFd();
  const elsewhere = openSync(path.join(other, 'target'), 'w+');
  const device = openSync('/dev/zero', 'r');
  try {
    assert.throws(() => copyRange(elsewhere, 0, source, 0, 4 * KiB), (error: NodeJS.ErrnoException) => error.code === 'EXDEV');
    assert.throws(() => copyRange(elsewhere, 0, device, 0, 4 * KiB), (error: NodeJS.ErrnoException) => error.code === 'EINVAL');
    for (const bad of [[-1, 0, source, 0, 1], [elsewhere, 0.5, source, 0, 1], [elsewhere, 0, source, 0], [elsewhere, 0, source, 0, 'x']]) {
      assert.throws(() => (copyRange as (...args: unknown[]) => number)(...bad),
        (error: Error) => error instanceof TypeError && /copyRange/.test(error.message));
    }
  } finally {
    closeSync(device);
    closeSync(elsewhere);
    closeSync(source);
  }
});

test.run();

// Goal: fileInfo tells a regular file from anything else and reports its
// size, st_dev and inode exactly (inodes as bigint, sizes past 2^32), so
// the engine can tell two file volumes apart or see they are one file.
// Method: files in a temp dir, a hard link, /dev/null and a directory;
// the expected values come from Node's fs.fstatSync(fd, { bigint: true }),
// its st_dev split with glibc's major()/minor() formula.

import { closeSync, fstatSync, linkSync, openSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fileInfo } from '../../src/native/index';
import { expectSystemError, tempDir, type TempDir } from '../lib/system';

/** A size a 32-bit field could not hold. */
const LARGE_FILE_BYTES = 5 * 2 ** 30 + 512;
/** /dev/null's device number (devices.txt). */
const DEV_NULL_MAJOR = 1;
const DEV_NULL_MINOR = 3;

/** glibc's gnu_dev_major / gnu_dev_minor. */
function splitDev(dev: bigint): { major: number; minor: number } {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

function withFd<T>(file: string, flags: string, use: (fd: number) => T): T {
  const fd = openSync(file, flags);
  try {
    return use(fd);
  } finally {
    closeSync(fd);
  }
}

const info = suite('fileInfo on files and other kinds');
let work: TempDir | undefined;

info.before(() => {
  work = tempDir('fileinfo');
});
info.after(() => work?.remove());

info('a regular file: kind, size, st_dev, inode and block size as fstat says', () => {
  const file = path.join(work!.path, 'volume.img');
  writeFileSync(file, 'twelve bytes');
  withFd(file, 'r', (fd) => {
    const result = fileInfo(fd);
    const expected = fstatSync(fd, { bigint: true });
    assert.equal(Object.keys(result).sort(), ['block_bytes', 'dev_major', 'dev_minor', 'ino', 'kind', 'rdev_major', 'rdev_minor', 'size_bytes']);
    assert.is(result.kind, 'file');
    assert.is(result.block_bytes, Number(expected.blksize), 'st_blksize');
    assert.is(result.size_bytes, 12);
    assert.is(typeof result.ino, 'bigint');
    assert.is(result.ino, expected.ino);
    const dev = splitDev(expected.dev);
    assert.is(result.dev_major, dev.major);
    assert.is(result.dev_minor, dev.minor);
    assert.is(result.rdev_major, 0);
    assert.is(result.rdev_minor, 0);
  });
});

info('a size past 2^32 is exact', () => {
  const file = path.join(work!.path, 'large.img');
  writeFileSync(file, '');
  truncateSync(file, LARGE_FILE_BYTES);
  assert.is(withFd(file, 'r', fileInfo).size_bytes, LARGE_FILE_BYTES);
});

info('a hard link is the same dev and inode; another file is not', () => {
  const file = path.join(work!.path, 'original.img');
  const link = path.join(work!.path, 'link.img');
  const other = path.join(work!.path, 'other.img');
  writeFileSync(file, '');
  writeFileSync(other, '');
  linkSync(file, link);
  const original_info = withFd(file, 'r', fileInfo);
  const link_info = withFd(link, 'r', fileInfo);
  const other_info = withFd(other, 'r', fileInfo);
  assert.equal([link_info.dev_major, link_info.dev_minor, link_info.ino], [original_info.dev_major, original_info.dev_minor, original_info.ino]);
  assert.is.not(other_info.ino, original_info.ino);
});

info('/dev/null is "other", with its device number in rdev', () => {
  const result = withFd('/dev/null', 'r', fileInfo);
  assert.is(result.kind, 'other');
  assert.is(result.rdev_major, DEV_NULL_MAJOR);
  assert.is(result.rdev_minor, DEV_NULL_MINOR);
});

info('a directory is "other"', () => {
  assert.is(withFd(work!.path, 'r', fileInfo).kind, 'other');
});

info('a closed fd fails EBADF from fstat', () => {
  const fd = openSync(path.join(work!.path, 'closed'), 'w');
  closeSync(fd);
  expectSystemError(() => fileInfo(fd), 'EBADF', 'fstat');
});

info.run();

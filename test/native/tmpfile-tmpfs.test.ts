// Goal: openTmpfile makes an unnamed, private (0600, no link) file on tmpfs
// that holds data like any file, leaves its directory empty, works with
// O_DIRECT through an aligned view, and names the path when it fails.
// Method: a fresh directory under /dev/shm; the file is checked with fstat,
// fileInfo, readdir and a write/read round trip.

import { closeSync, fstatSync, mkdtempSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DIRECT_IO_ALIGNMENT_BYTES, alignedView, fdatasync, fileInfo, openTmpfile } from '../../src/native/index';
import { expectSystemError, gate } from '../lib/system';

const SHM_DIR = '/dev/shm';
const DATA_BYTES = 64 << 10;
const PATTERN_BYTE = 0x5a;
const PRIVATE_MODE = 0o600;
const PERMISSION_BITS = 0o777;
/** O_CLOEXEC as fdinfo shows it (asm-generic; x86_64 and arm64 agree). */
const O_CLOEXEC = 0o2000000;

function openFlags(fd: number): number {
  const match = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  assert.ok(match, 'fdinfo has a flags line');
  return parseInt(match[1], 8);
}

function roundTrip(fd: number, source: Uint8Array, target: Uint8Array): void {
  assert.is(writeSync(fd, source, 0, source.length, 0), source.length);
  fdatasync(fd);
  assert.is(readSync(fd, target, 0, target.length, 0), target.length);
  assert.ok(Buffer.compare(source, target) === 0, 'read back what was written');
}

const tmpfile = suite('openTmpfile on tmpfs');
const guard = gate(tmpfile, 'openTmpfile on tmpfs', { paths: [SHM_DIR] });
let dir = '';

guard.before(() => {
  dir = mkdtempSync(path.join(SHM_DIR, 'ublksnap-tmpfile-'));
});
guard.after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

guard.test('the file is unnamed, private and close-on-exec', () => {
  const fd = openTmpfile(dir);
  try {
    const status = fstatSync(fd);
    assert.is(status.nlink, 0);
    assert.is(status.mode & PERMISSION_BITS, PRIVATE_MODE);
    assert.is(fileInfo(fd).kind, 'file');
    assert.is(openFlags(fd) & O_CLOEXEC, O_CLOEXEC);
    assert.equal(readdirSync(dir), []);
  } finally {
    closeSync(fd);
  }
});

guard.test('it holds data, and the directory stays empty after close', () => {
  const fd = openTmpfile(dir, {});
  try {
    roundTrip(fd, Buffer.alloc(DATA_BYTES, PATTERN_BYTE), Buffer.alloc(DATA_BYTES));
    assert.equal(readdirSync(dir), []);
  } finally {
    closeSync(fd);
  }
  assert.equal(readdirSync(dir), []);
});

guard.test('two files are two inodes', () => {
  const first = openTmpfile(dir);
  const second = openTmpfile(dir);
  try {
    assert.is.not(fileInfo(first).ino, fileInfo(second).ino);
  } finally {
    closeSync(first);
    closeSync(second);
  }
});

guard.test('direct: true works through an aligned view', () => {
  const fd = openTmpfile(dir, { direct: true });
  try {
    const source = alignedView(new SharedArrayBuffer(DATA_BYTES + DIRECT_IO_ALIGNMENT_BYTES), DATA_BYTES);
    source.fill(PATTERN_BYTE);
    const target = alignedView(new SharedArrayBuffer(DATA_BYTES + DIRECT_IO_ALIGNMENT_BYTES), DATA_BYTES);
    roundTrip(fd, source, target);
  } finally {
    closeSync(fd);
  }
});

guard.test('a missing directory fails ENOENT, naming the path', () => {
  const missing = path.join(dir, 'missing');
  const error = expectSystemError(() => openTmpfile(missing), 'ENOENT', 'open');
  assert.is(error.path, missing);
  assert.is(error.message, `open ${missing}: No such file or directory`);
});

guard.test('a regular file as the directory fails ENOTDIR', () => {
  const file = path.join(dir, 'not-a-directory');
  writeFileSync(file, '');
  try {
    expectSystemError(() => openTmpfile(file), 'ENOTDIR', 'open');
  } finally {
    rmSync(file);
  }
});

tmpfile.run();

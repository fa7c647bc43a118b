// Goal: fallocate's failures reach JavaScript as coded errors the storage
// code can act on: ENOSPC when the file system is full (the diff storage's
// "grow failed"), EBADF on a closed or read-only fd, EINVAL for a zero
// length, ENODEV for a character device.
// Method: a 1 MiB tmpfs mounted for the test to fill; plain files in a temp
// dir for the rest; each error is checked for code, errno, syscall and the
// message "fallocate: <strerror>".

import { closeSync, fstatSync, openSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FALLOC_FL_KEEP_SIZE, errnoName, fallocate, isNativeError } from '../../src/native/index';
import { expectSystemError, gate, mountTmpfs, tempDir, type Mount, type TempDir } from '../lib/system';

const TINY_TMPFS_BYTES = 1 << 20;
/** Twice the whole file system: cannot fit. */
const TOO_LARGE_BYTES = 2 * TINY_TMPFS_BYTES;
const BLOCK_BYTES = 4096;

function expectCode(call: () => void, code: string): void {
  const error = expectSystemError(call, code, 'fallocate');
  assert.ok(isNativeError(error));
  assert.is(errnoName(error.errno), code);
  assert.match(error.message, /^fallocate: [A-Z]/);
  assert.is(error.path, undefined);
}

// ── ENOSPC ──────────────────────────────────────────────────────────────

const full = suite('fallocate on a full file system');
const fullGate = gate(full, 'fallocate ENOSPC', { root: true, tools: ['mount', 'umount'] });
let tiny: Mount | undefined;

fullGate.before(() => {
  tiny = mountTmpfs(TINY_TMPFS_BYTES);
});
fullGate.after(() => tiny?.unmount());

fullGate.test('a request larger than the file system fails ENOSPC', () => {
  const fd = openSync(path.join(tiny!.path, 'storage'), 'w+');
  try {
    expectCode(() => fallocate(fd, 0, TOO_LARGE_BYTES, 0), 'ENOSPC');
    // A growth step that fails leaves the file as it was: the engine may retry smaller.
    assert.is(fstatSync(fd).size, 0);
    fallocate(fd, 0, BLOCK_BYTES, 0);
    assert.is(fstatSync(fd).size, BLOCK_BYTES);
  } finally {
    closeSync(fd);
  }
});

fullGate.test('KEEP_SIZE past the free space fails ENOSPC too', () => {
  const fd = openSync(path.join(tiny!.path, 'storage-keep'), 'w+');
  try {
    expectCode(() => fallocate(fd, 0, TOO_LARGE_BYTES, FALLOC_FL_KEEP_SIZE), 'ENOSPC');
  } finally {
    closeSync(fd);
  }
});

full.run();

// ── bad descriptors and ranges ──────────────────────────────────────────

const bad = suite('fallocate on bad descriptors and ranges');
let work: TempDir | undefined;

bad.before(() => {
  work = tempDir('fallocate-errors');
});
bad.after(() => work?.remove());

bad('a closed fd fails EBADF', () => {
  const fd = openSync(path.join(work!.path, 'closed'), 'w+');
  closeSync(fd);
  expectCode(() => fallocate(fd, 0, BLOCK_BYTES, 0), 'EBADF');
});

bad('a read-only fd fails EBADF', () => {
  const file = path.join(work!.path, 'read-only');
  closeSync(openSync(file, 'w'));
  const fd = openSync(file, 'r');
  try {
    expectCode(() => fallocate(fd, 0, BLOCK_BYTES, 0), 'EBADF');
  } finally {
    closeSync(fd);
  }
});

bad('a zero length fails EINVAL', () => {
  const fd = openSync(path.join(work!.path, 'zero'), 'w+');
  try {
    expectCode(() => fallocate(fd, 0, 0, 0), 'EINVAL');
  } finally {
    closeSync(fd);
  }
});

bad('a character device fails ENODEV', () => {
  const fd = openSync('/dev/null', 'r+');
  try {
    expectCode(() => fallocate(fd, 0, BLOCK_BYTES, 0), 'ENODEV');
  } finally {
    closeSync(fd);
  }
});

bad.run();

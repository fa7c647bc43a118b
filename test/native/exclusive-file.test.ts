// Goal: openExclusive makes a regular-file volume exclusive among ublksnap
// opens: a second openExclusive of the same file — in this process or in
// another — fails with code EWOULDBLOCK from flock, and succeeds once the
// first fd is closed. Only block devices and regular files are volumes;
// a FIFO is refused without blocking. Path errors name the path.
// Method: files in a temp dir; the other process is a child `node` that
// loads the compiled module and reports the code it got on stdout.

import { spawnSync } from 'node:child_process';
import { closeSync, constants, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openExclusive } from '../../src/native/index';
import { expectSystemError, runTool, tempDir, type TempDir } from '../lib/system';

/** The compiled module the child process loads. */
const NATIVE_MODULE = path.join(__dirname, '../../src/native/index.js');
const CHILD_TIMEOUT_MS = 30_000;
/** EWOULDBLOCK's number on Linux (the same as EAGAIN). */
const EWOULDBLOCK_ERRNO = 11;

/** Tries openExclusive(file) in a fresh process; returns 'OK' or the error code. */
function openInOtherProcess(file: string): string {
  const script = `
    const native = require(${JSON.stringify(NATIVE_MODULE)});
    try {
      require('node:fs').closeSync(native.openExclusive(${JSON.stringify(file)}, { write: true, direct: false }));
      process.stdout.write('OK');
    } catch (error) {
      process.stdout.write(String(error.code));
    }`;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: CHILD_TIMEOUT_MS });
  assert.is(child.status, 0, child.stderr);
  return child.stdout;
}

/** The open flags of fd, from /proc/self/fdinfo. */
function openFlags(fd: number): number {
  const match = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  assert.ok(match, 'fdinfo has a flags line');
  return parseInt(match[1], 8);
}

const exclusive = suite('openExclusive on a regular file');
let work: TempDir | undefined;
let file_index = 0;

function freshFile(): string {
  file_index += 1;
  const file = path.join(work!.path, `volume-${file_index}.img`);
  writeFileSync(file, '');
  return file;
}

exclusive.before(() => {
  work = tempDir('exclusive-file');
});
exclusive.after(() => work?.remove());

exclusive('a second open in this process fails EWOULDBLOCK from flock', () => {
  const file = freshFile();
  const fd = openExclusive(file, { write: true, direct: false });
  try {
    const error = expectSystemError(() => openExclusive(file, { write: false, direct: false }), 'EWOULDBLOCK', 'flock');
    assert.is(error.errno, EWOULDBLOCK_ERRNO);
    assert.is(error.path, file);
    assert.is(error.message, `flock ${file}: Resource temporarily unavailable`);
  } finally {
    closeSync(fd);
  }
});

exclusive('the claim ends when the fd closes', () => {
  const file = freshFile();
  closeSync(openExclusive(file, { write: true, direct: false }));
  closeSync(openExclusive(file, { write: true, direct: false }));
});

exclusive('another process is excluded while the fd is open, and admitted after', () => {
  const file = freshFile();
  const fd = openExclusive(file, { write: true, direct: false });
  try {
    assert.is(openInOtherProcess(file), 'EWOULDBLOCK');
  } finally {
    closeSync(fd);
  }
  assert.is(openInOtherProcess(file), 'OK');
});

exclusive('a missing file fails ENOENT from open, naming the path', () => {
  const file = path.join(work!.path, 'missing.img');
  const error = expectSystemError(() => openExclusive(file, { write: true, direct: false }), 'ENOENT', 'open');
  assert.is(error.path, file);
  assert.is(error.message, `open ${file}: No such file or directory`);
});

exclusive('a directory opened for writing fails EISDIR', () => {
  const dir = path.join(work!.path, 'a-directory');
  mkdirSync(dir);
  expectSystemError(() => openExclusive(dir, { write: true, direct: false }), 'EISDIR', 'open');
});

exclusive('a read-only directory fails EISDIR; a FIFO or a character device fails ENOTBLK without blocking', () => {
  const dir = path.join(work!.path, 'another-directory');
  mkdirSync(dir);
  expectSystemError(() => openExclusive(dir, { write: false, direct: false }), 'EISDIR', 'open');
  const fifo = path.join(work!.path, 'fifo');
  runTool('mkfifo', [fifo]);
  // Without O_NONBLOCK this open would wait for a writer forever.
  expectSystemError(() => openExclusive(fifo, { write: false, direct: false }), 'ENOTBLK', 'open');
  expectSystemError(() => openExclusive('/dev/null', { write: true, direct: false }), 'ENOTBLK', 'open');
});

exclusive('the fd blocks: O_NONBLOCK is cleared after the open', () => {
  const fd = openExclusive(freshFile(), { write: true, direct: false });
  try {
    assert.is(openFlags(fd) & constants.O_NONBLOCK, 0);
  } finally {
    closeSync(fd);
  }
});

exclusive('a read-only exclusive open excludes a writer too', () => {
  const file = freshFile();
  const fd = openExclusive(file, { write: false, direct: false });
  try {
    expectSystemError(() => openExclusive(file, { write: true, direct: false }), 'EWOULDBLOCK', 'flock');
    // A plain open is not excluded: the lock is advisory.
    closeSync(openSync(file, 'r+'));
  } finally {
    closeSync(fd);
  }
});

exclusive.run();

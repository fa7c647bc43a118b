// Goal: openExclusive claims a block device the way the kernel's O_EXCL
// does: a second exclusive open fails EBUSY, so does opening a mounted
// device, and the claim ends when the fd closes. The fd is O_CLOEXEC, and
// O_DIRECT and the access mode follow the options.
// Method: a loop device over a 64 MiB sparse file; the fd's open flags are
// read back from /proc/self/fdinfo; for the mounted case an ext4 is made on
// the loop device and mounted.

import { closeSync, constants, openSync, readFileSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openExclusive } from '../../src/native/index';
import {
  expectSystemError, gate, makeLoopDevice, mkfsExt4AndMount, tempDir, type LoopDevice, type TempDir,
} from '../lib/system';

const VOLUME_BYTES = 64 << 20;
/** O_CLOEXEC as fdinfo shows it (asm-generic; x86_64 and arm64 agree). */
const O_CLOEXEC = 0o2000000;
/** The access-mode bits of the open flags. */
const O_ACCMODE = 0o3;

/** The open flags of fd, from /proc/self/fdinfo. */
function openFlags(fd: number): number {
  const match = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  assert.ok(match, 'fdinfo has a flags line');
  return parseInt(match[1], 8);
}

const exclusive = suite('openExclusive on a block device');
const guard = gate(exclusive, 'openExclusive on a block device', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount', 'umount'] });
let work: TempDir | undefined;
let loop: LoopDevice | undefined;

guard.before(() => {
  work = tempDir('exclusive-block');
  const image = path.join(work.path, 'volume.img');
  closeSync(openSync(image, 'w'));
  truncateSync(image, VOLUME_BYTES);
  loop = makeLoopDevice(image);
});
guard.after(() => {
  loop?.detach();
  work?.remove();
});

guard.test('a second exclusive open fails EBUSY, read-only or not', () => {
  const fd = openExclusive(loop!.device, { write: true, direct: false });
  try {
    const error = expectSystemError(() => openExclusive(loop!.device, { write: true, direct: false }), 'EBUSY', 'open');
    assert.is(error.path, loop!.device);
    assert.is(error.message, `open ${loop!.device}: Device or resource busy`);
    expectSystemError(() => openExclusive(loop!.device, { write: false, direct: true }), 'EBUSY', 'open');
  } finally {
    closeSync(fd);
  }
});

guard.test('the claim ends when the fd closes', () => {
  closeSync(openExclusive(loop!.device, { write: true, direct: false }));
  const fd = openExclusive(loop!.device, { write: true, direct: false });
  closeSync(fd);
});

guard.test('a plain open still succeeds: O_EXCL excludes exclusive holders only', () => {
  const fd = openExclusive(loop!.device, { write: true, direct: false });
  try {
    closeSync(openSync(loop!.device, 'r'));
  } finally {
    closeSync(fd);
  }
});

guard.test('the fd is O_CLOEXEC; O_DIRECT and the access mode follow the options', () => {
  const plain = openExclusive(loop!.device, { write: false, direct: false });
  const plain_flags = openFlags(plain);
  closeSync(plain);
  assert.is(plain_flags & O_ACCMODE, constants.O_RDONLY);
  assert.is(plain_flags & constants.O_DIRECT, 0);
  assert.is(plain_flags & O_CLOEXEC, O_CLOEXEC);
  assert.is(plain_flags & constants.O_NONBLOCK, 0);

  const direct = openExclusive(loop!.device, { write: true, direct: true });
  const direct_flags = openFlags(direct);
  closeSync(direct);
  assert.is(direct_flags & O_ACCMODE, constants.O_RDWR);
  assert.is(direct_flags & constants.O_DIRECT, constants.O_DIRECT);
  assert.is(direct_flags & O_CLOEXEC, O_CLOEXEC);
});

guard.test('a mounted device fails EBUSY, and is free again after umount', () => {
  const mount = mkfsExt4AndMount(loop!.device);
  try {
    expectSystemError(() => openExclusive(loop!.device, { write: false, direct: false }), 'EBUSY', 'open');
  } finally {
    mount.unmount();
  }
  closeSync(openExclusive(loop!.device, { write: false, direct: false }));
});

exclusive.run();

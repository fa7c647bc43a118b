// Goal: error codes are the errno names Node and the C library use: the
// addon's table names at least the ~40 common errnos exactly as
// os.constants.errno does (aliases sharing a number get the name Node
// prints), and an unknown number falls back to "E<number>".
// Method: every entry of os.constants.errno is looked up with errnoName
// (plus the two required names Node leaves out, by their Linux numbers).

import os from 'node:os';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { errnoName } from '../../src/native/index';

/** The names the table must know: those the storage and I/O code meets. */
const REQUIRED_NAMES = [
  'EPERM', 'ENOENT', 'EINTR', 'EIO', 'ENXIO', 'EBADF', 'EAGAIN', 'ENOMEM', 'EACCES', 'EFAULT', 'ENOTBLK', 'EBUSY',
  'EEXIST', 'EXDEV', 'ENODEV', 'ENOTDIR', 'EISDIR', 'EINVAL', 'ENFILE', 'EMFILE', 'ENOTTY', 'EFBIG', 'ENOSPC',
  'ESPIPE', 'EROFS', 'EPIPE', 'ERANGE', 'EDEADLK', 'ENAMETOOLONG', 'ENOLCK', 'ENOSYS', 'ENOTEMPTY', 'ELOOP',
  'ENODATA', 'ETIME', 'EOVERFLOW', 'EOPNOTSUPP', 'ETIMEDOUT', 'ECONNREFUSED', 'ECONNRESET', 'ESTALE', 'EDQUOT',
  'ECANCELED', 'EREMOTEIO',
];
/** Linux numbers (asm-generic: x86_64, arm64) of required names os.constants.errno leaves out. */
const NUMBERS_NODE_LEAVES_OUT: Record<string, number> = { ENOTBLK: 15, EREMOTEIO: 121 };
/** Names that share a number with another; the table gives the other. */
const ALIASES: Record<string, string> = { EWOULDBLOCK: 'EAGAIN', ENOTSUP: 'EOPNOTSUPP', EDEADLOCK: 'EDEADLK' };
/** A number no errno has. */
const UNKNOWN_ERRNO = 4095;

const names = suite('errno names');

names('every required name is known by its number', () => {
  const numbers = { ...NUMBERS_NODE_LEAVES_OUT, ...(os.constants.errno as Record<string, number>) };
  for (const name of REQUIRED_NAMES) {
    assert.type(numbers[name], 'number', `${name} exists on this platform`);
    assert.is(errnoName(numbers[name]), name);
  }
});

names('every errno Node knows gets its name, its alias\'s, or the fallback', () => {
  for (const [name, number] of Object.entries(os.constants.errno as Record<string, number>)) {
    const expected = [name, ALIASES[name], `E${number}`];
    assert.ok(expected.includes(errnoName(number)), `${name} (${number}) is named ${errnoName(number)}`);
  }
});

names('an unknown number falls back to E<number>', () => {
  assert.is(errnoName(UNKNOWN_ERRNO), `E${UNKNOWN_ERRNO}`);
  assert.is(errnoName(0), 'E0');
});

names.run();

// Goal: no argument a caller can pass crashes the process or reaches a
// system call as something else: wrong counts, wrong types, negative,
// NaN, infinite, fractional and unsafe numbers (2^60), NUL in paths and bad
// options are TypeErrors naming the function; valid-looking but closed fds
// are coded EBADF errors; an unknown option key is a TypeError (a typo must
// not silently drop O_DIRECT); a throwing getter or Proxy trap propagates
// its own error.
// Method: a table of bad argument lists per exported function, each called
// and its error classified; then a good call shows the addon still works.

import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as native from '../../src/native/index';
import { expectSystemError, tempDir, thrownBy, type TempDir } from '../lib/system';

/** An fd number far above anything this process opens, so never valid. */
const NEVER_OPEN_FD = 1_000_000;
const BLOCK_BYTES = 4096;
/** A power of two that is still a safe integer: valid as an alignment. */
const LARGEST_SAFE_POWER_OF_TWO = 2 ** 52;

/** Values that are never a valid count, offset, mode or fd. */
const BAD_NUMBERS: Array<[string, unknown]> = [
  ['undefined', undefined], ['null', null], ['a string', '4096'], ['a boolean', true], ['an object', {}],
  ['a bigint', 4096n], ['-1', -1], ['NaN', NaN], ['Infinity', Infinity], ['-Infinity', -Infinity],
  ['2^60', 2 ** 60], ['2^53', 2 ** 53], ['1.5', 1.5],
];
/** Beyond what an fd (an int) can be, though a safe integer. */
const BAD_FDS: Array<[string, unknown]> = [...BAD_NUMBERS, ['2^31', 2 ** 31]];
const BAD_PATHS: Array<[string, unknown]> = [
  ['undefined', undefined], ['a number', 42], ['an empty string', ''], ['a NUL inside', '/tmp/a\0b'], ['an object', {}],
  ['a Buffer', Buffer.from('/tmp')],
];
const BAD_OPTIONS: Array<[string, unknown]> = [
  ['a string', 'write'], ['a number', 1], ['an array', []], ['a function', () => true], ['null', null],
  ['write: "yes"', { write: 'yes' }], ['direct: 1', { direct: 1 }], ['write: null', { write: null }],
  ['a misspelt key', { drect: true }],
];
const BAD_BUFFERS: Array<[string, unknown]> = [
  ['undefined', undefined], ['a number', 4096], ['a string', 'buffer'], ['an object', {}], ['null', null], ['an array', [1, 2]],
];
const BAD_ALIGNMENTS: Array<[string, unknown]> = [...BAD_NUMBERS, ['0', 0], ['3', 3], ['4097', 4097]];

type Call = (...args: unknown[]) => unknown;

/** Asserts that call(...args) throws a TypeError whose message names the function. */
function expectTypeError(name: string, call: Call, args: unknown[], label: string): void {
  const error = thrownBy(() => call(...args));
  assert.instance(error, TypeError, `${name} with ${label}: expected a TypeError, got ${String(error)}`);
  assert.ok((error as Error).message.startsWith(name), `${name} with ${label}: the message names the function: ${(error as Error).message}`);
}

/** Every bad value at position index, the other arguments good. */
function expectEachTypeError(name: string, call: Call, good_args: unknown[], index: number, bad: Array<[string, unknown]>): void {
  for (const [label, value] of bad) {
    const args = [...good_args];
    args[index] = value;
    expectTypeError(name, call, args, `argument ${index} = ${label}`);
  }
}

const bad = suite('every function refuses bad arguments');
let work: TempDir | undefined;
let fd = -1;
let closed_fd = -1;

bad.before(() => {
  work = tempDir('bad-arguments');
  fd = openSync(path.join(work.path, 'file'), 'w+');
  closed_fd = openSync(path.join(work.path, 'closed'), 'w+');
  closeSync(closed_fd);
});
bad.after(() => {
  if (fd >= 0) closeSync(fd);
  work?.remove();
});

bad('fallocate', () => {
  const call = native.fallocate as Call;
  const good = [fd, 0, BLOCK_BYTES, 0];
  expectTypeError('fallocate', call, [], 'no arguments');
  expectTypeError('fallocate', call, [fd, 0, BLOCK_BYTES], 'three arguments');
  expectTypeError('fallocate', call, [...good, 0], 'five arguments');
  expectEachTypeError('fallocate', call, good, 0, BAD_FDS);
  expectEachTypeError('fallocate', call, good, 1, BAD_NUMBERS);
  expectEachTypeError('fallocate', call, good, 2, BAD_NUMBERS);
  expectEachTypeError('fallocate', call, good, 3, [...BAD_NUMBERS, ['2^31', 2 ** 31]]);
  expectSystemError(() => native.fallocate(closed_fd, 0, BLOCK_BYTES, 0), 'EBADF', 'fallocate');
  expectSystemError(() => native.fallocate(NEVER_OPEN_FD, 0, BLOCK_BYTES, 0), 'EBADF', 'fallocate');
});

bad('fdatasync, fileInfo, blockDeviceInfo', () => {
  const cases: Array<[string, Call, string]> = [
    ['fdatasync', native.fdatasync as Call, 'fdatasync'],
    ['fileInfo', native.fileInfo as Call, 'fstat'],
    ['blockDeviceInfo', native.blockDeviceInfo as Call, 'fstat'],
  ];
  for (const [name, call, syscall] of cases) {
    expectTypeError(name, call, [], 'no arguments');
    expectTypeError(name, call, [fd, fd], 'two arguments');
    expectEachTypeError(name, call, [fd], 0, BAD_FDS);
    expectSystemError(() => call(closed_fd), 'EBADF', syscall);
    expectSystemError(() => call(NEVER_OPEN_FD), 'EBADF', syscall);
  }
});

bad('openExclusive and openTmpfile', () => {
  const cases: Array<[string, Call, unknown[]]> = [
    ['openExclusive', native.openExclusive as Call, [path.join(work!.path, 'file'), { write: false, direct: false }]],
    ['openTmpfile', native.openTmpfile as Call, [work!.path, { direct: false }]],
  ];
  for (const [name, call, good] of cases) {
    expectTypeError(name, call, [], 'no arguments');
    expectTypeError(name, call, [...good, {}], 'three arguments');
    expectEachTypeError(name, call, good, 0, BAD_PATHS);
    expectEachTypeError(name, call, good, 1, BAD_OPTIONS);
    // A getter that throws: its own error comes through, nothing else happens.
    const trap = new Error('getter trap');
    const options = { get direct(): boolean { throw trap; } };
    assert.is(thrownBy(() => call(good[0], options)), trap, `${name}: the getter's error propagates`);
    const keys_trap = new Proxy({}, { ownKeys() { throw trap; } });
    assert.is(thrownBy(() => call(good[0], keys_trap)), trap, `${name}: the ownKeys trap's error propagates`);
    // And the good call still works after all that.
    closeSync(call(...good) as number);
  }
});

bad('alignedOffset, bufferAddress, alignedView', () => {
  const buffer = new ArrayBuffer(2 * BLOCK_BYTES);
  expectTypeError('alignedOffset', native.alignedOffset as Call, [], 'no arguments');
  expectTypeError('alignedOffset', native.alignedOffset as Call, [buffer], 'one argument');
  expectEachTypeError('alignedOffset', native.alignedOffset as Call, [buffer, BLOCK_BYTES], 0, BAD_BUFFERS);
  expectEachTypeError('alignedOffset', native.alignedOffset as Call, [buffer, BLOCK_BYTES], 1, BAD_ALIGNMENTS);
  assert.ok(native.alignedOffset(buffer, LARGEST_SAFE_POWER_OF_TWO) < LARGEST_SAFE_POWER_OF_TWO);

  expectTypeError('bufferAddress', native.bufferAddress as Call, [], 'no arguments');
  expectTypeError('bufferAddress', native.bufferAddress as Call, [buffer, buffer], 'two arguments');
  expectEachTypeError('bufferAddress', native.bufferAddress as Call, [buffer], 0, BAD_BUFFERS);

  expectEachTypeError('alignedView', native.alignedView as Call, [buffer, BLOCK_BYTES], 1, BAD_NUMBERS.filter(([label]) => label !== 'undefined'));
  expectEachTypeError('alignedOffset', native.alignedView as Call, [buffer, BLOCK_BYTES, BLOCK_BYTES], 2, BAD_ALIGNMENTS.filter(([label]) => label !== 'undefined'));
  assert.throws(() => native.alignedView(buffer, 2 * BLOCK_BYTES), RangeError);
});

bad('errnoName', () => {
  const call = native.errnoName as Call;
  expectTypeError('errnoName', call, [], 'no arguments');
  expectEachTypeError('errnoName', call, [2], 0, [...BAD_NUMBERS, ['2^31', 2 ** 31]]);
});

bad.run();

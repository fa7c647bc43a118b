// The fixed-size records that cross the request and completion rings
// between frontends (main thread) and the I/O actors. Both rings are
// ring.ts rings; this file only names the words and packs them.
//
// Request record (Int32 words), with the range each word promises (every
// minimum is 0; packRequest asserts each bound, one field at a time):
//
//   [0] TAG           the frontend's request slot         0 .. QUEUE_DEPTH_MAX - 1 (depth ≤ QUEUE_DEPTH_MAX)
//   [1] QUEUE         the frontend queue id               0 .. 2^31 - 1 (which completion ring, which buffers)
//   [2] OP            IoOp                                0 .. IoOp.WRITE_ZEROES
//   [3] FLAGS         IoFlags bits                        only FUA | MAY_UNMAP
//   [4] VOLUME        volume index                        0 .. VOLUME_INDEX_LIMIT - 1
//   [5] SERIAL        image requests: the snapshot        0 .. 2^31 - 1; 0 for volumes
//                     serial they address
//   [6] OFFSET_LOW    byte offset, low 32 bits            read as unsigned
//   [7] OFFSET_HIGH   byte offset, high bits              0 .. 2^21 - 1: offsets stay ≤ 2^53 - 1
//   [8] LENGTH        bytes                               0 .. QUEUE_IO_BYTES_MAX
//
// Completion record:
//   [0] TAG           as above
//   [1] ERRNO         0 on success, else a positive errno  0 .. ERRNO_MAX
//
// native/include/ublksnap-layout.h is generated from the runtime tables
// below (REQUEST_RECORD_LAYOUT and its neighbours) by
// scripts/gen-layout-header.js; test/native/layout-header.test.ts fails
// when the two disagree. The const enums stay for the hot path: TypeScript
// inlines them, so reading a word costs no property lookup.

import { AssertionError, assert } from './assert';
import { QUEUE_DEPTH_MAX, QUEUE_IO_BYTES_MAX } from './limits';

/** The OP word: what a request asks for. */
export const enum IoOp {
  READ = 0,
  WRITE = 1,
  FLUSH = 2,
  DISCARD = 3,
  WRITE_ZEROES = 4,
}

/** The FLAGS word: bits a frontend passes with a request. */
export const enum IoFlags {
  NONE = 0,
  /** Force unit access: the write is durable when it completes. */
  FUA = 1,
  /** WRITE_ZEROES may deallocate the range (the client allowed holes). */
  MAY_UNMAP = 2,
}

export const enum RequestWord {
  TAG = 0,
  QUEUE = 1,
  OP = 2,
  FLAGS = 3,
  VOLUME = 4,
  SERIAL = 5,
  OFFSET_LOW = 6,
  OFFSET_HIGH = 7,
  LENGTH = 8,
}
export const REQUEST_WORDS = 9;

export const enum CompletionWord {
  TAG = 0,
  ERRNO = 1,
}
export const COMPLETION_WORDS = 2;

const TWO_POW_32 = 2 ** 32;
const INT32_MAX = 2 ** 31 - 1;
/** Linux errnos are below 4096 (MAX_ERRNO in include/linux/err.h). */
export const ERRNO_MAX = 4095;
/** Every IoFlags bit a request may carry. */
export const IO_FLAGS_MASK = IoFlags.FUA | IoFlags.MAY_UNMAP;

/** The request words by name, at run time (scripts/gen-layout-header.js, tests). */
export const REQUEST_RECORD_LAYOUT = Object.freeze({
  TAG: RequestWord.TAG,
  QUEUE: RequestWord.QUEUE,
  OP: RequestWord.OP,
  FLAGS: RequestWord.FLAGS,
  VOLUME: RequestWord.VOLUME,
  SERIAL: RequestWord.SERIAL,
  OFFSET_LOW: RequestWord.OFFSET_LOW,
  OFFSET_HIGH: RequestWord.OFFSET_HIGH,
  LENGTH: RequestWord.LENGTH,
});

/** The completion words by name, at run time. */
export const COMPLETION_RECORD_LAYOUT = Object.freeze({
  TAG: CompletionWord.TAG,
  ERRNO: CompletionWord.ERRNO,
});

/** IoOp at run time. */
export const IO_OP_VALUES = Object.freeze({
  READ: IoOp.READ,
  WRITE: IoOp.WRITE,
  FLUSH: IoOp.FLUSH,
  DISCARD: IoOp.DISCARD,
  WRITE_ZEROES: IoOp.WRITE_ZEROES,
});

/** IoFlags at run time. */
export const IO_FLAG_VALUES = Object.freeze({
  NONE: IoFlags.NONE,
  FUA: IoFlags.FUA,
  MAY_UNMAP: IoFlags.MAY_UNMAP,
});

/**
 * The largest value of each field (inclusive; every field starts at 0), as
 * drawn at the top of this file. OFFSET and LENGTH are in bytes; the offset
 * spans OFFSET_LOW and OFFSET_HIGH.
 */
export const REQUEST_FIELD_MAX = Object.freeze({
  TAG: QUEUE_DEPTH_MAX - 1,
  QUEUE: INT32_MAX,
  OP: IoOp.WRITE_ZEROES,
  FLAGS: IO_FLAGS_MASK,
  VOLUME: 2 ** 16 - 1,
  SERIAL: INT32_MAX,
  OFFSET_BYTES: Number.MAX_SAFE_INTEGER,
  LENGTH_BYTES: QUEUE_IO_BYTES_MAX,
});

/** The largest value of each completion field (inclusive; from 0). */
export const COMPLETION_FIELD_MAX = Object.freeze({
  TAG: REQUEST_FIELD_MAX.TAG,
  ERRNO: ERRNO_MAX,
});

/** Load-time check: the words of a record are 0 .. words - 1, each named once. */
function checkRecordLayout(layout: Readonly<Record<string, number>>, words: number, what: string): void {
  const seen = new Set<number>();
  for (const [name, index] of Object.entries(layout)) {
    assert(Number.isInteger(index) && index >= 0 && index < words, `${what}: word ${name} = ${index} outside [0, ${words})`);
    assert(!seen.has(index), `${what}: word ${index} named twice (${name})`);
    seen.add(index);
  }
  assert(seen.size === words, `${what}: ${words} words but ${seen.size} named`);
}
checkRecordLayout(REQUEST_RECORD_LAYOUT, REQUEST_WORDS, 'request record');
checkRecordLayout(COMPLETION_RECORD_LAYOUT, COMPLETION_WORDS, 'completion record');
assert(REQUEST_RECORD_LAYOUT.OFFSET_HIGH === REQUEST_RECORD_LAYOUT.OFFSET_LOW + 1,
  'request record: the offset halves are adjacent, low first');

export function writeOffset(record: Int32Array, offset_bytes: number): void {
  record[RequestWord.OFFSET_LOW] = offset_bytes % TWO_POW_32 | 0;
  record[RequestWord.OFFSET_HIGH] = Math.floor(offset_bytes / TWO_POW_32);
}

export function readOffset(record: Int32Array): number {
  return (record[RequestWord.OFFSET_HIGH]! * TWO_POW_32) + (record[RequestWord.OFFSET_LOW]! >>> 0);
}

/**
 * Writes every word of a request record, asserting each field's range
 * first (one check per field, so the report names the field). Nothing is
 * allocated unless a check fails.
 */
export function packRequest(record: Int32Array, tag: number, queue_id: number, op: IoOp, flags: number,
  volume_index: number, serial: number, offset_bytes: number, length_bytes: number): void {
  checkField(tag, REQUEST_FIELD_MAX.TAG, 'TAG');
  checkField(queue_id, REQUEST_FIELD_MAX.QUEUE, 'QUEUE');
  checkField(op, REQUEST_FIELD_MAX.OP, 'OP');
  checkField(flags, REQUEST_FIELD_MAX.FLAGS, 'FLAGS');
  if ((flags & ~IO_FLAGS_MASK) !== 0) refuseField('FLAGS', flags, IO_FLAGS_MASK);
  checkField(volume_index, REQUEST_FIELD_MAX.VOLUME, 'VOLUME');
  checkField(serial, REQUEST_FIELD_MAX.SERIAL, 'SERIAL');
  checkField(offset_bytes, REQUEST_FIELD_MAX.OFFSET_BYTES, 'OFFSET');
  checkField(length_bytes, REQUEST_FIELD_MAX.LENGTH_BYTES, 'LENGTH');
  record[RequestWord.TAG] = tag;
  record[RequestWord.QUEUE] = queue_id;
  record[RequestWord.OP] = op;
  record[RequestWord.FLAGS] = flags;
  record[RequestWord.VOLUME] = volume_index;
  record[RequestWord.SERIAL] = serial;
  writeOffset(record, offset_bytes);
  record[RequestWord.LENGTH] = length_bytes;
}

/** Writes a completion record, asserting both fields' ranges. */
export function packCompletion(record: Int32Array, tag: number, errno: number): void {
  checkField(tag, COMPLETION_FIELD_MAX.TAG, 'TAG');
  checkField(errno, COMPLETION_FIELD_MAX.ERRNO, 'ERRNO');
  record[CompletionWord.TAG] = tag;
  record[CompletionWord.ERRNO] = errno;
}

/** An integer in [0, max]; `field` is a literal, so a passing check allocates nothing. */
function checkField(value: number, max: number, field: string): void {
  if (!(Number.isInteger(value) && value >= 0 && value <= max)) refuseField(field, value, max);
}

function refuseField(field: string, value: number, max: number): never {
  throw new AssertionError(`record field ${field} = ${value} outside [0, ${max}]`);
}

/**
 * Export handles pack (serial, kind, volume index) into one safe integer:
 * handle = serial × 2^17 + image × 2^16 + volume_index.
 */
export const VOLUME_INDEX_LIMIT = REQUEST_FIELD_MAX.VOLUME + 1;
const IMAGE_BIT = VOLUME_INDEX_LIMIT;
const SERIAL_UNIT = 2 * IMAGE_BIT;
// The largest serial (2^31 - 1) times 2^17 stays below 2^53: every handle is a safe integer.
assert(Number.isSafeInteger(REQUEST_FIELD_MAX.SERIAL * SERIAL_UNIT + IMAGE_BIT + REQUEST_FIELD_MAX.VOLUME),
  'export handles must stay safe integers');

export function packHandle(volume_index: number, image_serial: number): number {
  return image_serial > 0 ? image_serial * SERIAL_UNIT + IMAGE_BIT + volume_index : volume_index;
}

export function handleVolume(handle: number): number {
  return handle % IMAGE_BIT;
}

export function handleSerial(handle: number): number {
  return Math.floor(handle / SERIAL_UNIT);
}

export function handleIsImage(handle: number): boolean {
  return Math.floor(handle / IMAGE_BIT) % 2 === 1;
}

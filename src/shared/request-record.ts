// The fixed-size records that cross the request and completion rings
// between frontends (main thread) and the I/O actors. Both rings are
// ring.ts rings; this file only names the words.
//
// Request record (Int32 words):
//   [0] TAG           the frontend's request slot, 0..depth-1
//   [1] QUEUE         the frontend queue id (which completion ring, which buffers)
//   [2] OP            IoOp
//   [3] FLAGS         IoFlags
//   [4] VOLUME        volume index
//   [5] SERIAL        image requests: the snapshot serial they address; 0 for volumes
//   [6] OFFSET_LOW    byte offset, low 32 bits (unsigned)
//   [7] OFFSET_HIGH   byte offset, high bits (offsets stay below 2^53)
//   [8] LENGTH        bytes
//
// Completion record:
//   [0] TAG
//   [1] ERRNO         0 on success
//
// native/include/ublksnap-layout.h is generated from this file
// (scripts/gen-layout-header.js); test/native/layout-header.test.ts fails
// when the two disagree.

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

export function writeOffset(record: Int32Array, offset_bytes: number): void {
  record[RequestWord.OFFSET_LOW] = offset_bytes % TWO_POW_32 | 0;
  record[RequestWord.OFFSET_HIGH] = Math.floor(offset_bytes / TWO_POW_32);
}

export function readOffset(record: Int32Array): number {
  return (record[RequestWord.OFFSET_HIGH]! * TWO_POW_32) + (record[RequestWord.OFFSET_LOW]! >>> 0);
}

/**
 * Export handles pack (serial, kind, volume index) into one safe integer:
 * handle = serial × 2^17 + image × 2^16 + volume_index.
 */
export const VOLUME_INDEX_LIMIT = 2 ** 16;
const IMAGE_BIT = 2 ** 16;
const SERIAL_UNIT = 2 ** 17;

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

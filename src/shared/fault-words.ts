// A fault-injecting layer for volume reads, used only by tests: it makes
// reads of a byte range of one volume fail with EIO, as a dying disk
// would, so the copy-on-write error path runs for real. The engine creates
// it only with EngineOptions.fault_injection; otherwise volume I/O never
// looks here.
//
// Layout (Float64 words): [0] ARMED (0/1) [1] FIRST_BYTE [2] END_BYTE (exclusive)

const ARMED = 0;
const FIRST_BYTE = 1;
const END_BYTE = 2;

export function createFaults(): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * Float64Array.BYTES_PER_ELEMENT);
}

export function armFault(faults: SharedArrayBuffer, first_byte: number, end_byte: number): void {
  const words = new Float64Array(faults);
  words[FIRST_BYTE] = first_byte;
  words[END_BYTE] = end_byte;
  words[ARMED] = 1;
}

export function disarmFault(faults: SharedArrayBuffer): void {
  new Float64Array(faults)[ARMED] = 0;
}

/** True when a read of [offset, offset + length) must fail. */
export function readFails(words: Float64Array, offset_bytes: number, length_bytes: number): boolean {
  return words[ARMED] === 1 && offset_bytes < words[END_BYTE]! && offset_bytes + length_bytes > words[FIRST_BYTE]!;
}

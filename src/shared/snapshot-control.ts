// The state of one snapshot as the actors see it, in shared memory so that
// a cow actor can break the snapshot (and stop copying) on its own, without
// waiting for the control plane.
//
// Layout (Int32 words):
//
//   [0] STATE   CREATED → TAKEN → (CORRUPTED) → DESTROYING         control plane; actors CAS TAKEN → CORRUPTED
//   [1] ERRNO   0, or the errno that corrupted the snapshot          whoever won the CAS
//
// Once CORRUPTED, copy-on-write stops for the snapshot (volume writes go
// straight through) and image I/O fails with EIO.

export const enum SnapshotWord {
  STATE = 0,
  ERRNO = 1,
}

export const enum SnapshotStateCode {
  CREATED = 0,
  TAKEN = 1,
  CORRUPTED = 2,
  DESTROYING = 3,
}

const WORDS = 4;

export function createSnapshotControl(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(WORDS * Int32Array.BYTES_PER_ELEMENT));
}

/** Breaks a taken snapshot; true for the caller that did it (first errno wins). */
export function corruptSnapshot(control: Int32Array, errno: number): boolean {
  if (Atomics.compareExchange(control, SnapshotWord.STATE, SnapshotStateCode.TAKEN, SnapshotStateCode.CORRUPTED) !==
    SnapshotStateCode.TAKEN) return false;
  Atomics.store(control, SnapshotWord.ERRNO, errno);
  return true;
}

export function snapshotIsHealthy(control: Int32Array): boolean {
  return Atomics.load(control, SnapshotWord.STATE) === SnapshotStateCode.TAKEN;
}

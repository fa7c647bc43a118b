// The control block of one diff area: words an I/O thread raises so the
// control plane does area work (flushing the store queue) exactly once.
//
// Layout (Int32 words in one SharedArrayBuffer):
//
//   [0] FLUSH_REQUESTED  0 → 1 by the actor whose CAS wins (it then posts    I/O actors: CAS 0 → 1
//                        one 'flush' notice); 1 → 0 by the store task when   store task: store 0
//                        it starts draining the queue
//   [1] CLONED_CHUNKS    chunks copy-before-write saved by cloning        I/O actors: add
//   [2] COPIED_CHUNKS    chunks copy-before-write saved by reading them   I/O actors: add
//   [3]                  reserved
//   [4] CLONED_AHEAD     of CLONED_CHUNKS, those cloned ahead of a          I/O actors: add
//                        sequential writer, before any write touched them
//   [5] STREAM_NEXT      the chunk whose start a sequential writer          I/O actors: store
//                        reaches next: where the last write ended at a
//                        chunk's end, or past the chunks last cloned
//                        ahead; NO_STREAM at take (diff-area.ts, clone
//                        ahead)
//   [6..7]               reserved
//
// STREAM_NEXT is a hint, not a truth: two writers may store it in either
// order, which at worst costs one missed (or one needless) clone ahead.
// Nobody waits on these words: the notice travels by postMessage, so the
// word only de-duplicates requests (no Atomics.wait, no notify). The two
// tallies are for status and the benchmark's write amplification (bytes
// the engine moved per byte the writers wrote).

export const FLUSH_REQUESTED = 0;
export const CLONED_CHUNKS = 1;
export const COPIED_CHUNKS = 2;
export const CLONED_AHEAD_CHUNKS = 4;
export const STREAM_NEXT_CHUNK = 5;
export const AREA_CONTROL_WORDS = 8;

/** STREAM_NEXT before any write ended at a chunk's end: no write continues a stream. */
export const NO_STREAM = -1;

export function createAreaControl(): SharedArrayBuffer {
  const buffer = new SharedArrayBuffer(AREA_CONTROL_WORDS * Int32Array.BYTES_PER_ELEMENT);
  new Int32Array(buffer)[STREAM_NEXT_CHUNK] = NO_STREAM;
  return buffer;
}

/** True for the one caller that raised the request (it must notify the control plane). */
export function requestFlush(control: Int32Array): boolean {
  return Atomics.compareExchange(control, FLUSH_REQUESTED, 0, 1) === 0;
}

/** The store task took the request: the next one raises a new notice. */
export function clearFlushRequest(control: Int32Array): void {
  Atomics.store(control, FLUSH_REQUESTED, 0);
}

/** Counts one chunk saved before a write, by clone or by copy. */
export function countSavedChunk(control: Int32Array, cloned: boolean): void {
  Atomics.add(control, cloned ? CLONED_CHUNKS : COPIED_CHUNKS, 1);
}

/** Counts `count` chunks cloned ahead of the writer (they are also counted as cloned). */
export function countClonedAhead(control: Int32Array, count: number): void {
  Atomics.add(control, CLONED_AHEAD_CHUNKS, count);
}

/** The chunk whose start a sequential writer is expected to write next (NO_STREAM at take). */
export function streamNextChunk(control: Int32Array): number {
  return Atomics.load(control, STREAM_NEXT_CHUNK);
}

export function setStreamNextChunk(control: Int32Array, chunk: number): void {
  Atomics.store(control, STREAM_NEXT_CHUNK, chunk);
}

export function savedChunks(control: Int32Array): { cloned: number; copied: number; cloned_ahead: number } {
  return {
    cloned: Atomics.load(control, CLONED_CHUNKS), copied: Atomics.load(control, COPIED_CHUNKS),
    cloned_ahead: Atomics.load(control, CLONED_AHEAD_CHUNKS),
  };
}

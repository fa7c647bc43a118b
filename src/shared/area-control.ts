// The control block of one diff area: words an I/O thread raises so the
// control plane does area work (flushing the store queue) exactly once.
//
// Layout (Int32 words in one SharedArrayBuffer):
//
//   [0] FLUSH_REQUESTED  0 → 1 by the actor whose CAS wins (it then posts    I/O actors: CAS 0 → 1
//                        one 'flush' notice); 1 → 0 by the store task when   store task: store 0
//                        it starts draining the queue
//   [1..3]               reserved
//
// Nobody waits on these words: the notice travels by postMessage, so the
// word only de-duplicates requests (no Atomics.wait, no notify).

export const FLUSH_REQUESTED = 0;
export const AREA_CONTROL_WORDS = 4;

export function createAreaControl(): SharedArrayBuffer {
  return new SharedArrayBuffer(AREA_CONTROL_WORDS * Int32Array.BYTES_PER_ELEMENT);
}

/** True for the one caller that raised the request (it must notify the control plane). */
export function requestFlush(control: Int32Array): boolean {
  return Atomics.compareExchange(control, FLUSH_REQUESTED, 0, 1) === 0;
}

/** The store task took the request: the next one raises a new notice. */
export function clearFlushRequest(control: Int32Array): void {
  Atomics.store(control, FLUSH_REQUESTED, 0);
}

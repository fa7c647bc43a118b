// A test-only hold on volume writes: the next write to pass a volume's write
// gate stops inside it until the test lets it go, so a test can put a write
// in flight at an exact moment (a take's quiesce must wait for it, and a
// write arriving meanwhile must park). The engine creates it only with
// EngineOptions.fault_injection, like fault-words.ts; otherwise the
// copy-on-write path never looks here.
//
// Layout (Int32 words in one SharedArrayBuffer):
//
//   [0] ARMED     1: the next write past the gate is held        test stores 1; a cow actor claims it (CAS 1 → 0)
//   [1] HELD      1 while a write is held                        cow actor stores and notifies; the test waits
//   [2] RELEASED  1 once the test lets the held write go         test stores and notifies; the cow actor waits
//
// Protocol: arm (RELEASED = 0, HELD = 0, ARMED = 1) → a writer claims ARMED
// inside the gate, stores HELD = 1, notifies, and waits on RELEASED with
// Atomics.waitAsync (its actor keeps serving: take broadcasts the new diff
// areas to every actor before it freezes) → the test stores RELEASED = 1
// and notifies → the writer stores HELD = 0 and goes on with the write,
// still inside the gate. One arm holds one write.

const ARMED = 0;
const HELD = 1;
const RELEASED = 2;
const WORDS = 4;
/** What native code looks at (it leaves an armed hold to the actor): gen-layout-header.js. */
export const WRITE_HOLD_LAYOUT = Object.freeze({ ARMED, WORDS });
/**
 * A held write that nobody releases goes on after this: a test that died
 * half-way must not leave a write (and every take of its volume) stuck.
 */
export const WRITE_HOLD_TIMEOUT_MS = 30_000;

export function createWriteHold(): SharedArrayBuffer {
  return new SharedArrayBuffer(WORDS * Int32Array.BYTES_PER_ELEMENT);
}

/** Test side: hold the next write that passes the gate. */
export function armWriteHold(words: Int32Array): void {
  Atomics.store(words, RELEASED, 0);
  Atomics.store(words, HELD, 0);
  Atomics.store(words, ARMED, 1);
}

/** Test side: lets the held write (or the next one, if none is held yet) go. */
export function releaseWriteHold(words: Int32Array): void {
  Atomics.store(words, ARMED, 0);
  Atomics.store(words, RELEASED, 1);
  Atomics.notify(words, RELEASED);
}

/** Test side: resolves true once a write is held, false after timeout_ms. */
export async function waitWriteHeld(words: Int32Array, timeout_ms: number): Promise<boolean> {
  const deadline = Date.now() + timeout_ms;
  while (Atomics.load(words, HELD) === 0) {
    const left_ms = deadline - Date.now();
    if (left_ms <= 0) return false;
    const waiting = Atomics.waitAsync(words, HELD, 0, left_ms);
    if (waiting.async) await waiting.value;
  }
  return true;
}

/** Writer side, inside the gate: true when this write is the one to hold (it then calls holdUntilReleased). */
export function claimWriteHold(words: Int32Array): boolean {
  return Atomics.load(words, ARMED) === 1 && Atomics.compareExchange(words, ARMED, 1, 0) === 1;
}

/** Writer side: marks the write held and runs `resume` once released (or after WRITE_HOLD_TIMEOUT_MS). */
export function holdUntilReleased(words: Int32Array, resume: () => void): void {
  Atomics.store(words, HELD, 1);
  Atomics.notify(words, HELD);
  const waiting = Atomics.waitAsync(words, RELEASED, 0, WRITE_HOLD_TIMEOUT_MS);
  const go = (): void => {
    Atomics.store(words, HELD, 0);
    resume();
  };
  if (waiting.async) void waiting.value.then(go);
  else queueMicrotask(go);
}

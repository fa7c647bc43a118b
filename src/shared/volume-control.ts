// The control block of one attached volume: the words every actor checks
// before touching the volume, so that take and destroy can stop the world
// for one volume without a message round trip.
//
// Layout (Int32 words in one SharedArrayBuffer):
//
//   [0] FROZEN           1 while a take or destroy switches this volume;   control plane
//                        writers arriving then park their request
//   [1] WRITES_IN_FLIGHT writes past the gate, not yet completed;          cow actors (add/sub)
//                        the control plane waits for it to reach 0
//   [2] ARMED_AREA       id of the diff area copy-on-write goes to, or -1  control plane, frozen
//   [3] IMAGE_SERIAL     serial of the snapshot whose image is served,     control plane
//                        0 when none; image requests carry the serial
//   [4] IMAGE_AREA       diff area of that image, or -1                   control plane
//   [5] IMAGE_IN_FLIGHT  image requests being served                       image actors (add/sub)
//   [6] DETACHED         1 once the volume is being detached: a native    control plane, once
//                        queue serving it directly stops (its requests
//                        go to the actor, which answers ENODEV/EIO)
//
// Gate protocol (writer side):   add WRITES_IN_FLIGHT; if FROZEN { sub, notify, park }
//                                … serve … ; sub WRITES_IN_FLIGHT, notify when it hit 0 while FROZEN
// Gate protocol (control side):  store FROZEN=1; wait until WRITES_IN_FLIGHT == 0
//                                (waitForZero); switch; store FROZEN=0; wake the parked writers.
// Sequential consistency of Atomics makes the two add-then-check orders
// meet: a writer either sees FROZEN or is counted before the control side
// looks at the count.

import { UblksnapError } from './errors';
import { handleIsImage, handleSerial } from './request-record';

export const FROZEN = 0;
export const WRITES_IN_FLIGHT = 1;
export const ARMED_AREA = 2;
export const IMAGE_SERIAL = 3;
export const IMAGE_AREA = 4;
export const IMAGE_IN_FLIGHT = 5;
export const DETACHED = 6;
const WORDS = 8;
export const NO_AREA = -1;

/**
 * The words native code reads and writes (a native queue serving a volume
 * directly, native/src/direct-volume.h); scripts/gen-layout-header.js
 * writes them into native/include/ublksnap-layout.h.
 */
export const VOLUME_CONTROL_LAYOUT = Object.freeze({
  FROZEN, WRITES_IN_FLIGHT, ARMED_AREA, DETACHED, WORDS, NO_AREA,
});

export function createVolumeControl(): Int32Array {
  const words = new Int32Array(new SharedArrayBuffer(WORDS * Int32Array.BYTES_PER_ELEMENT));
  words[ARMED_AREA] = NO_AREA;
  words[IMAGE_AREA] = NO_AREA;
  return words;
}

/** Writer side: enter the gate; false means parked (retry after the thaw). */
export function enterWriteGate(control: Int32Array): boolean {
  Atomics.add(control, WRITES_IN_FLIGHT, 1);
  if (Atomics.load(control, FROZEN) === 0) return true;
  leaveWriteGate(control);
  return false;
}

/**
 * For a writer that cannot notify (native code; V8's Atomics.wait is not the
 * kernel futex): its host thread wakes the control side once that writer
 * emptied a frozen gate.
 */
export function notifyGateDrained(control: Int32Array): void {
  Atomics.notify(control, WRITES_IN_FLIGHT);
}

/** Control side: no new request may be served directly from now on (detach). */
export function markDetached(control: Int32Array): void {
  Atomics.store(control, DETACHED, 1);
}

export function leaveWriteGate(control: Int32Array): void {
  if (Atomics.sub(control, WRITES_IN_FLIGHT, 1) === 1 && Atomics.load(control, FROZEN) === 1) {
    Atomics.notify(control, WRITES_IN_FLIGHT);
  }
}

/** Image side: enter if the image of `serial` is still served. */
export function enterImageGate(control: Int32Array, serial: number): boolean {
  Atomics.add(control, IMAGE_IN_FLIGHT, 1);
  if (Atomics.load(control, IMAGE_SERIAL) === serial && serial !== 0) return true;
  leaveImageGate(control);
  return false;
}

export function leaveImageGate(control: Int32Array): void {
  if (Atomics.sub(control, IMAGE_IN_FLIGHT, 1) === 1) Atomics.notify(control, IMAGE_IN_FLIGHT);
}

/**
 * Whether an export handle (request-record.ts packHandle) still addresses
 * something: its volume attached (control given) and, for an image, the
 * snapshot it was resolved for still served.
 */
export function targetIsLive(control: Int32Array | undefined, handle: number): boolean {
  if (control === undefined) return false;
  return !handleIsImage(handle) || Atomics.load(control, IMAGE_SERIAL) === handleSerial(handle);
}

/** The longest one wait of waitForZero lasts before looking at the word again. */
export const ZERO_POLL_MS = 5;

/**
 * The control side's wait: until control[word] reads 0, without blocking
 * the event loop. A writer in native code cannot notify (V8's Atomics.wait
 * is not the kernel futex; native/src/direct-volume.h): its host notifies
 * for it, and should that ever be missed, each wait lasts at most
 * ZERO_POLL_MS, so a missed wake-up costs that much rather than the whole
 * timeout. Throws ETIMEDOUT after timeout_ms.
 */
export async function waitForZero(control: Int32Array, word: number, timeout_ms: number, what: string): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    const value = Atomics.load(control, word);
    if (value === 0) return;
    const left_ms = deadline - Date.now();
    if (left_ms <= 0) throw new UblksnapError('ETIMEDOUT', `${what} did not drain within ${timeout_ms} ms`);
    const slice_ms = Math.min(left_ms, ZERO_POLL_MS);
    const waiting = Atomics.waitAsync(control, word, value, slice_ms);
    if (!waiting.async) continue;
    // A pending waitAsync does not keep Node's event loop alive; a timer does.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([waiting.value, new Promise((resolve) => { timer = setTimeout(resolve, slice_ms); })]);
    clearTimeout(timer);
  }
}

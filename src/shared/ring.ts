// A bounded multi-producer multi-consumer ring of fixed-size Int32 records in
// a SharedArrayBuffer: the store queue, the buffer slab's free list and the
// request/completion rings between frontends and actors are all this ring.
//
// Design notes
//
// The algorithm is Dmitry Vyukov's bounded MPMC queue: every cell carries a
// sequence word that says whose turn it is, so producers and consumers only
// contend on their own index word (one CAS each) and never lock. Positions
// are free-running Int32 counters; differences are taken with `| 0`, which
// is exact across the 2^32 wrap as long as the capacity stays below 2^30.
//
// Sleeping is opt-in and costs nothing when nobody sleeps: a consumer that
// finds the ring empty announces itself in CONSUMER_SLEEPERS, re-checks, then
// Atomics.wait()s on CONSUMER_DOORBELL. A producer rings the doorbell (add +
// notify) only when it sees a sleeper. Producers waiting for space use the
// mirror pair. No wake-up can be lost: the sleeper reads the doorbell value
// before it re-checks the ring, and Atomics are sequentially consistent, so
// either the producer sees the sleeper count, or the sleeper sees the record.
//
// Doorbells: who may wait where. V8 implements Atomics.wait and notify with
// its own waiter lists, not the kernel futex: a native thread can neither
// wake a JavaScript thread sleeping in Atomics.wait nor sleep on a word a
// JavaScript thread notifies. So:
//   - JS ↔ JS (main thread, actors, piscina tasks): these doorbells, Atomics
//     on CONSUMER/PRODUCER_DOORBELL; either side may block in wait().
//   - native or kernel → JS: an eventfd the JS thread's event loop polls
//     (the addon creates it; a native queue's io_uring signals one per
//     batch of completions). JS never Atomics.wait()s for native work.
//   - JS → native: an eventfd the native side polls, written by the addon.
// A native participant may still push and pop records of this ring with
// C++ atomics on the same words (native/include/ublksnap-layout.h, made
// from RING_LAYOUT below by scripts/gen-layout-header.js); only the
// wake-up differs. The native side never touches the four doorbell and
// sleeper words.
//
// Layout (Int32 words; HEAD and TAIL on separate 64-byte lines so producers
// and consumers do not bounce one cache line):
//
//   word  0            HEAD                 next position to consume   (consumers, CAS)
//   word 16            TAIL                 next position to produce   (producers, CAS)
//   word 32            CONSUMER_SLEEPERS    consumers inside wait()    (consumers, add/sub)
//   word 33            CONSUMER_DOORBELL    bumped to wake consumers   (producers, add+notify)
//   word 34            PRODUCER_SLEEPERS    producers waiting for room (producers, add/sub)
//   word 35            PRODUCER_DOORBELL    bumped to wake producers   (consumers, add+notify)
//   word 36            CAPACITY             records, a power of two    (creator, once)
//   word 37            RECORD_WORDS         Int32 words per record     (creator, once)
//   word 48 ..         SEQUENCE[capacity]   turn of each cell
//   after that         RECORDS[capacity × RECORD_WORDS]
//
// Cell protocol for position p in cell c = p & (capacity - 1):
//   SEQUENCE[c] == p          the cell is free for the producer of p
//   SEQUENCE[c] == p + 1      the record of p is published for its consumer
//   SEQUENCE[c] == p + cap    freed again, for the producer of p + cap

import { assert } from './assert';
import { isPowerOfTwo } from './units';

const HEAD = 0;
const TAIL = 16;
const CONSUMER_SLEEPERS = 32;
const CONSUMER_DOORBELL = 33;
const PRODUCER_SLEEPERS = 34;
const PRODUCER_DOORBELL = 35;
const CAPACITY = 36;
const RECORD_WORDS = 37;
const HEADER_WORDS = 48;
const WORD_BYTES = Int32Array.BYTES_PER_ELEMENT;
/** HEAD and TAIL live on different cache lines of this size. */
const CACHE_LINE_BYTES = 64;

/** Positions wrap at 2^32; the sign of (a - b) | 0 is right below 2^30. */
export const RING_CAPACITY_MAX = 2 ** 20;
export const RING_RECORD_WORDS_MAX = 64;

/**
 * The header words above as a runtime table, for code that reads the ring
 * from outside this file: scripts/gen-layout-header.js writes them into the
 * C++ header, and tests poke at positions. The hot path keeps using the
 * module constants.
 */
export const RING_LAYOUT = Object.freeze({
  HEAD,
  TAIL,
  CONSUMER_SLEEPERS,
  CONSUMER_DOORBELL,
  PRODUCER_SLEEPERS,
  PRODUCER_DOORBELL,
  CAPACITY,
  RECORD_WORDS,
  /** SEQUENCE[0] is this word; RECORDS follow the capacity sequence words. */
  HEADER_WORDS,
  WORD_BYTES,
  CACHE_LINE_BYTES,
  CAPACITY_MAX: RING_CAPACITY_MAX,
  RECORD_WORDS_MAX: RING_RECORD_WORDS_MAX,
});

// Load-time checks of the drawing above.
assert((TAIL - HEAD) * WORD_BYTES >= CACHE_LINE_BYTES && (CONSUMER_SLEEPERS - TAIL) * WORD_BYTES >= CACHE_LINE_BYTES,
  'ring: HEAD, TAIL and the doorbells must sit on separate cache lines');
assert(RECORD_WORDS < HEADER_WORDS, 'ring: the header words must fit before SEQUENCE');
assert(isPowerOfTwo(RING_CAPACITY_MAX) && RING_CAPACITY_MAX < 2 ** 30,
  'ring: positions compare by (a - b) | 0, exact only below 2^30 records');
/** A bounded wait never sleeps longer than this before re-checking. */
const WAIT_SLICE_MS = 50;
/**
 * A push into a ring that by its owner's accounting cannot be full may
 * still find a cell taken: a consumer that advanced HEAD frees its cell
 * only a moment later, and on a loaded machine that moment can be a whole
 * time slice. Such pushes wait up to this long before calling it a bug.
 */
export const RING_TRANSIENT_FULL_TIMEOUT_MS = 10_000;

export function ringBytes(capacity: number, record_words: number): number {
  return (HEADER_WORDS + capacity + capacity * record_words) * WORD_BYTES;
}

export class Ring {
  readonly capacity: number;
  readonly record_words: number;
  private readonly words: Int32Array;
  private readonly mask: number;
  private readonly records_index: number;

  /** Creates a new ring in fresh shared memory. */
  static create(capacity: number, record_words: number): Ring {
    assert(isPowerOfTwo(capacity) && capacity <= RING_CAPACITY_MAX,
      `ring capacity must be a power of two ≤ ${RING_CAPACITY_MAX}, got ${capacity}`);
    assert(Number.isInteger(record_words) && record_words >= 1 && record_words <= RING_RECORD_WORDS_MAX,
      `ring records must hold 1..${RING_RECORD_WORDS_MAX} words, got ${record_words}`);
    const buffer = new SharedArrayBuffer(ringBytes(capacity, record_words));
    const words = new Int32Array(buffer);
    words[CAPACITY] = capacity;
    words[RECORD_WORDS] = record_words;
    for (let cell = 0; cell < capacity; cell += 1) words[HEADER_WORDS + cell] = cell;
    return new Ring(buffer);
  }

  /** Attaches to a ring created elsewhere (another thread passes the buffer). */
  constructor(readonly buffer: SharedArrayBuffer) {
    this.words = new Int32Array(buffer);
    this.capacity = this.words[CAPACITY]!;
    this.record_words = this.words[RECORD_WORDS]!;
    assert(isPowerOfTwo(this.capacity) && buffer.byteLength === ringBytes(this.capacity, this.record_words),
      'buffer is not a ring: its header does not match its size');
    this.mask = this.capacity - 1;
    this.records_index = HEADER_WORDS + this.capacity;
  }

  /** Records in the ring right now; exact only when nobody is pushing or popping. */
  get count(): number {
    return (Atomics.load(this.words, TAIL) - Atomics.load(this.words, HEAD)) | 0;
  }

  /**
   * Pushes into a ring its owner sized so that it cannot be full (every
   * record holds a resource of which there are at most `capacity`):
   * waits out the transient described at RING_TRANSIENT_FULL_TIMEOUT_MS and
   * asserts after it.
   */
  pushCertain(source: Int32Array, offset: number, wake: boolean, what: string): void {
    assert(this.push(source, offset, RING_TRANSIENT_FULL_TIMEOUT_MS, wake),
      `${what}: ring of ${this.capacity} still full after ${RING_TRANSIENT_FULL_TIMEOUT_MS} ms`);
  }

  /**
   * Copies one record from `source[offset ..]` into the ring.
   * Returns false when the ring is full (or, for a moment, looks full:
   * see RING_TRANSIENT_FULL_TIMEOUT_MS). With wake = false the caller
   * promises to call wakeConsumers() after its batch: one wake-up (a futex
   * or a task posted to another thread) for many records.
   */
  tryPush(source: Int32Array, offset = 0, wake = true): boolean {
    const words = this.words;
    let position = Atomics.load(words, TAIL);
    for (;;) {
      const cell = position & this.mask;
      const turn = (Atomics.load(words, HEADER_WORDS + cell) - position) | 0;
      if (turn === 0) {
        const seen = Atomics.compareExchange(words, TAIL, position, (position + 1) | 0);
        if (seen === position) {
          const base = this.records_index + cell * this.record_words;
          for (let w = 0; w < this.record_words; w += 1) words[base + w] = source[offset + w]!;
          Atomics.store(words, HEADER_WORDS + cell, (position + 1) | 0);
          if (wake) this.wake(CONSUMER_SLEEPERS, CONSUMER_DOORBELL);
          return true;
        }
        position = seen;
      } else if (turn < 0) {
        return false;
      } else {
        position = Atomics.load(words, TAIL);
      }
    }
  }

  /**
   * Copies the oldest record into `target[offset ..]`.
   * Returns false when the ring is empty.
   */
  tryPop(target: Int32Array, offset = 0): boolean {
    const words = this.words;
    let position = Atomics.load(words, HEAD);
    for (;;) {
      const cell = position & this.mask;
      const turn = (Atomics.load(words, HEADER_WORDS + cell) - ((position + 1) | 0)) | 0;
      if (turn === 0) {
        const seen = Atomics.compareExchange(words, HEAD, position, (position + 1) | 0);
        if (seen === position) {
          const base = this.records_index + cell * this.record_words;
          for (let w = 0; w < this.record_words; w += 1) target[offset + w] = words[base + w]!;
          Atomics.store(words, HEADER_WORDS + cell, (position + this.capacity) | 0);
          this.wake(PRODUCER_SLEEPERS, PRODUCER_DOORBELL);
          return true;
        }
        position = seen;
      } else if (turn < 0) {
        return false;
      } else {
        position = Atomics.load(words, HEAD);
      }
    }
  }

  /** Pushes, sleeping while full, for at most timeout_ms. False on timeout. */
  push(source: Int32Array, offset: number, timeout_ms: number, wake = true): boolean {
    if (this.tryPush(source, offset, wake)) return true;
    const deadline = Date.now() + timeout_ms;
    const words = this.words;
    for (;;) {
      const seen = Atomics.load(words, PRODUCER_DOORBELL);
      Atomics.add(words, PRODUCER_SLEEPERS, 1);
      const pushed = this.tryPush(source, offset, wake);
      if (!pushed) this.sleep(PRODUCER_DOORBELL, seen, deadline);
      Atomics.sub(words, PRODUCER_SLEEPERS, 1);
      if (pushed || this.tryPush(source, offset, wake)) return true;
      if (Date.now() >= deadline) return false;
    }
  }

  /** Pops, sleeping while empty, for at most timeout_ms. False on timeout. */
  pop(target: Int32Array, offset: number, timeout_ms: number): boolean {
    if (this.tryPop(target, offset)) return true;
    const deadline = Date.now() + timeout_ms;
    const words = this.words;
    for (;;) {
      const seen = Atomics.load(words, CONSUMER_DOORBELL);
      Atomics.add(words, CONSUMER_SLEEPERS, 1);
      const popped = this.tryPop(target, offset);
      if (!popped) this.sleep(CONSUMER_DOORBELL, seen, deadline);
      Atomics.sub(words, CONSUMER_SLEEPERS, 1);
      if (popped || this.tryPop(target, offset)) return true;
      if (Date.now() >= deadline) return false;
    }
  }

  /**
   * Resolves once the ring probably holds a record (or after timeout_ms),
   * without blocking the thread: for consumers that live on an event loop.
   * The caller then drains with tryPop().
   */
  async waitForRecords(timeout_ms: number): Promise<void> {
    const words = this.words;
    const doorbell = Atomics.load(words, CONSUMER_DOORBELL);
    Atomics.add(words, CONSUMER_SLEEPERS, 1);
    try {
      if (this.count > 0) return;
      const waiting = Atomics.waitAsync(words, CONSUMER_DOORBELL, doorbell, timeout_ms);
      if (waiting.async) await waiting.value;
    } finally {
      Atomics.sub(words, CONSUMER_SLEEPERS, 1);
    }
  }

  /** Wakes one sleeping consumer, if any: the end of a batch pushed with wake = false. */
  wakeConsumers(): void {
    this.wake(CONSUMER_SLEEPERS, CONSUMER_DOORBELL);
  }

  /** Wakes every sleeper of both kinds, e.g. so they notice a stop flag. */
  wakeAll(): void {
    Atomics.add(this.words, CONSUMER_DOORBELL, 1);
    Atomics.notify(this.words, CONSUMER_DOORBELL);
    Atomics.add(this.words, PRODUCER_DOORBELL, 1);
    Atomics.notify(this.words, PRODUCER_DOORBELL);
  }

  private wake(sleepers: number, doorbell: number): void {
    if (Atomics.load(this.words, sleepers) === 0) return;
    Atomics.add(this.words, doorbell, 1);
    Atomics.notify(this.words, doorbell, 1);
  }

  /** One bounded sleep on a doorbell that still reads `seen`. */
  private sleep(doorbell: number, seen: number, deadline: number): void {
    const left_ms = deadline - Date.now();
    if (left_ms > 0) Atomics.wait(this.words, doorbell, seen, Math.min(left_ms, WAIT_SLICE_MS));
  }
}

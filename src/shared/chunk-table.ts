// The chunk table of one diff area (one volume in one snapshot): a state
// word and a diff-storage offset per chunk, shared by every actor.
//
// Chunk life cycle (as in blksnap's chunk.h):
//
//        take                 copy-on-write read done          store done
//   ──► NEW ───────────────────────────────► IN_MEMORY ─────────────────► STORED
//        │ │                                 ▲   │                          ▲ │
//        │ │ volume read failed              │   │ store failed             │ │ image write
//        │ ▼                                 │   ▼                          │ │ loads it back
//        │FAILED ◄───────────────────────────┼─ FAILED                      │ │
//        │                                   └──────────────────────────────┼─┘
//        └──────────────────────────────────────────────────────────────────┘
//                 cloned into its storage slot (reflink copy-before-write)
//
// Layout: two SharedArrayBuffers of chunk_count entries each.
//
//   words[i]   Int32    bits 0-1   state (NEW, IN_MEMORY, STORED, FAILED)
//                       bit  2     LOCKED
//                       bit  3     WAITERS: somebody sleeps on this word
//                       bits 8-31  buffer slot + 1 (0 = no buffer), 24 bits
//   offsets[i] Float64  sector of the chunk's copy in the diff storage, or -1
//
// That is 12 bytes per chunk (docs/design.md §10 allows 16). Offsets are plain
// Float64 (exact for integers below 2^53): they are written only by the
// holder of the chunk's lock, and the lock's Atomics give the ordering.
//
// Lock protocol: lock = CAS LOCKED in. A contender sets WAITERS (CAS) and
// Atomics.wait()s on the word; unlock clears LOCKED and WAITERS in one
// atomic step and notifies only when WAITERS was set, so an uncontended
// lock/unlock is two CAS and no syscall. Every woken waiter retries; the
// losers set WAITERS again before they sleep, so no wake-up is lost.
//
// The fast path of the write path reads the state without the lock: a chunk
// that left NEW never returns to NEW while its snapshot lives (only a new
// take resets the table, and take quiesces every writer first).

import { assert, assertIndex, AssertionError } from './assert';

export const enum ChunkState {
  NEW = 0,
  IN_MEMORY = 1,
  STORED = 2,
  FAILED = 3,
}

export const CHUNK_STATE_NAMES = ['NEW', 'IN_MEMORY', 'STORED', 'FAILED'] as const;

const STATE_MASK = 0b11;
const LOCKED = 1 << 2;
const WAITERS = 1 << 3;
const SLOT_SHIFT = 8;
/** 24 bits of slot + 1. */
export const CHUNK_SLOT_MAX = (1 << 24) - 2;
export const NO_SLOT = -1;
export const NO_OFFSET = -1;
export const CHUNK_TABLE_BYTES_PER_CHUNK = Int32Array.BYTES_PER_ELEMENT + Float64Array.BYTES_PER_ELEMENT;

/** One sleep on a contended lock is bounded by this; then we re-check. */
const LOCK_WAIT_SLICE_MS = 100;
/**
 * A chunk lock is held for one chunk's I/O at most. Holding it longer than
 * this means a stuck device or a bug; the waiter fails loudly rather than
 * hanging the daemon without a trace.
 */
export const CHUNK_LOCK_TIMEOUT_MS = 60_000;

/** state transitions that the copy-on-write and image paths may make. */
const LEGAL_MOVES: readonly (readonly ChunkState[])[] = [
  /* from NEW       */[ChunkState.IN_MEMORY, ChunkState.STORED, ChunkState.FAILED],
  /* from IN_MEMORY */[ChunkState.IN_MEMORY, ChunkState.STORED, ChunkState.FAILED],
  /* from STORED    */[ChunkState.IN_MEMORY, ChunkState.FAILED],
  /* from FAILED    */[],
];

export interface ChunkTableBuffers {
  words: SharedArrayBuffer;
  offsets: SharedArrayBuffer;
}

export class ChunkTable {
  readonly chunk_count: number;
  private readonly words: Int32Array;
  private readonly offsets: Float64Array;

  static create(chunk_count: number): ChunkTable {
    assert(Number.isSafeInteger(chunk_count) && chunk_count >= 1 && chunk_count <= 2 ** 31 - 1,
      `chunk count must be in [1, 2^31), got ${chunk_count}`);
    const table = new ChunkTable({
      words: new SharedArrayBuffer(chunk_count * Int32Array.BYTES_PER_ELEMENT),
      offsets: new SharedArrayBuffer(chunk_count * Float64Array.BYTES_PER_ELEMENT),
    });
    table.offsets.fill(NO_OFFSET);
    return table;
  }

  constructor(readonly buffers: ChunkTableBuffers) {
    this.words = new Int32Array(buffers.words);
    this.offsets = new Float64Array(buffers.offsets);
    this.chunk_count = this.words.length;
    assert(this.offsets.length === this.chunk_count, 'chunk table buffers disagree on the chunk count');
  }

  /** Lock-free peek for the fast path; exact only under the lock. */
  state(chunk: number): ChunkState {
    return (Atomics.load(this.words, chunk) & STATE_MASK) as ChunkState;
  }

  /** True when every chunk in [first, last] has left NEW (needs no copy). */
  allPastNew(first_chunk: number, last_chunk: number): boolean {
    for (let chunk = first_chunk; chunk <= last_chunk; chunk += 1) {
      if ((Atomics.load(this.words, chunk) & STATE_MASK) === ChunkState.NEW) return false;
    }
    return true;
  }

  /** The buffer slot holding the chunk's data, or NO_SLOT. Valid under the lock. */
  slot(chunk: number): number {
    return (Atomics.load(this.words, chunk) >>> SLOT_SHIFT) - 1;
  }

  offset(chunk: number): number {
    return this.offsets[chunk]!;
  }

  isLocked(chunk: number): boolean {
    return (Atomics.load(this.words, chunk) & LOCKED) !== 0;
  }

  tryLock(chunk: number): boolean {
    const word = Atomics.load(this.words, chunk);
    if ((word & LOCKED) !== 0) return false;
    return Atomics.compareExchange(this.words, chunk, word, word | LOCKED) === word;
  }

  /**
   * Takes the chunk's lock, sleeping while another thread holds it.
   * Throws an AssertionError after CHUNK_LOCK_TIMEOUT_MS (a stuck holder).
   * Must not be called on a thread that serves an event loop.
   */
  lock(chunk: number, timeout_ms = CHUNK_LOCK_TIMEOUT_MS): void {
    const words = this.words;
    let deadline = 0;
    for (;;) {
      const word = Atomics.load(words, chunk);
      if ((word & LOCKED) === 0) {
        if (Atomics.compareExchange(words, chunk, word, word | LOCKED) === word) return;
        continue;
      }
      if ((word & WAITERS) === 0 &&
        Atomics.compareExchange(words, chunk, word, word | WAITERS) !== word) continue;
      if (deadline === 0) deadline = Date.now() + timeout_ms;
      const left_ms = deadline - Date.now();
      if (left_ms <= 0) throw new AssertionError(`chunk ${chunk} stayed locked for more than ${timeout_ms} ms`);
      Atomics.wait(words, chunk, word | WAITERS, Math.min(left_ms, LOCK_WAIT_SLICE_MS));
    }
  }

  unlock(chunk: number): void {
    const before = Atomics.and(this.words, chunk, ~(LOCKED | WAITERS));
    assert((before & LOCKED) !== 0, `unlock of chunk ${chunk}, which is not locked`);
    if ((before & WAITERS) !== 0) Atomics.notify(this.words, chunk);
  }

  /**
   * Moves a locked chunk to `state` with buffer `slot` (NO_SLOT for none).
   * Asserts that the caller holds the lock and that the move is legal.
   */
  setState(chunk: number, state: ChunkState, slot: number): void {
    assertIndex(chunk, this.chunk_count, 'chunk');
    assert(slot === NO_SLOT || (Number.isInteger(slot) && slot >= 0 && slot <= CHUNK_SLOT_MAX),
      `slot ${slot} does not fit the chunk word`);
    const words = this.words;
    for (;;) {
      const word = Atomics.load(words, chunk);
      assert((word & LOCKED) !== 0, `state change of chunk ${chunk} without its lock`);
      const from = (word & STATE_MASK) as ChunkState;
      assert(LEGAL_MOVES[from]!.includes(state),
        `illegal chunk move ${CHUNK_STATE_NAMES[from]} → ${CHUNK_STATE_NAMES[state]} (chunk ${chunk})`);
      // A stored chunk is read from its slot: none, and image reads would read sector -1.
      assert(state !== ChunkState.STORED || this.offsets[chunk]! !== NO_OFFSET, `chunk ${chunk} stored without a storage slot`);
      const next = ((slot + 1) << SLOT_SHIFT) | (word & (LOCKED | WAITERS)) | state;
      // The CAS can only lose to a waiter setting WAITERS; then retry.
      if (Atomics.compareExchange(words, chunk, word, next) === word) return;
    }
  }

  /** Records where the chunk's copy lives in the diff storage (under the lock). */
  setOffset(chunk: number, offset_sectors: number): void {
    assert(this.isLocked(chunk), `offset change of chunk ${chunk} without its lock`);
    this.offsets[chunk] = offset_sectors;
  }

  /**
   * Back to all NEW, no buffers, no offsets: the state at take. Only while
   * nobody else touches the table (the snapshot's volumes are quiesced).
   */
  reset(): void {
    for (let chunk = 0; chunk < this.chunk_count; chunk += 1) {
      assert((Atomics.load(this.words, chunk) & LOCKED) === 0, `reset while chunk ${chunk} is locked`);
    }
    this.words.fill(0);
    this.offsets.fill(NO_OFFSET);
  }

  /** Counts of chunks per state, for status and tests. */
  census(): Record<(typeof CHUNK_STATE_NAMES)[number], number> {
    const counts = [0, 0, 0, 0];
    for (let chunk = 0; chunk < this.chunk_count; chunk += 1) {
      counts[Atomics.load(this.words, chunk) & STATE_MASK]! += 1;
    }
    return { NEW: counts[0]!, IN_MEMORY: counts[1]!, STORED: counts[2]!, FAILED: counts[3]! };
  }
}

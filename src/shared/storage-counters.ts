// The counters of one difference storage, shared by the store actors that
// allocate space in it, the grow actor that extends it and the control
// plane that reports on it.
//
// Layout (one SharedArrayBuffer):
//
//   BigInt64 [0] CAPACITY   sectors usable now (fallocated)       grow actor
//            [1] REQUESTED  sectors asked of the grow actor       allocators (CAS)
//            [2] FILLED     sectors handed out to chunks          allocators (CAS)
//            [3] LIMIT      sectors it may never grow past        creator, once
//            [4] NEED       sectors every chunk of every volume   control plane, at take
//                           takes at most: growth stops there
//            [5] LOW_WATER  free sectors at or below which the    control plane, from
//                           next growth step starts               the measured fill rate
//   Int32    [12] LOW_SPACE  1 while a growth step is pending      allocators set, grow actor clears
//            [13] OVERFLOW   1 once an allocation found no room    allocators
//            [14] GROWABLE   1 for a regular file, 0 for a device  creator, once
//            [15] GENERATION bumped (and notified) after every growth or overflow
//            [16] GROW_LOCK  1 while one thread fallocates the next      the grow actor, or a writer
//                            slice after CAPACITY and publishes it      that found no room (CAS 0 → 1;
//                                                                       unlock notifies)
//            [17] IN_MEMORY  1 for a file on tmpfs: what growth        creator, once
//                            reserves is warmed ahead of the writers
//                            (actors/warm.ts)
//
// All in sectors (512 bytes) as in blksnap. FILLED only grows: chunk copies
// are never freed while the snapshot lives. Allocation is a CAS on FILLED
// that fails when it would pass CAPACITY; the caller then waits on
// GENERATION for the grow actor, or breaks the snapshot when growth is
// impossible. BigInt Atomics allocate a little, but only per stored chunk.
//
// GROW_LOCK makes "fallocate the sectors after CAPACITY, then publish the
// new CAPACITY" one step for whichever thread does it (cow/growth-slice.ts):
// the grow actor slice after slice, or a writer helping a pending step
// along. Growth never goes past REQUESTED, so who grows a slice changes
// nothing in the limits, the events or the overflow.
//
// NEED bounds growth from above the way LIMIT does, but reaching it is no
// shortage: a chunk takes its place once and keeps it (an image write
// rewrites the same place), so a storage of NEED sectors can never run out.

import { assert } from './assert';

const CAPACITY = 0;
const REQUESTED = 1;
const FILLED = 2;
const LIMIT = 3;
const NEED = 4;
const LOW_WATER = 5;
const BIGINT_WORDS = 6;
const LOW_SPACE = 12;
const OVERFLOW = 13;
const GROWABLE = 14;
const GENERATION = 15;
const GROW_LOCK = 16;
const IN_MEMORY = 17;
const INT32_WORDS = 18;
/** NEED before take names one: no bound but the limit. */
const NEED_UNKNOWN = BigInt(Number.MAX_SAFE_INTEGER);
const BYTES = INT32_WORDS * Int32Array.BYTES_PER_ELEMENT;
assert(BIGINT_WORDS * BigInt64Array.BYTES_PER_ELEMENT <= LOW_SPACE * Int32Array.BYTES_PER_ELEMENT,
  'storage counters: BigInt words overlap the Int32 words');

/** allocate() found no room in the current capacity. */
export const NO_ROOM = -1;
/** request(): the limit leaves nothing to ask for. */
export const LIMIT_REACHED = 0;
/** request(): the storage already holds room for every chunk; nothing more is needed, ever. */
export const NEED_MET = -1;

export interface StorageSnapshot {
  capacity_sectors: number;
  requested_sectors: number;
  filled_sectors: number;
  limit_sectors: number;
  /** Room for every chunk of every volume (null before take). */
  need_sectors: number | null;
  low_water_sectors: number;
  low_space: boolean;
  overflow: boolean;
  growable: boolean;
  /** On tmpfs: what growth reserves is warmed (made real memory) ahead of the writers (actors/warm.ts). */
  in_memory: boolean;
}

export class StorageCounters {
  private readonly big: BigInt64Array;
  private readonly flags: Int32Array;

  static create(capacity_sectors: number, limit_sectors: number, growable: boolean, in_memory = false): StorageCounters {
    assert(Number.isSafeInteger(capacity_sectors) && capacity_sectors >= 0, `bad capacity ${capacity_sectors}`);
    assert(Number.isSafeInteger(limit_sectors) && limit_sectors >= capacity_sectors,
      `limit ${limit_sectors} below capacity ${capacity_sectors}`);
    const counters = new StorageCounters(new SharedArrayBuffer(BYTES));
    counters.big[CAPACITY] = BigInt(capacity_sectors);
    counters.big[REQUESTED] = BigInt(capacity_sectors);
    counters.big[LIMIT] = BigInt(limit_sectors);
    counters.big[NEED] = NEED_UNKNOWN;
    counters.flags[GROWABLE] = growable ? 1 : 0;
    counters.flags[IN_MEMORY] = in_memory ? 1 : 0;
    return counters;
  }

  constructor(readonly buffer: SharedArrayBuffer) {
    assert(buffer.byteLength === BYTES, 'buffer is not a storage-counters block');
    this.big = new BigInt64Array(buffer, 0, BIGINT_WORDS);
    this.flags = new Int32Array(buffer);
  }

  get capacity_sectors(): number { return Number(Atomics.load(this.big, CAPACITY)); }
  get requested_sectors(): number { return Number(Atomics.load(this.big, REQUESTED)); }
  get filled_sectors(): number { return Number(Atomics.load(this.big, FILLED)); }
  get limit_sectors(): number { return Number(Atomics.load(this.big, LIMIT)); }
  get need_sectors(): number | null {
    const need = Atomics.load(this.big, NEED);
    return need === NEED_UNKNOWN ? null : Number(need);
  }
  get low_water_sectors(): number { return Number(Atomics.load(this.big, LOW_WATER)); }
  get growable(): boolean { return this.flags[GROWABLE] === 1; }
  get in_memory(): boolean { return this.flags[IN_MEMORY] === 1; }
  get overflow(): boolean { return Atomics.load(this.flags, OVERFLOW) === 1; }
  get generation(): number { return Atomics.load(this.flags, GENERATION); }

  /** Hands out `sectors` and returns their start, or NO_ROOM. */
  allocate(sectors: number): number {
    assert(Number.isSafeInteger(sectors) && sectors > 0, `bad allocation size ${sectors}`);
    const want = BigInt(sectors);
    for (;;) {
      const filled = Atomics.load(this.big, FILLED);
      if (filled + want > Atomics.load(this.big, CAPACITY)) return NO_ROOM;
      if (Atomics.compareExchange(this.big, FILLED, filled, filled + want) === filled) return Number(filled);
    }
  }

  free_sectors(): number {
    return this.capacity_sectors - this.filled_sectors;
  }

  /**
   * Room that may be handed to chunks before any write needs them (clone
   * ahead, cow/diff-area.ts) without changing when the snapshot overflows
   * or when growth starts:
   *   - none unless the limit covers the need: only then can every chunk
   *     get room whatever took room first, so early chunks never take the
   *     room of a later one that copying would have saved;
   *   - none of the low-water reserve while a growth step may still come:
   *     taking it would start growth (and reserve filesystem space) for
   *     chunks no write has touched. Once growth has asked for the whole
   *     need, all free room is spare.
   */
  spare_sectors(): number {
    const need = Atomics.load(this.big, NEED);
    if (Atomics.load(this.big, LIMIT) < need) return 0;
    const reserve = Atomics.load(this.big, REQUESTED) >= need ? 0 : this.low_water_sectors;
    return Math.max(0, this.free_sectors() - reserve);
  }

  /**
   * Claims the pending growth step when free space is at or below
   * `threshold_sectors`: true for exactly one caller until growthDone().
   * Also true when an allocation found no room at all.
   */
  claimLowSpace(threshold_sectors: number = this.low_water_sectors): boolean {
    if (this.free_sectors() > threshold_sectors) return false;
    if (Atomics.load(this.big, REQUESTED) >= Atomics.load(this.big, NEED)) return false;
    return Atomics.compareExchange(this.flags, LOW_SPACE, 0, 1) === 0;
  }

  /** Set once at take: the most every chunk of the snapshot's volumes can take. */
  setNeed(need_sectors: number): void {
    assert(Number.isSafeInteger(need_sectors) && need_sectors > 0, `bad need ${need_sectors}`);
    Atomics.store(this.big, NEED, BigInt(need_sectors));
  }

  /** The control plane's low-water mark: free space at or below it starts the next growth step. */
  setLowWater(low_water_sectors: number): void {
    assert(Number.isSafeInteger(low_water_sectors) && low_water_sectors >= 0, `bad low water ${low_water_sectors}`);
    Atomics.store(this.big, LOW_WATER, BigInt(low_water_sectors));
  }

  /**
   * Asks for `step_sectors` more, never past the limit nor past what every
   * chunk can need. Returns the new requested size; NEED_MET when the
   * storage already has room for every chunk; LIMIT_REACHED when the limit
   * leaves nothing to ask for.
   */
  request(step_sectors: number): number {
    assert(Number.isSafeInteger(step_sectors) && step_sectors > 0, `bad growth step ${step_sectors}`);
    for (;;) {
      const requested = Atomics.load(this.big, REQUESTED);
      const limit = Atomics.load(this.big, LIMIT);
      const need = Atomics.load(this.big, NEED);
      if (requested >= need) return NEED_MET;
      if (requested >= limit || !this.growable) return LIMIT_REACHED;
      const ceiling = need < limit ? need : limit;
      const target = requested + BigInt(step_sectors) > ceiling ? ceiling : requested + BigInt(step_sectors);
      if (Atomics.compareExchange(this.big, REQUESTED, requested, target) === requested) return Number(target);
    }
  }

  /** True while more was requested than the storage holds: a growth step is under way. */
  get growth_pending(): boolean {
    return Atomics.load(this.big, REQUESTED) > Atomics.load(this.big, CAPACITY);
  }

  /** The grow actor made part of a step usable: publish it and wake allocators. */
  extend(capacity_sectors: number): void {
    assert(capacity_sectors >= this.capacity_sectors && capacity_sectors <= this.limit_sectors,
      `capacity ${capacity_sectors} must grow and stay within the limit ${this.limit_sectors}`);
    Atomics.store(this.big, CAPACITY, BigInt(capacity_sectors));
    this.bump();
  }

  /** The grow actor made the storage `capacity_sectors` large. */
  grown(capacity_sectors: number): void {
    assert(capacity_sectors >= this.capacity_sectors && capacity_sectors <= this.limit_sectors,
      `capacity ${capacity_sectors} must grow and stay within the limit ${this.limit_sectors}`);
    Atomics.store(this.big, CAPACITY, BigInt(capacity_sectors));
    this.growthDone();
  }

  /** Sectors asked of growth and not yet fallocated: what a slice may take. */
  get pending_sectors(): number {
    return Math.max(0, this.requested_sectors - this.capacity_sectors);
  }

  /** Takes the growth lock (see the header): true for exactly one thread until unlockGrowth(). */
  tryLockGrowth(): boolean {
    return Atomics.compareExchange(this.flags, GROW_LOCK, 0, 1) === 0;
  }

  unlockGrowth(): void {
    assert(Atomics.exchange(this.flags, GROW_LOCK, 0) === 1, 'storage counters: growth lock released but not held');
    Atomics.notify(this.flags, GROW_LOCK);
  }

  /** Sleeps while another thread holds the growth lock, at most timeout_ms. */
  waitForGrowthLock(timeout_ms: number): void {
    Atomics.wait(this.flags, GROW_LOCK, 1, timeout_ms);
  }

  /** A growth step failed: forget what was asked, so a later step asks again. */
  growthFailed(): void {
    Atomics.store(this.big, REQUESTED, Atomics.load(this.big, CAPACITY));
    this.growthDone();
  }

  /** A growth step ended (done, failed or impossible): allow the next claim, wake waiters. */
  growthDone(): void {
    Atomics.store(this.flags, LOW_SPACE, 0);
    this.bump();
  }

  /** Marks the storage overflowed; true for the first caller only. */
  setOverflow(): boolean {
    const first = Atomics.compareExchange(this.flags, OVERFLOW, 0, 1) === 0;
    this.bump();
    return first;
  }

  /** Sleeps until GENERATION moves past `seen` or timeout_ms passes. */
  waitForChange(seen: number, timeout_ms: number): void {
    Atomics.wait(this.flags, GENERATION, seen, timeout_ms);
  }

  snapshot(): StorageSnapshot {
    return {
      capacity_sectors: this.capacity_sectors,
      requested_sectors: this.requested_sectors,
      filled_sectors: this.filled_sectors,
      limit_sectors: this.limit_sectors,
      need_sectors: this.need_sectors,
      low_water_sectors: this.low_water_sectors,
      low_space: Atomics.load(this.flags, LOW_SPACE) === 1,
      overflow: this.overflow,
      growable: this.growable,
      in_memory: this.in_memory,
    };
  }

  private bump(): void {
    Atomics.add(this.flags, GENERATION, 1);
    Atomics.notify(this.flags, GENERATION);
  }
}

// The change-block-tracking map of one volume: one byte per tracking block,
// the number of the snapshot interval in which the block last changed.
// Two copies: ACTIVE (marked by every write) and SNAPSHOT (frozen at take,
// read by backup tools). 2 bytes per tracking block in all.
//
// Numbering. A fresh map has active number 0: writes before the first take
// are marked 0, the same as never written, because no backup precedes them.
// Take n copies ACTIVE to SNAPSHOT after `previous = active; active += 1`,
// so take n reports changes_number = n - 1 and later writes carry n. When
// active would reach 256 (the 256th take) the map is reset instead: both
// copies zeroed, a new generation UUID, previous 0, active 1. A reader that
// sees a new generation must take a full backup.
//
// Reading: a block changed since the take whose changes_number was K iff its
// SNAPSHOT byte is > K (and the generation is the same).
//
// Layout (one SharedArrayBuffer):
//
//   Int32   [0] ACTIVE_NUMBER     0..255   take (control plane, writers quiesced)
//           [1] PREVIOUS_NUMBER   0..255   take; reported as changes_number
//           [2] BLOCK_SHIFT               creator, once
//           [3] BLOCK_COUNT               creator, once
//   bytes   16..31 GENERATION_ID  UUID     creator and take
//   Float64 [4] CAPACITY_SECTORS          creator, once (byte 32)
//   bytes   64 ..                 ACTIVE[block_count]    writers (plain stores)
//           64 + block_count ..   SNAPSHOT[block_count]  take, markDirty
//
// Writers store bytes without Atomics: racing writers store the same value,
// and take runs only while writers are quiesced (the engine's job).

import { randomUUID } from 'node:crypto';
import { assert } from './assert';
import type { Geometry } from './geometry';
import { SECTOR_SHIFT, pow2 } from './units';

const ACTIVE_NUMBER = 0;
const PREVIOUS_NUMBER = 1;
const BLOCK_SHIFT = 2;
const BLOCK_COUNT = 3;
const GENERATION_BYTE = 16;
const GENERATION_BYTES = 16;
const CAPACITY_FLOAT = 4;
const MAPS_BYTE = 64;
/**
 * The parts of the layout a native writer uses to mark (a native queue
 * serving a volume directly); scripts/gen-layout-header.js writes them
 * into native/include/ublksnap-layout.h.
 */
export const CBT_MAP_LAYOUT = Object.freeze({ ACTIVE_NUMBER, BLOCK_SHIFT, BLOCK_COUNT, MAPS_BYTE });
/** A map byte holds 0..255; the take that would need 256 resets the map. */
export const CBT_NUMBER_LIMIT = 256;

export interface CbtInfo {
  /** Tracking block size in bytes. */
  block_size: number;
  device_capacity: number;
  block_count: number;
  generation_id: string;
  /** The number of the last take: blocks with SNAPSHOT byte > K changed since take K. */
  changes_number: number;
  /**
   * Why this generation began (the tracker fills it in; the map itself
   * does not know). Added after upstream's fields.
   */
  generation_reason?: string;
}

/**
 * Everything a map holds, as plain values: what a daemon writes at a clean
 * stop and hands back at the next attach (CbtMap.exportState / restore).
 */
export interface CbtState {
  block_shift: number;
  block_count: number;
  capacity_sectors: number;
  generation_id: string;
  active_number: number;
  changes_number: number;
  /** block_count bytes each. */
  active: Uint8Array;
  snapshot: Uint8Array;
}

const GENERATION_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class CbtMap {
  readonly block_count: number;
  readonly block_shift: number;
  readonly capacity_sectors: number;
  private readonly header: Int32Array;
  private readonly generation: Uint8Array;
  private readonly active: Uint8Array;
  private readonly frozen: Uint8Array;
  private readonly sector_shift_of_block: number;

  static create(capacity_sectors: number, geometry: Geometry): CbtMap {
    const buffer = new SharedArrayBuffer(MAPS_BYTE + 2 * geometry.count);
    const header = new Int32Array(buffer, 0, 4);
    header[BLOCK_SHIFT] = geometry.shift;
    header[BLOCK_COUNT] = geometry.count;
    new Float64Array(buffer, 0, 8)[CAPACITY_FLOAT] = capacity_sectors;
    const map = new CbtMap(buffer);
    map.newGeneration();
    return map;
  }

  /**
   * A map holding state, which must describe a map of exactly this
   * geometry and be internally consistent (the numbering rules above);
   * otherwise a string saying what does not fit, and no map.
   */
  static restore(state: CbtState, capacity_sectors: number, geometry: Geometry): CbtMap | string {
    if (state.capacity_sectors !== capacity_sectors) {
      return `size changed (${state.capacity_sectors} sectors when saved, ${capacity_sectors} now)`;
    }
    if (state.block_shift !== geometry.shift || state.block_count !== geometry.count) {
      return `tracking block size changed (2^${state.block_shift} bytes when saved, 2^${geometry.shift} now)`;
    }
    const problem = inconsistency(state);
    if (problem !== null) return `saved map is inconsistent (${problem})`;
    const map = CbtMap.create(capacity_sectors, geometry);
    map.generation.set(Buffer.from(state.generation_id.replace(/-/g, ''), 'hex'));
    map.active.set(state.active);
    map.frozen.set(state.snapshot);
    Atomics.store(map.header, PREVIOUS_NUMBER, state.changes_number);
    Atomics.store(map.header, ACTIVE_NUMBER, state.active_number);
    return map;
  }

  constructor(readonly buffer: SharedArrayBuffer) {
    this.header = new Int32Array(buffer, 0, 4);
    this.block_shift = this.header[BLOCK_SHIFT]!;
    this.block_count = this.header[BLOCK_COUNT]!;
    this.capacity_sectors = new Float64Array(buffer, 0, 8)[CAPACITY_FLOAT]!;
    assert(buffer.byteLength === MAPS_BYTE + 2 * this.block_count, 'buffer is not a CBT map');
    assert(this.block_count === Math.ceil(this.capacity_sectors / pow2(this.block_shift - SECTOR_SHIFT)),
      'CBT map block count does not cover its capacity');
    this.generation = new Uint8Array(buffer, GENERATION_BYTE, GENERATION_BYTES);
    this.active = new Uint8Array(buffer, MAPS_BYTE, this.block_count);
    this.frozen = new Uint8Array(buffer, MAPS_BYTE + this.block_count, this.block_count);
    this.sector_shift_of_block = this.block_shift - SECTOR_SHIFT;
  }

  get active_number(): number { return Atomics.load(this.header, ACTIVE_NUMBER); }
  get changes_number(): number { return Atomics.load(this.header, PREVIOUS_NUMBER); }

  get generation_id(): string {
    const hex = Buffer.from(this.generation).toString('hex');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  /** Marks the blocks covering sectors [sector, sector + count) as changed now. */
  mark(sector: number, count_sectors: number): void {
    if (count_sectors <= 0) return;
    const first = this.blockOf(sector);
    const end = Math.min(this.blockOf(sector + count_sectors - 1) + 1, this.block_count);
    this.active.fill(Atomics.load(this.header, ACTIVE_NUMBER), first, end);
  }

  /**
   * Marks blocks changed in both copies (blksnap's markdirtyblock): the next
   * take reports them, and so does the current snapshot copy where a take
   * already happened. For tools that rewrote a backup's blocks.
   */
  markDirty(sector: number, count_sectors: number): void {
    if (count_sectors <= 0) return;
    const first = this.blockOf(sector);
    const end = Math.min(this.blockOf(sector + count_sectors - 1) + 1, this.block_count);
    this.active.fill(this.active_number, first, end);
    const previous = this.changes_number;
    if (previous > 0) this.frozen.fill(previous, first, end);
  }

  /**
   * The take switch. Call only while no writer can mark this map.
   * Returns true when the map was reset (new generation).
   */
  switchForTake(): boolean {
    let active = this.active_number + 1;
    let previous = active - 1;
    let reset = false;
    if (active >= CBT_NUMBER_LIMIT) {
      this.active.fill(0);
      this.newGeneration();
      active = 1;
      previous = 0;
      reset = true;
    }
    Atomics.store(this.header, PREVIOUS_NUMBER, previous);
    this.frozen.set(this.active);
    Atomics.store(this.header, ACTIVE_NUMBER, active);
    return reset;
  }

  /**
   * A new generation without a take: both copies zeroed and a new UUID; the
   * numbers stay. Safe while writers mark (they store the current active
   * number, which no reset changes); a reader of the new generation must
   * take a full backup anyway.
   */
  resetGeneration(): void {
    this.active.fill(0);
    this.frozen.fill(0);
    this.newGeneration();
  }

  /** Copies SNAPSHOT bytes [first_block, first_block + target.length) into target. */
  readSnapshot(first_block: number, target: Uint8Array): number {
    assert(Number.isInteger(first_block) && first_block >= 0 && first_block <= this.block_count,
      `CBT slice starts at block ${first_block}, past ${this.block_count}`);
    const end = Math.min(first_block + target.length, this.block_count);
    target.set(this.frozen.subarray(first_block, end));
    return end - first_block;
  }

  info(): CbtInfo {
    return {
      block_size: pow2(this.block_shift),
      device_capacity: this.capacity_sectors,
      block_count: this.block_count,
      generation_id: this.generation_id,
      changes_number: this.changes_number,
    };
  }

  /**
   * A copy of the whole state. Call only while no writer can mark this
   * map (the daemon: after its frontends stopped), or the copy may miss a
   * write that completed.
   */
  exportState(): CbtState {
    return {
      block_shift: this.block_shift,
      block_count: this.block_count,
      capacity_sectors: this.capacity_sectors,
      generation_id: this.generation_id,
      active_number: this.active_number,
      changes_number: this.changes_number,
      active: Uint8Array.from(this.active),
      snapshot: Uint8Array.from(this.frozen),
    };
  }

  blockOf(sector: number): number {
    return Math.floor(sector / pow2(this.sector_shift_of_block));
  }

  private newGeneration(): void {
    this.generation.set(Buffer.from(randomUUID().replace(/-/g, ''), 'hex'));
  }
}

/**
 * Why state cannot be a map's, or null. The numbering rules: previous is
 * active - 1 (0 before the first take); no ACTIVE byte is above the active
 * number and no SNAPSHOT byte above previous, since nothing marks higher.
 */
function inconsistency(state: CbtState): string | null {
  const { active_number, changes_number, block_count } = state;
  if (!GENERATION_ID_PATTERN.test(state.generation_id)) return 'generation id is not a UUID';
  if (!Number.isInteger(active_number) || active_number < 0 || active_number >= CBT_NUMBER_LIMIT) return `active number ${active_number}`;
  if (changes_number !== Math.max(active_number - 1, 0)) return `changes number ${changes_number} with active number ${active_number}`;
  if (state.active.length !== block_count || state.snapshot.length !== block_count) return 'map length is not the block count';
  for (let block = 0; block < block_count; block += 1) {
    if (state.active[block]! > active_number) return `block ${block} is marked ${state.active[block]} in the active copy, past ${active_number}`;
    if (state.snapshot[block]! > changes_number) return `block ${block} is marked ${state.snapshot[block]} in the snapshot copy, past ${changes_number}`;
  }
  return null;
}

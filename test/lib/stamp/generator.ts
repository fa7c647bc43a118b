// The stamp generator: fills sectors with stamps (layout.ts) for one
// writer, one generation (sequence) at a time, the payload a seeded sfc32
// stream. fill() allocates nothing per sector: it composes each stamp in a
// scratch sector and copies it out (TypedArray.set is a memcpy). With the
// 'hrtime' clock, reading CLOCK_MONOTONIC costs one BigInt per fill() call;
// the 'counter' clock allocates nothing at all.

import { assert } from '../../../src/shared/assert';
import {
  SECTOR_BYTES, SECTOR_WORDS, SEQUENCE_MAX, SEQUENCE_MIN, STAMP_CRC_FIRST_BYTE, STAMP_HEADER_BYTES, STAMP_OFFSET_CRC,
  STAMP_OFFSET_LBA, STAMP_OFFSET_MAGIC, STAMP_OFFSET_SEQUENCE, STAMP_OFFSET_TIME, STAMP_OFFSET_VERSION, STAMP_OFFSET_WRITER,
  STAMP_VERSION, MAGIC_WORD_0, MAGIC_WORD_1, TWO_POW_32, WORD_BYTES, assertSectorRange, crc32,
} from './layout';

/** Which clock stamps time_ns: CLOCK_MONOTONIC (comparable across threads) or a per-generator counter (reproducible). */
export type StampClock = 'hrtime' | 'counter';

export interface StampGeneratorOptions {
  /** Default 'hrtime'. 'counter' makes the bytes a pure function of the seed and the calls. */
  clock?: StampClock;
  /** Default SEQUENCE_MIN. */
  first_sequence?: number;
}

/** The identity of one fill: every sector of it carries these three fields. */
export interface StampIdentity {
  sequence: number;
  writer_id: number;
  time_ns: bigint;
}

export class StampGenerator {
  readonly seed: number;
  readonly writer_id: number;
  readonly clock: StampClock;
  private sequence_now: number;
  /** One sector, composed in place and copied out. */
  private readonly scratch_words = new Uint32Array(SECTOR_WORDS);
  private readonly scratch_bytes = new Uint8Array(this.scratch_words.buffer);
  /** sfc32 state a, b, c, d. */
  private readonly prng = new Uint32Array(4);
  /** The last fill's time; the two views share its 8 bytes. */
  private readonly time64 = new BigUint64Array(1);
  private readonly time32 = new Uint32Array(this.time64.buffer);
  private filled = false;

  constructor(seed: number, writer_id: number, options: StampGeneratorOptions = {}) {
    assert(Number.isInteger(seed) && seed >= 0 && seed < TWO_POW_32, `seed must be a 32-bit unsigned integer, got ${seed}`);
    assert(Number.isInteger(writer_id) && writer_id >= 0 && writer_id < TWO_POW_32,
      `writer_id must be a 32-bit unsigned integer, got ${writer_id}`);
    const first_sequence = options.first_sequence ?? SEQUENCE_MIN;
    assert(Number.isInteger(first_sequence) && first_sequence >= SEQUENCE_MIN && first_sequence <= SEQUENCE_MAX,
      `first_sequence must be in [${SEQUENCE_MIN}, ${SEQUENCE_MAX}], got ${first_sequence}`);
    this.seed = seed;
    this.writer_id = writer_id;
    this.clock = options.clock ?? 'hrtime';
    this.sequence_now = first_sequence;
    seedSfc32(this.prng, seed, writer_id);
    const w = this.scratch_words;
    w[STAMP_OFFSET_MAGIC / WORD_BYTES] = MAGIC_WORD_0;
    w[STAMP_OFFSET_MAGIC / WORD_BYTES + 1] = MAGIC_WORD_1;
    w[STAMP_OFFSET_WRITER / WORD_BYTES] = writer_id;
    w[STAMP_OFFSET_VERSION / WORD_BYTES] = STAMP_VERSION;
  }

  /** The generation the next fill() stamps. */
  get sequence(): number {
    return this.sequence_now;
  }

  /** Call at every take: later fills are newer than everything before. Returns the new sequence. */
  nextGeneration(): number {
    assert(this.sequence_now < SEQUENCE_MAX, `sequence ${this.sequence_now} cannot grow past ${SEQUENCE_MAX}`);
    this.sequence_now += 1;
    return this.sequence_now;
  }

  /** time_ns of the last fill (0n before the first). */
  get last_time_ns(): bigint {
    return this.time64[0]!;
  }

  /** What the last fill stamped; record it in a SectorModel once the write is acknowledged. */
  lastStamp(): StampIdentity {
    assert(this.filled, 'lastStamp() before any fill()');
    return { sequence: this.sequence_now, writer_id: this.writer_id, time_ns: this.time64[0]! };
  }

  /**
   * Stamps sector_count sectors into buffer[0, sector_count × 512) for LBAs
   * first_lba, first_lba + 1, …; every sector gets the current sequence and
   * one new time. Fill right before submitting: the stamp says "written in
   * this generation".
   */
  fill(buffer: Uint8Array, first_lba: number, sector_count: number): void {
    assertSectorRange(buffer, first_lba, sector_count);
    this.tick();
    this.filled = true;
    const w = this.scratch_words;
    const bytes = this.scratch_bytes;
    const prng = this.prng;
    w[STAMP_OFFSET_SEQUENCE / WORD_BYTES] = this.sequence_now;
    w[STAMP_OFFSET_TIME / WORD_BYTES] = this.time32[0]!;
    w[STAMP_OFFSET_TIME / WORD_BYTES + 1] = this.time32[1]!;
    let lba_low = first_lba % TWO_POW_32;
    let lba_high = Math.floor(first_lba / TWO_POW_32);
    let a = prng[0]!, b = prng[1]!, c = prng[2]!, d = prng[3]!;
    for (let sector_index = 0; sector_index < sector_count; sector_index += 1) {
      w[STAMP_OFFSET_LBA / WORD_BYTES] = lba_low;
      w[STAMP_OFFSET_LBA / WORD_BYTES + 1] = lba_high;
      for (let word = STAMP_HEADER_BYTES / WORD_BYTES; word < SECTOR_WORDS; word += 1) {
        // sfc32, inlined: the hot loop of every fill.
        const t = (((a + b) | 0) + d) | 0;
        d = (d + 1) | 0;
        a = b ^ (b >>> 9);
        b = (c + (c << 3)) | 0;
        c = (c << 21) | (c >>> 11);
        c = (c + t) | 0;
        w[word] = t;
      }
      w[STAMP_OFFSET_CRC / WORD_BYTES] = crc32(bytes, STAMP_CRC_FIRST_BYTE, SECTOR_BYTES);
      buffer.set(bytes, sector_index * SECTOR_BYTES);
      lba_low += 1;
      if (lba_low === TWO_POW_32) { lba_low = 0; lba_high += 1; }
    }
    prng[0] = a; prng[1] = b; prng[2] = c; prng[3] = d;
  }

  /** Advances time64 to a value greater than any before. */
  private tick(): void {
    const t32 = this.time32;
    if (this.clock === 'counter') {
      t32[0] = (t32[0]! + 1) >>> 0;
      if (t32[0] === 0) t32[1] = t32[1]! + 1;
      return;
    }
    const now = process.hrtime.bigint();
    const last = this.time64[0]!;
    this.time64[0] = now > last ? now : last + 1n;
  }
}

/** splitmix32 over (seed, writer_id) into the four sfc32 words, then a warm-up. */
function seedSfc32(state: Uint32Array, seed: number, writer_id: number): void {
  let x = (seed ^ Math.imul(writer_id, 0x9e3779b9)) | 0;
  for (let i = 0; i < 4; i += 1) {
    x = (x + 0x9e3779b9) | 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    state[i] = z ^ (z >>> 16);
  }
  const SFC32_WARMUP_ROUNDS = 16;
  let a = state[0]!, b = state[1]!, c = state[2]!, d = state[3]!;
  for (let round = 0; round < SFC32_WARMUP_ROUNDS; round += 1) {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
  }
  state[0] = a; state[1] = b; state[2] = c; state[3] = d;
}

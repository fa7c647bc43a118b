// The sector model: per LBA, the stamp identity of the last acknowledged
// write, so a check can demand exactly that (checkAgainst), and a frozen
// copy of it at a take is what an image must hold.

import { assert } from '../../../src/shared/assert';
import { CompiledExpectation, RESULT_OK, RESULT_ZERO, checkSectors, classify, explain, type StampExpectation } from './checks';
import { decodeStamp } from './decode';
import type { StampIdentity } from './generator';
import {
  SECTOR_BYTES, SEQUENCE_MAX, SEQUENCE_MIN, STAMP_OFFSET_SEQUENCE, STAMP_OFFSET_TIME, STAMP_OFFSET_WRITER, TWO_POW_32,
  assertSectorRange, readU32,
} from './layout';
import {
  FINDING_KINDS, KIND_MISMATCH, KIND_UNWRITTEN, ReportBuilder, formatReport, type Report, type SectorFinding,
} from './report';

/** SectorModel markers in the sequence array, outside [SEQUENCE_MIN, SEQUENCE_MAX]. */
const MODEL_UNRECORDED = 0;
const MODEL_UNCERTAIN = 0xffff_ffff;

export interface SectorModelOptions {
  /** What a never-recorded sector holds: 'zero' (default, a fresh device) or 'unknown' (any valid stamp). */
  initial?: 'zero' | 'unknown';
}

/** The expectation for one sector. */
export type ModelEntry = StampIdentity | 'zero' | 'uncertain';

/**
 * Per LBA, the stamp identity of the last write acknowledged there: three
 * typed arrays indexed by LBA, 16 bytes per sector (a 1 GiB volume costs
 * 32 MiB; a frozen snapshot as much again).
 *
 *   sequence[lba]   0 = never written (zeros), 2^32-1 = uncertain, else the stamp's
 *   writer[lba]     writer_id
 *   time[2 × lba]   time_ns low word, [2 × lba + 1] high word
 *
 * At a take, snapshot() freezes a copy; checkAgainst() then demands of an
 * image exactly the frozen state. Writes in flight at the take may land on
 * either side: mark them uncertain in the frozen copy, and they are checked
 * by the stamp rules only.
 */
export class SectorModel {
  readonly sector_count: number;
  private is_frozen = false;
  private readonly sequence: Uint32Array;
  private readonly writer: Uint32Array;
  private readonly time: Uint32Array;
  private readonly time64 = new BigUint64Array(1);
  private readonly time32 = new Uint32Array(this.time64.buffer);

  constructor(sector_count: number, options: SectorModelOptions = {}) {
    assert(Number.isSafeInteger(sector_count) && sector_count >= 0, `sector_count must be a non-negative integer, got ${sector_count}`);
    this.sector_count = sector_count;
    this.sequence = new Uint32Array(sector_count);
    this.writer = new Uint32Array(sector_count);
    this.time = new Uint32Array(2 * sector_count);
    if (options.initial === 'unknown') this.sequence.fill(MODEL_UNCERTAIN);
  }

  /** Records that [first_lba, + sector_count) now holds the fill `stamp` (call when the write is acknowledged). */
  record(first_lba: number, sector_count: number, stamp: StampIdentity): void {
    this.assertWritable(first_lba, sector_count);
    assert(stamp.sequence >= SEQUENCE_MIN && stamp.sequence <= SEQUENCE_MAX, `stamp sequence ${stamp.sequence} out of range`);
    this.time64[0] = stamp.time_ns;
    const end = first_lba + sector_count;
    this.sequence.fill(stamp.sequence, first_lba, end);
    this.writer.fill(stamp.writer_id, first_lba, end);
    for (let lba = first_lba; lba < end; lba += 1) {
      this.time[2 * lba] = this.time32[0]!;
      this.time[2 * lba + 1] = this.time32[1]!;
    }
  }

  /** Records the stamps found in a written buffer; every sector must be a valid stamp for its LBA. */
  recordBuffer(buffer: Uint8Array, first_lba: number, sector_count: number): void {
    this.assertWritable(first_lba, sector_count);
    const report = checkSectors(buffer, first_lba, sector_count);
    assert(report.ok, `recordBuffer: the buffer is not valid stamps\n${formatReport(report)}`);
    for (let i = 0; i < sector_count; i += 1) {
      const offset = i * SECTOR_BYTES;
      const lba = first_lba + i;
      this.sequence[lba] = readU32(buffer, offset + STAMP_OFFSET_SEQUENCE);
      this.writer[lba] = readU32(buffer, offset + STAMP_OFFSET_WRITER);
      this.time[2 * lba] = readU32(buffer, offset + STAMP_OFFSET_TIME);
      this.time[2 * lba + 1] = readU32(buffer, offset + STAMP_OFFSET_TIME + 4);
    }
  }

  /** Any valid stamp for its LBA (within the check's expectation) will do here, e.g. a write in flight at the take. */
  markUncertain(first_lba: number, sector_count: number): void {
    this.assertRange(first_lba, sector_count);
    this.sequence.fill(MODEL_UNCERTAIN, first_lba, first_lba + sector_count);
  }

  /** A frozen copy: the state an image taken now must hold. */
  snapshot(): SectorModel {
    const copy = new SectorModel(this.sector_count);
    copy.sequence.set(this.sequence);
    copy.writer.set(this.writer);
    copy.time.set(this.time);
    copy.is_frozen = true;
    return copy;
  }

  /** A snapshot takes no more writes (markUncertain is still allowed, for writes in flight at the take). */
  get frozen(): boolean {
    return this.is_frozen;
  }

  /** What the model expects at one LBA (allocates; for reports and tests). */
  entry(lba: number): ModelEntry {
    this.assertRange(lba, 1);
    const sequence = this.sequence[lba]!;
    if (sequence === MODEL_UNRECORDED) return 'zero';
    if (sequence === MODEL_UNCERTAIN) return 'uncertain';
    const time_ns = BigInt(this.time[2 * lba]!) + (BigInt(this.time[2 * lba + 1]!) << 32n);
    return { sequence, writer_id: this.writer[lba]!, time_ns };
  }

  /** The loop of checkAgainst, here because it reads the private arrays. */
  checkInto(builder: ReportBuilder, buffer: Uint8Array, first_lba: number, sector_count: number,
    expectation: StampExpectation): void {
    assertSectorRange(buffer, first_lba, sector_count);
    this.assertRange(first_lba, sector_count);
    const e = new CompiledExpectation(expectation);
    builder.begin(first_lba, sector_count);
    let lba_low = first_lba % TWO_POW_32;
    let lba_high = Math.floor(first_lba / TWO_POW_32);
    for (let i = 0; i < sector_count; i += 1) {
      const offset = i * SECTOR_BYTES;
      const lba = first_lba + i;
      const kind = this.classifyAt(buffer, offset, lba, lba_low, lba_high, e);
      if (kind !== RESULT_OK) {
        builder.add(kind, lba, builder.wantsDetail(kind) ? this.finding(kind, buffer, offset, lba, e) : undefined);
      }
      lba_low += 1;
      if (lba_low === TWO_POW_32) { lba_low = 0; lba_high += 1; }
    }
  }

  /** Stamp rules first (garbage, address, limits), then exactness against the recorded identity. */
  private classifyAt(buffer: Uint8Array, offset: number, lba: number, lba_low: number, lba_high: number,
    e: CompiledExpectation): number {
    const expected_sequence = this.sequence[lba]!;
    const verdict = classify(buffer, offset, lba_low, lba_high, e);
    if (verdict === RESULT_ZERO) {
      if (expected_sequence === MODEL_UNRECORDED) return RESULT_OK;
      if (expected_sequence === MODEL_UNCERTAIN && e.allow_unwritten) return RESULT_OK;
      return KIND_UNWRITTEN;
    }
    if (verdict !== RESULT_OK) return verdict;
    if (expected_sequence === MODEL_UNCERTAIN) return RESULT_OK;
    if (expected_sequence === MODEL_UNRECORDED) return KIND_MISMATCH;
    if (readU32(buffer, offset + STAMP_OFFSET_SEQUENCE) !== expected_sequence
      || readU32(buffer, offset + STAMP_OFFSET_WRITER) !== this.writer[lba]
      || readU32(buffer, offset + STAMP_OFFSET_TIME) !== this.time[2 * lba]
      || readU32(buffer, offset + STAMP_OFFSET_TIME + 4) !== this.time[2 * lba + 1]) return KIND_MISMATCH;
    return RESULT_OK;
  }

  private finding(kind: number, buffer: Uint8Array, offset: number, lba: number, e: CompiledExpectation): SectorFinding {
    const entry = this.entry(lba);
    const expected = entry === 'zero' ? 'zeros (never written)'
      : entry === 'uncertain' ? 'any valid stamp'
        : `seq ${entry.sequence} writer ${entry.writer_id} time ${entry.time_ns}`;
    if (kind === KIND_UNWRITTEN) return { kind: 'unwritten', lba, found: null, why: 'all zero', expected };
    const found = decodeStamp(buffer, offset);
    const writer_wrong = e.writer_id >= 0 && found.writer_id !== e.writer_id;
    if (kind === KIND_MISMATCH && !writer_wrong) {
      return { kind: 'mismatch', lba, found, why: `stamp seq ${found.sequence} writer ${found.writer_id} time ${found.time_ns}`, expected };
    }
    return { kind: FINDING_KINDS[kind]!, lba, found, ...explain(kind, found, lba, e) };
  }

  private assertRange(first_lba: number, sector_count: number): void {
    assert(Number.isInteger(first_lba) && Number.isInteger(sector_count) && first_lba >= 0 && sector_count >= 0
      && first_lba + sector_count <= this.sector_count,
      `LBA range ${first_lba}+${sector_count} outside the model's ${this.sector_count} sectors`);
  }

  private assertWritable(first_lba: number, sector_count: number): void {
    assert(!this.frozen, 'a frozen model (a snapshot) does not take writes');
    this.assertRange(first_lba, sector_count);
  }
}

/**
 * Checks that buffer holds exactly the model's state for [first_lba,
 * + sector_count): per sector the recorded stamp, zeros where nothing was
 * recorded, any valid stamp where uncertain. The expectation's limits apply
 * first, so a post-take write shows as `leaked` when max_sequence is given
 * and as `mismatch` otherwise.
 */
export function checkAgainst(buffer: Uint8Array, first_lba: number, sector_count: number, model: SectorModel,
  expectation: StampExpectation = {}): Report {
  const builder = new ReportBuilder();
  model.checkInto(builder, buffer, first_lba, sector_count, expectation);
  return builder.finish();
}

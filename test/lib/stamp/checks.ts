// The stamp rules applied to a buffer: an expectation (the take's sequence
// or time, a writer, …) compiled once per check into plain numbers, the
// per-sector classification (garbage before address before age), and
// checkSectors. The checker allocates nothing for a good sector.

import { assert } from '../../../src/shared/assert';
import { decodeStamp, isAllZero, type StampHeader } from './decode';
import {
  MAGIC_WORD_0, MAGIC_WORD_1, SECTOR_BYTES, STAMP_CRC_FIRST_BYTE, STAMP_MAGIC, STAMP_OFFSET_CRC, STAMP_OFFSET_LBA,
  STAMP_OFFSET_SEQUENCE, STAMP_OFFSET_TIME, STAMP_OFFSET_WRITER, TWO_POW_32, assertSectorRange, crc32, hex, readU32,
} from './layout';
import {
  FINDING_KINDS, KIND_CORRUPT, KIND_LEAKED, KIND_MISADDRESSED, KIND_MISMATCH, KIND_STALE, KIND_UNWRITTEN, ReportBuilder,
  type Report, type SectorFinding,
} from './report';

/** What a checked range may hold. Unset limits are not checked. */
export interface StampExpectation {
  /** The take's sequence: newer sectors leaked in after the take. */
  max_sequence?: number;
  /** The take's time: newer sectors leaked in after the take. */
  max_time_ns?: bigint;
  /** Sectors older than this are stale (a test that requires newer data). */
  min_sequence?: number;
  /** All-zero sectors are fine (never written). */
  allow_unwritten?: boolean;
  /** Sectors by another writer are a mismatch. */
  writer_id?: number;
}

/** classify() results that are not a finding. */
export const RESULT_OK = -1;
export const RESULT_ZERO = -2;

/** An expectation turned into plain numbers once per check, so the per-sector path compares numbers only. */
export class CompiledExpectation {
  readonly max_sequence: number;
  readonly min_sequence: number;
  readonly has_max_time: boolean;
  readonly max_time_low: number;
  readonly max_time_high: number;
  readonly writer_id: number;
  readonly allow_unwritten: boolean;

  constructor(readonly source: StampExpectation) {
    const { max_sequence, min_sequence, max_time_ns, writer_id } = source;
    assert(max_sequence === undefined || Number.isInteger(max_sequence), `max_sequence must be an integer, got ${max_sequence}`);
    assert(min_sequence === undefined || Number.isInteger(min_sequence), `min_sequence must be an integer, got ${min_sequence}`);
    assert(writer_id === undefined || (Number.isInteger(writer_id) && writer_id >= 0), `writer_id must be an unsigned integer, got ${writer_id}`);
    assert(max_time_ns === undefined || (max_time_ns >= 0n && max_time_ns < 1n << 64n), `max_time_ns must fit 64 bits, got ${max_time_ns}`);
    this.max_sequence = max_sequence ?? Infinity;
    this.min_sequence = min_sequence ?? -Infinity;
    this.has_max_time = max_time_ns !== undefined;
    this.max_time_low = Number((max_time_ns ?? 0n) & 0xffff_ffffn);
    this.max_time_high = Number((max_time_ns ?? 0n) >> 32n);
    this.writer_id = writer_id ?? -1;
    this.allow_unwritten = source.allow_unwritten ?? false;
  }
}

/**
 * The stamp-only verdict on one sector: RESULT_ZERO for all-zero, a kind for
 * a bad stamp, RESULT_OK for a valid stamp at its own LBA within the limits.
 * Order matters: garbage before address before age.
 */
export function classify(buffer: Uint8Array, offset: number, lba_low: number, lba_high: number, e: CompiledExpectation): number {
  if (readU32(buffer, offset) !== MAGIC_WORD_0 || readU32(buffer, offset + 4) !== MAGIC_WORD_1) {
    return isAllZero(buffer, offset) ? RESULT_ZERO : KIND_CORRUPT;
  }
  if (readU32(buffer, offset + STAMP_OFFSET_CRC) !== crc32(buffer, offset + STAMP_CRC_FIRST_BYTE, offset + SECTOR_BYTES)) {
    return KIND_CORRUPT;
  }
  if (readU32(buffer, offset + STAMP_OFFSET_LBA) !== lba_low || readU32(buffer, offset + STAMP_OFFSET_LBA + 4) !== lba_high) {
    return KIND_MISADDRESSED;
  }
  if (e.writer_id >= 0 && readU32(buffer, offset + STAMP_OFFSET_WRITER) !== e.writer_id) return KIND_MISMATCH;
  const sequence = readU32(buffer, offset + STAMP_OFFSET_SEQUENCE);
  if (sequence > e.max_sequence) return KIND_LEAKED;
  if (e.has_max_time) {
    const high = readU32(buffer, offset + STAMP_OFFSET_TIME + 4);
    const low = readU32(buffer, offset + STAMP_OFFSET_TIME);
    if (high > e.max_time_high || (high === e.max_time_high && low > e.max_time_low)) return KIND_LEAKED;
  }
  if (sequence < e.min_sequence) return KIND_STALE;
  return RESULT_OK;
}

/** Why a stamp-only finding was made, for the detail lines. */
export function explain(kind: number, found: StampHeader, lba: number, e: CompiledExpectation): { why: string; expected: string } {
  switch (kind) {
    case KIND_CORRUPT:
      if (!found.magic_ok) return { why: `magic "${found.magic}"`, expected: `magic "${STAMP_MAGIC}"` };
      return { why: `checksum stored 0x${hex(found.checksum_stored)}, computed 0x${hex(found.checksum_computed)}`, expected: 'matching checksum' };
    case KIND_MISADDRESSED:
      return { why: `stamp for LBA ${found.lba}`, expected: `LBA ${lba}` };
    case KIND_MISMATCH:
      return { why: `writer ${found.writer_id}`, expected: `writer ${e.source.writer_id}` };
    case KIND_LEAKED:
      if (found.sequence > e.max_sequence) return { why: `sequence ${found.sequence}`, expected: `sequence ≤ ${e.max_sequence}` };
      return { why: `time ${found.time_ns} ns`, expected: `time ≤ ${e.source.max_time_ns} ns` };
    case KIND_STALE:
      return { why: `sequence ${found.sequence}`, expected: `sequence ≥ ${e.min_sequence}` };
    case KIND_UNWRITTEN:
      return { why: 'all zero', expected: 'a stamp' };
    default:
      throw new Error(`no finding kind ${kind}`);
  }
}

/**
 * Checks buffer[0, sector_count × 512) as LBAs first_lba… against the stamp
 * rules and the expectation.
 */
export function checkSectors(buffer: Uint8Array, first_lba: number, sector_count: number,
  expectation: StampExpectation = {}): Report {
  const builder = new ReportBuilder();
  checkSectorsInto(builder, buffer, first_lba, sector_count, expectation);
  return builder.finish();
}

/** checkSectors adding to a builder: one report over many pieces (a file read 1 MiB at a time). */
export function checkSectorsInto(builder: ReportBuilder, buffer: Uint8Array, first_lba: number, sector_count: number,
  expectation: StampExpectation = {}): void {
  assertSectorRange(buffer, first_lba, sector_count);
  const e = new CompiledExpectation(expectation);
  builder.begin(first_lba, sector_count);
  let lba_low = first_lba % TWO_POW_32;
  let lba_high = Math.floor(first_lba / TWO_POW_32);
  for (let i = 0; i < sector_count; i += 1) {
    const offset = i * SECTOR_BYTES;
    let kind = classify(buffer, offset, lba_low, lba_high, e);
    if (kind === RESULT_ZERO) kind = e.allow_unwritten ? RESULT_OK : KIND_UNWRITTEN;
    if (kind !== RESULT_OK) {
      const lba = first_lba + i;
      builder.add(kind, lba, builder.wantsDetail(kind) ? stampFinding(kind, buffer, offset, lba, e) : undefined);
    }
    lba_low += 1;
    if (lba_low === TWO_POW_32) { lba_low = 0; lba_high += 1; }
  }
}

function stampFinding(kind: number, buffer: Uint8Array, offset: number, lba: number, e: CompiledExpectation): SectorFinding {
  if (kind === KIND_UNWRITTEN) return { kind: 'unwritten', lba, found: null, why: 'all zero', expected: 'a stamp' };
  const found = decodeStamp(buffer, offset);
  return { kind: FINDING_KINDS[kind]!, lba, found, ...explain(kind, found, lba, e) };
}

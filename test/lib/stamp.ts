// Stamped sectors: the data-verification method every acceptance test uses
// (ACCEPTANCE.md, "Data verification method"). A writer fills each 512-byte
// sector with a self-describing stamp; a checker reads an image back and
// says, per sector, whether it is intact, where it came from and whether it
// is allowed to be there.
//
// Sector layout (little-endian, 512 bytes):
//
//   offset  bytes  field
//   ──────  ─────  ─────────────────────────────────────────────────────────
//        0      8  magic "UBSSTAMP"
//        8      4  crc32 (IEEE, zlib's) of bytes [12, 512)
//       12      4  sequence: the generation, bumped at every take (≥ 1)
//       16      8  lba: the sector's own address in 512-byte sectors
//       24      8  time_ns: strictly increasing per generator, one per fill
//                  (CLOCK_MONOTONIC ns, or a counter for reproducible bytes)
//       32      4  writer_id
//       36      4  format version (1)
//       40    472  payload: a seeded PRNG stream (sfc32)
//
// What the fields catch: the checksum finds corruption (torn or mangled
// sectors); the LBA finds misaddressing (a chunk landed in the wrong place);
// sequence and time find leakage (a post-take write reached the image) and
// staleness (an old copy where a newer one is required); magic and an
// all-zero test tell garbage from never-written sectors. (writer_id, time_ns)
// identifies one fill uniquely, which is what SectorModel uses to demand
// exactly the last acknowledged write per sector.
//
// A test at a take, in short:
//
//   generator.fill(buffer, lba, n); <write it>; model.record(lba, n, generator.lastStamp());
//   <take>  frozen = model.snapshot(); take_sequence = generator.sequence;
//           generator.nextGeneration();   // before any post-take fill
//   <check> checkFile(image, { first_lba: 0, sector_count, model: frozen,
//                              expectation: { max_sequence: take_sequence } })
//   (stamp rules only: checkSectors(buffer, lba, n, { max_sequence, … }))
//
// Design notes:
// - fill() allocates nothing per sector: it composes each stamp in a scratch
//   sector and copies it out (TypedArray.set is a memcpy). With the 'hrtime'
//   clock, reading CLOCK_MONOTONIC costs one BigInt per fill() call; the
//   'counter' clock allocates nothing at all.
// - The checker allocates nothing for a good sector; findings are counted
//   always, kept as merged ranges up to RANGES_KEPT_MAX and in full for the
//   first DETAILS_PER_KIND_MAX sectors of each kind.
// - crc32 is table-driven slice-by-8 in JavaScript (about 1 GB/s), so the
//   checker can run over any byte offset without making a view per sector.

import { assert } from '../../src/shared/assert';

export const SECTOR_BYTES = 512;
export const STAMP_MAGIC = 'UBSSTAMP';
export const STAMP_VERSION = 1;

/** Byte offsets of the header fields; see the drawing above. */
export const STAMP_OFFSET_MAGIC = 0;
export const STAMP_OFFSET_CRC = 8;
export const STAMP_OFFSET_SEQUENCE = 12;
export const STAMP_OFFSET_LBA = 16;
export const STAMP_OFFSET_TIME = 24;
export const STAMP_OFFSET_WRITER = 32;
export const STAMP_OFFSET_VERSION = 36;
export const STAMP_HEADER_BYTES = 40;
/** The checksum covers everything after its own field. */
export const STAMP_CRC_FIRST_BYTE = STAMP_OFFSET_SEQUENCE;

/** Sequence numbers live in [SEQUENCE_MIN, SEQUENCE_MAX]; SectorModel uses 0 and 2^32-1 as markers. */
export const SEQUENCE_MIN = 1;
export const SEQUENCE_MAX = 0xffff_fffe;
/** The first sectors of each finding kind that a report keeps in full. */
export const DETAILS_PER_KIND_MAX = 4;
/** Merged ranges a report keeps; past it ranges are only counted (a report stays small on a wrecked image). */
export const RANGES_KEPT_MAX = 4096;
/** Ranges formatReport prints before "… and N more". */
export const FORMAT_RANGES_MAX = 16;

const WORD_BYTES = 4;
const SECTOR_WORDS = SECTOR_BYTES / WORD_BYTES;
const TWO_POW_32 = 0x1_0000_0000;
const MAGIC_BYTES = new TextEncoder().encode(STAMP_MAGIC);
const MAGIC_WORD_0 = readU32(MAGIC_BYTES, 0);
const MAGIC_WORD_1 = readU32(MAGIC_BYTES, 4);

assert(MAGIC_BYTES.length === 8, 'the magic is 8 bytes');
assert(STAMP_HEADER_BYTES % WORD_BYTES === 0, 'the payload starts on a word');
// Stamps are composed through a Uint32Array; the format is little-endian.
assert(new Uint8Array(new Uint32Array([1]).buffer)[0] === 1, 'stamps assume a little-endian host');

// ── crc32 ────────────────────────────────────────────────────────────────

/** Slice-by-8 tables for the reflected IEEE polynomial: table t at [t × 256, (t + 1) × 256). */
const CRC_TABLE = buildCrcTable();

function buildCrcTable(): Int32Array {
  const table = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let bit = 0; bit < 8; bit += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  for (let t = 1; t < 8; t += 1) {
    for (let n = 0; n < 256; n += 1) {
      const previous = table[(t - 1) * 256 + n]!;
      table[t * 256 + n] = (previous >>> 8) ^ table[previous & 0xff]!;
    }
  }
  return table;
}

/** crc32 of bytes[start, end), equal to zlib.crc32 of the same bytes. */
export function crc32(bytes: Uint8Array, start: number, end: number): number {
  const t = CRC_TABLE;
  let c = -1;
  let i = start;
  const end_of_eights = start + ((end - start) & ~7);
  for (; i < end_of_eights; i += 8) {
    const a = c ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24));
    c = t[1792 + (a & 0xff)]! ^ t[1536 + ((a >>> 8) & 0xff)]! ^ t[1280 + ((a >>> 16) & 0xff)]! ^ t[1024 + (a >>> 24)]!
      ^ t[768 + bytes[i + 4]!]! ^ t[512 + bytes[i + 5]!]! ^ t[256 + bytes[i + 6]!]! ^ t[bytes[i + 7]!]!;
  }
  for (; i < end; i += 1) c = t[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

function readU32(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24)) >>> 0;
}

function assertSectorRange(buffer: Uint8Array, first_lba: number, sector_count: number): void {
  // Messages are built only on failure: fill() runs per write and must not allocate.
  if (!(Number.isSafeInteger(first_lba) && first_lba >= 0)) {
    assert(false, `first_lba must be a non-negative integer, got ${first_lba}`);
  }
  if (!(Number.isSafeInteger(sector_count) && sector_count >= 0)) {
    assert(false, `sector_count must be a non-negative integer, got ${sector_count}`);
  }
  if (!Number.isSafeInteger(first_lba + sector_count)) assert(false, `LBA range ${first_lba}+${sector_count} passes 2^53`);
  if (buffer.byteLength < sector_count * SECTOR_BYTES) {
    assert(false, `buffer of ${buffer.byteLength} bytes is short of ${sector_count} sectors`);
  }
}

// ── the generator ────────────────────────────────────────────────────────

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

// ── decoding ─────────────────────────────────────────────────────────────

/** One sector's header as found, for reports and debugging. */
export interface StampHeader {
  magic: string;
  magic_ok: boolean;
  checksum_stored: number;
  checksum_computed: number;
  sequence: number;
  lba: number;
  time_ns: bigint;
  writer_id: number;
  version: number;
}

/** Decodes the header at buffer[offset] whatever it holds (allocates; not for the hot path). */
export function decodeStamp(buffer: Uint8Array, offset = 0): StampHeader {
  assert(offset >= 0 && offset + SECTOR_BYTES <= buffer.byteLength, `no whole sector at offset ${offset}`);
  let magic = '';
  let magic_ok = true;
  for (let i = 0; i < MAGIC_BYTES.length; i += 1) {
    const byte = buffer[offset + i]!;
    magic += byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
    if (byte !== MAGIC_BYTES[i]) magic_ok = false;
  }
  return {
    magic,
    magic_ok,
    checksum_stored: readU32(buffer, offset + STAMP_OFFSET_CRC),
    checksum_computed: crc32(buffer, offset + STAMP_CRC_FIRST_BYTE, offset + SECTOR_BYTES),
    sequence: readU32(buffer, offset + STAMP_OFFSET_SEQUENCE),
    lba: readU32(buffer, offset + STAMP_OFFSET_LBA) + readU32(buffer, offset + STAMP_OFFSET_LBA + 4) * TWO_POW_32,
    time_ns: BigInt(readU32(buffer, offset + STAMP_OFFSET_TIME)) + (BigInt(readU32(buffer, offset + STAMP_OFFSET_TIME + 4)) << 32n),
    writer_id: readU32(buffer, offset + STAMP_OFFSET_WRITER),
    version: readU32(buffer, offset + STAMP_OFFSET_VERSION),
  };
}

function isAllZero(buffer: Uint8Array, offset: number): boolean {
  for (let i = offset; i < offset + SECTOR_BYTES; i += 1) if (buffer[i] !== 0) return false;
  return true;
}

// ── expectations and classification ─────────────────────────────────────

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

export type FindingKind = 'corrupt' | 'misaddressed' | 'leaked' | 'stale' | 'unwritten' | 'mismatch';
export const FINDING_KINDS: readonly FindingKind[] = ['corrupt', 'misaddressed', 'leaked', 'stale', 'unwritten', 'mismatch'];
const KIND_CORRUPT = 0;
const KIND_MISADDRESSED = 1;
const KIND_LEAKED = 2;
const KIND_STALE = 3;
const KIND_UNWRITTEN = 4;
const KIND_MISMATCH = 5;
const KIND_COUNT = FINDING_KINDS.length;
/** classify() results that are not a finding. */
const RESULT_OK = -1;
const RESULT_ZERO = -2;

/** An expectation turned into plain numbers once per check, so the per-sector path compares numbers only. */
class CompiledExpectation {
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
function classify(buffer: Uint8Array, offset: number, lba_low: number, lba_high: number, e: CompiledExpectation): number {
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
function explain(kind: number, found: StampHeader, lba: number, e: CompiledExpectation): { why: string; expected: string } {
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

function hex(value: number): string {
  return value.toString(16).padStart(8, '0');
}

// ── reports ──────────────────────────────────────────────────────────────

export interface RangeFinding {
  kind: FindingKind;
  first_lba: number;
  sector_count: number;
}

export interface SectorFinding {
  kind: FindingKind;
  lba: number;
  /** What the sector held (null when it was all zero). */
  found: StampHeader | null;
  why: string;
  expected: string;
}

export interface Report {
  ok: boolean;
  first_lba: number;
  sector_count: number;
  bad_sector_count: number;
  counts: Record<FindingKind, number>;
  /** Runs of adjacent sectors of one kind, by first LBA; at most RANGES_KEPT_MAX. */
  ranges: RangeFinding[];
  /** Ranges past RANGES_KEPT_MAX, counted but not kept. */
  ranges_dropped_count: number;
  /** The first DETAILS_PER_KIND_MAX sectors of each kind, decoded. */
  details: SectorFinding[];
}

/**
 * Accumulates findings over one ascending pass (one call, or many pieces of
 * a file). Each kind keeps one open range; a sector that extends it costs
 * two number updates, anything else closes it into the list.
 */
export class ReportBuilder {
  private readonly counts = new Float64Array(KIND_COUNT);
  private readonly open_first_lba = new Float64Array(KIND_COUNT).fill(-1);
  private readonly open_sector_count = new Float64Array(KIND_COUNT);
  private readonly ranges: RangeFinding[] = [];
  private ranges_dropped_count = 0;
  private readonly details: SectorFinding[] = [];
  private readonly detail_counts = new Uint8Array(KIND_COUNT);
  private first_lba = -1;
  private next_lba = 0;
  private checked_count = 0;

  /** Notes that [first_lba, + sector_count) is being checked; pieces must come in ascending order. */
  begin(first_lba: number, sector_count: number): void {
    assert(first_lba >= this.next_lba, `report pieces must ascend: ${first_lba} after ${this.next_lba}`);
    if (this.first_lba < 0) this.first_lba = first_lba;
    this.next_lba = first_lba + sector_count;
    this.checked_count += sector_count;
  }

  /** True while details of this kind are still wanted (so the caller decodes only then). */
  wantsDetail(kind: number): boolean {
    return this.detail_counts[kind]! < DETAILS_PER_KIND_MAX;
  }

  add(kind: number, lba: number, detail?: SectorFinding): void {
    this.counts[kind] = this.counts[kind]! + 1;
    const open = this.open_first_lba[kind]!;
    if (open >= 0 && open + this.open_sector_count[kind]! === lba) {
      this.open_sector_count[kind] = this.open_sector_count[kind]! + 1;
    } else {
      this.close(kind);
      this.open_first_lba[kind] = lba;
      this.open_sector_count[kind] = 1;
    }
    if (detail !== undefined && this.wantsDetail(kind)) {
      this.detail_counts[kind] = this.detail_counts[kind]! + 1;
      this.details.push(detail);
    }
  }

  finish(): Report {
    for (let kind = 0; kind < KIND_COUNT; kind += 1) this.close(kind);
    this.ranges.sort((x, y) => x.first_lba - y.first_lba);
    this.details.sort((x, y) => x.lba - y.lba);
    const counts = {} as Record<FindingKind, number>;
    let bad_sector_count = 0;
    FINDING_KINDS.forEach((name, kind) => { counts[name] = this.counts[kind]!; bad_sector_count += this.counts[kind]!; });
    return {
      ok: bad_sector_count === 0,
      first_lba: Math.max(this.first_lba, 0),
      sector_count: this.checked_count,
      bad_sector_count,
      counts,
      ranges: this.ranges,
      ranges_dropped_count: this.ranges_dropped_count,
      details: this.details,
    };
  }

  private close(kind: number): void {
    const first_lba = this.open_first_lba[kind]!;
    if (first_lba < 0) return;
    if (this.ranges.length < RANGES_KEPT_MAX) {
      this.ranges.push({ kind: FINDING_KINDS[kind]!, first_lba, sector_count: this.open_sector_count[kind]! });
    } else {
      this.ranges_dropped_count += 1;
    }
    this.open_first_lba[kind] = -1;
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

/** A short text: one summary line, the ranges, the detailed sectors. */
export function formatReport(report: Report): string {
  const last_lba = report.first_lba + report.sector_count - 1;
  const head = `stamp check of LBA ${report.first_lba}-${last_lba} (${report.sector_count} sectors): `;
  if (report.ok) return `${head}ok`;
  const by_kind = FINDING_KINDS.filter((k) => report.counts[k] > 0).map((k) => `${k} ${report.counts[k]}`).join(', ');
  const lines = [`${head}${report.bad_sector_count} bad (${by_kind})`];
  for (const range of report.ranges.slice(0, FORMAT_RANGES_MAX)) {
    const last = range.first_lba + range.sector_count - 1;
    const span = range.sector_count === 1 ? `${range.first_lba}` : `${range.first_lba}-${last}`;
    lines.push(`  ${range.kind.padEnd(12)} LBA ${span} (${range.sector_count})`);
  }
  const more = report.ranges.length - FORMAT_RANGES_MAX + report.ranges_dropped_count;
  if (more > 0) lines.push(`  … and ${more} more ranges`);
  for (const d of report.details) {
    const f = d.found;
    const found = f === null ? 'zeros'
      : `magic "${f.magic}" crc 0x${hex(f.checksum_stored)}/0x${hex(f.checksum_computed)} seq ${f.sequence} lba ${f.lba} time ${f.time_ns} writer ${f.writer_id} v${f.version}`;
    lines.push(`  LBA ${d.lba} ${d.kind}: ${d.why}, expected ${d.expected}; found ${found}`);
  }
  return lines.join('\n');
}

// ── the model ────────────────────────────────────────────────────────────

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

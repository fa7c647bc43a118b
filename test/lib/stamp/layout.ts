// The stamped sector's layout (docs/acceptance.md, "Data verification method";
// the library's overview is index.ts).
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
// This file: the layout's constants, the crc32 both writer and checker
// use, and the small readers every part of the stamp library shares.
// - crc32 is table-driven slice-by-8 in JavaScript (about 1 GB/s), so the
//   checker can run over any byte offset without making a view per sector.

import { assert } from '../../../src/shared/assert';

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

export const WORD_BYTES = 4;
export const SECTOR_WORDS = SECTOR_BYTES / WORD_BYTES;
export const TWO_POW_32 = 0x1_0000_0000;
export const MAGIC_BYTES = new TextEncoder().encode(STAMP_MAGIC);
export const MAGIC_WORD_0 = readU32(MAGIC_BYTES, 0);
export const MAGIC_WORD_1 = readU32(MAGIC_BYTES, 4);

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

export function readU32(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24)) >>> 0;
}

export function assertSectorRange(buffer: Uint8Array, first_lba: number, sector_count: number): void {
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

/** A 32-bit value as 8 hex digits, for report lines. */
export function hex(value: number): string {
  return value.toString(16).padStart(8, '0');
}

// Stamped sectors: the data-verification method every acceptance test uses
// (docs/acceptance.md, "Data verification method"). A writer fills each 512-byte
// sector with a self-describing stamp; a checker reads an image back and
// says, per sector, whether it is intact, where it came from and whether it
// is allowed to be there.
//
// The sector layout and the meaning of each field: layout.ts.
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
//
// Files (one concept each), re-exported here as one API:
//
//   layout.ts     the sector layout, its constants, crc32
//   generator.ts  StampGenerator: fills sectors for one writer and generation
//   decode.ts     decodeStamp: one sector's header, whatever it holds
//   checks.ts     expectations, per-sector classification, checkSectors
//   report.ts     finding kinds, ReportBuilder, formatReport
//   model.ts      SectorModel (exact expectations per LBA), checkAgainst

export {
  DETAILS_PER_KIND_MAX, FORMAT_RANGES_MAX, RANGES_KEPT_MAX, SECTOR_BYTES, SEQUENCE_MAX, SEQUENCE_MIN,
  STAMP_CRC_FIRST_BYTE, STAMP_HEADER_BYTES, STAMP_MAGIC, STAMP_OFFSET_CRC, STAMP_OFFSET_LBA, STAMP_OFFSET_MAGIC,
  STAMP_OFFSET_SEQUENCE, STAMP_OFFSET_TIME, STAMP_OFFSET_VERSION, STAMP_OFFSET_WRITER, STAMP_VERSION, crc32,
} from './layout';
export { StampGenerator, type StampClock, type StampGeneratorOptions, type StampIdentity } from './generator';
export { decodeStamp, type StampHeader } from './decode';
export { checkSectors, checkSectorsInto, type StampExpectation } from './checks';
export {
  FINDING_KINDS, ReportBuilder, formatReport, type FindingKind, type RangeFinding, type Report, type SectorFinding,
} from './report';
export { SectorModel, checkAgainst, type ModelEntry, type SectorModelOptions } from './model';

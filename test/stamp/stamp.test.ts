// Goal: the stamped-sector writer and checker (test/lib/stamp.ts), which
// every acceptance test trusts to find bad data, finds each kind of damage
// at exactly the damaged sectors, reports it as merged ranges, and passes
// clean data. Method: fill buffers with a seeded generator, damage them on
// purpose (flip a bit, copy a sector elsewhere, write a newer generation,
// zero, foreign writer), and compare the report with the damage done;
// check the crc against zlib, the seeded bytes for reproducibility, and
// print fill and check throughput over 64 MiB.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import zlib from 'node:zlib';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import {
  DETAILS_PER_KIND_MAX, RANGES_KEPT_MAX, Report, SECTOR_BYTES, STAMP_HEADER_BYTES, STAMP_OFFSET_CRC,
  STAMP_OFFSET_LBA, STAMP_OFFSET_SEQUENCE, STAMP_OFFSET_TIME, STAMP_OFFSET_WRITER, StampGenerator,
  checkSectors, crc32, decodeStamp, formatReport,
} from '../lib/stamp';
import { testSeed } from '../lib/workers';

const SEED = testSeed('stamp');
const WRITER_ID = 7;
const MiB = 1024 * 1024;

function stamped(first_lba: number, sector_count: number, generator = new StampGenerator(SEED, WRITER_ID)): Uint8Array {
  const buffer = new Uint8Array(sector_count * SECTOR_BYTES);
  generator.fill(buffer, first_lba, sector_count);
  return buffer;
}

/** The report's ranges as [kind, first_lba, sector_count] triples. */
function ranges(report: Report): [string, number, number][] {
  return report.ranges.map((r) => [r.kind, r.first_lba, r.sector_count]);
}

function badCounts(report: Report): Record<string, number> {
  return Object.fromEntries(Object.entries(report.counts).filter(([, n]) => n > 0));
}

test('crc32 matches the IEEE check value and zlib.crc32 at any offset', () => {
  assert.is(crc32(new TextEncoder().encode('123456789'), 0, 9), 0xcbf43926);
  const bytes = stamped(0, 4);
  const has_zlib_crc = typeof (zlib as { crc32?: unknown }).crc32 === 'function';
  if (!has_zlib_crc) console.log('  zlib.crc32 missing in this Node: compared with the check value only');
  for (const [start, end] of [[0, 0], [0, 1], [3, 10], [12, 512], [1, 2048], [513, 1531]] as [number, number][]) {
    const mine = crc32(bytes, start, end);
    if (has_zlib_crc) assert.is(mine, zlib.crc32(bytes.subarray(start, end)), `bytes [${start}, ${end})`);
  }
});

test('round trip: a fill checks clean under every matching expectation', () => {
  const first_lba = 5000;
  const buffer = stamped(first_lba, 1000);
  const report = checkSectors(buffer, first_lba, 1000, { writer_id: WRITER_ID, max_sequence: 1, min_sequence: 1 });
  assert.ok(report.ok, formatReport(report));
  assert.is(report.bad_sector_count, 0);
  assert.is(report.sector_count, 1000);
  assert.is(report.first_lba, first_lba);
  assert.match(formatReport(report), /LBA 5000-5999 \(1000 sectors\): ok/);
  const header = decodeStamp(buffer, 17 * SECTOR_BYTES);
  assert.equal([header.magic, header.magic_ok, header.sequence, header.lba, header.writer_id, header.version],
    ['UBSSTAMP', true, 1, 5017, WRITER_ID, 1]);
  assert.is(header.checksum_stored, header.checksum_computed);
  assert.ok(header.time_ns > 0n);
});

test('the checker sees the buffer at any byte offset, the writer too', () => {
  const backing = new Uint8Array(20 * SECTOR_BYTES + 3);
  const view = backing.subarray(3, 3 + 20 * SECTOR_BYTES);
  new StampGenerator(SEED, WRITER_ID).fill(view, 40, 20);
  assert.ok(checkSectors(view, 40, 20).ok);
  view[5 * SECTOR_BYTES + 100]! ^= 1;
  assert.equal(ranges(checkSectors(view, 40, 20)), [['corrupt', 45, 1]]);
});

test('LBAs past 2^32 are stamped and checked in full 64 bits', () => {
  const first_lba = 2 ** 32 - 2;
  const buffer = stamped(first_lba, 4);
  assert.ok(checkSectors(buffer, first_lba, 4).ok);
  assert.is(decodeStamp(buffer, 3 * SECTOR_BYTES).lba, 2 ** 32 + 1);
  const report = checkSectors(buffer, first_lba + 2 ** 32, 4);
  assert.is(report.counts.misaddressed, 4, 'high word checked');
});

const FLIP_SPOTS: [string, number][] = [
  ['magic', 0],
  ['checksum field', STAMP_OFFSET_CRC + 2],
  ['sequence', STAMP_OFFSET_SEQUENCE],
  ['lba (covered by the checksum, so corrupt not misaddressed)', STAMP_OFFSET_LBA + 1],
  ['time', STAMP_OFFSET_TIME + 5],
  ['writer', STAMP_OFFSET_WRITER],
  ['first payload byte', STAMP_HEADER_BYTES],
  ['last byte', SECTOR_BYTES - 1],
];

for (const [label, byte_in_sector] of FLIP_SPOTS) {
  test(`one flipped bit in the ${label} → corrupt at exactly that sector`, () => {
    const first_lba = 100;
    const buffer = stamped(first_lba, 64);
    const sector = 37;
    buffer[sector * SECTOR_BYTES + byte_in_sector]! ^= 0x10;
    const report = checkSectors(buffer, first_lba, 64);
    assert.not.ok(report.ok);
    assert.equal(badCounts(report), { corrupt: 1 }, formatReport(report));
    assert.equal(ranges(report), [['corrupt', first_lba + sector, 1]]);
    assert.is(report.details.length, 1);
    assert.is(report.details[0]!.lba, first_lba + sector);
    assert.match(formatReport(report), new RegExp(`LBA ${first_lba + sector} corrupt: (magic|checksum)`));
  });
}

test('a sector copied to another LBA → misaddressed there, with both LBAs in the detail', () => {
  const buffer = stamped(0, 64);
  buffer.copyWithin(20 * SECTOR_BYTES, 10 * SECTOR_BYTES, 11 * SECTOR_BYTES);
  const report = checkSectors(buffer, 0, 64);
  assert.equal(badCounts(report), { misaddressed: 1 });
  assert.equal(ranges(report), [['misaddressed', 20, 1]]);
  assert.is(report.details[0]!.found!.lba, 10);
  assert.match(formatReport(report), /LBA 20 misaddressed: stamp for LBA 10, expected LBA 20/);
});

test('a whole chunk landed one chunk off → one misaddressed range', () => {
  const chunk_sectors = 8;
  const buffer = stamped(0, 64);
  buffer.copyWithin(24 * SECTOR_BYTES, 16 * SECTOR_BYTES, 24 * SECTOR_BYTES);
  assert.equal(ranges(checkSectors(buffer, 0, 64)), [['misaddressed', 24, chunk_sectors]]);
});

test('a post-take sector where max_sequence is the take → leaked; without the limit → ok', () => {
  const generator = new StampGenerator(SEED, WRITER_ID);
  const buffer = stamped(0, 64, generator);
  const take_sequence = generator.sequence;
  generator.nextGeneration();
  generator.fill(buffer.subarray(30 * SECTOR_BYTES), 30, 4);
  const report = checkSectors(buffer, 0, 64, { max_sequence: take_sequence });
  assert.equal(ranges(report), [['leaked', 30, 4]], formatReport(report));
  assert.match(formatReport(report), /LBA 30 leaked: sequence 2, expected sequence ≤ 1/);
  assert.ok(checkSectors(buffer, 0, 64).ok, 'no limit, no leak');
});

test('a sector newer than max_time_ns → leaked, even in the same generation', () => {
  const generator = new StampGenerator(SEED, WRITER_ID);
  const buffer = stamped(0, 16, generator);
  const take_time_ns = generator.last_time_ns;
  generator.fill(buffer.subarray(9 * SECTOR_BYTES), 9, 1);
  assert.ok(generator.last_time_ns > take_time_ns, 'time is strictly increasing per fill');
  const report = checkSectors(buffer, 0, 16, { max_time_ns: take_time_ns, max_sequence: generator.sequence });
  assert.equal(ranges(report), [['leaked', 9, 1]], formatReport(report));
  assert.match(report.details[0]!.why, /^time /);
});

test('older than min_sequence → stale', () => {
  const generator = new StampGenerator(SEED, WRITER_ID);
  const buffer = stamped(0, 16, generator);
  generator.nextGeneration();
  generator.fill(buffer, 0, 8);
  assert.equal(ranges(checkSectors(buffer, 0, 16, { min_sequence: 2 })), [['stale', 8, 8]]);
});

test('zeros → unwritten, or ok when allowed; non-zero garbage stays corrupt', () => {
  const buffer = stamped(0, 16);
  buffer.fill(0, 4 * SECTOR_BYTES, 6 * SECTOR_BYTES);
  buffer.fill(0xff, 12 * SECTOR_BYTES, 13 * SECTOR_BYTES);
  const strict = checkSectors(buffer, 0, 16);
  assert.equal(ranges(strict), [['unwritten', 4, 2], ['corrupt', 12, 1]]);
  assert.is(strict.details.find((d) => d.kind === 'unwritten')!.found, null);
  const lenient = checkSectors(buffer, 0, 16, { allow_unwritten: true });
  assert.equal(ranges(lenient), [['corrupt', 12, 1]]);
});

test('a valid stamp by another writer → mismatch', () => {
  const buffer = stamped(0, 16);
  new StampGenerator(SEED, WRITER_ID + 1).fill(buffer.subarray(2 * SECTOR_BYTES), 2, 3);
  const report = checkSectors(buffer, 0, 16, { writer_id: WRITER_ID });
  assert.equal(ranges(report), [['mismatch', 2, 3]]);
  assert.match(formatReport(report), /writer 8, expected writer 7/);
});

test('merged ranges: sectors 3-7 and 10 are two ranges; kinds merge apart', () => {
  const buffer = stamped(0, 32);
  for (const sector of [3, 4, 5, 6, 7, 10]) buffer[sector * SECTOR_BYTES + 200]! ^= 1;
  const report = checkSectors(buffer, 0, 32);
  assert.equal(ranges(report), [['corrupt', 3, 5], ['corrupt', 10, 1]]);
  assert.is(report.bad_sector_count, 6);
  const text = formatReport(report);
  assert.match(text, /6 bad \(corrupt 6\)/);
  assert.match(text, /corrupt +LBA 3-7 \(5\)/);
  assert.match(text, /corrupt +LBA 10 \(1\)/);
  assert.is(report.details.length, DETAILS_PER_KIND_MAX, 'first few in full');
  assert.equal(report.details.map((d) => d.lba), [3, 4, 5, 6]);

  // A misaddressed sector inside a corrupt run splits nothing of the other kind.
  const mixed = stamped(0, 32);
  for (const sector of [3, 4, 6, 7]) mixed[sector * SECTOR_BYTES + 200]! ^= 1;
  mixed.copyWithin(5 * SECTOR_BYTES, 0, SECTOR_BYTES);
  assert.equal(ranges(checkSectors(mixed, 0, 32)), [['corrupt', 3, 2], ['misaddressed', 5, 1], ['corrupt', 6, 2]]);
});

test('a wrecked image keeps counting past the kept ranges and details', () => {
  const sector_count = 2 * RANGES_KEPT_MAX + 10;
  const buffer = stamped(0, sector_count);
  for (let sector = 0; sector < sector_count; sector += 2) buffer[sector * SECTOR_BYTES + 300]! ^= 1;
  const report = checkSectors(buffer, 0, sector_count);
  assert.is(report.counts.corrupt, sector_count / 2);
  assert.is(report.ranges.length, RANGES_KEPT_MAX);
  assert.is(report.ranges_dropped_count, sector_count / 2 - RANGES_KEPT_MAX);
  assert.is(report.details.length, DETAILS_PER_KIND_MAX);
  assert.match(formatReport(report), /… and \d+ more ranges/);
  assert.ok(formatReport(report).split('\n').length < 40, 'the text stays short');
});

test('seeded: same seed and calls → same bytes; another seed or writer → other payload', () => {
  const fills = (seed: number, writer_id: number): Uint8Array => {
    const generator = new StampGenerator(seed, writer_id, { clock: 'counter' });
    const buffer = new Uint8Array(48 * SECTOR_BYTES);
    generator.fill(buffer, 1000, 16);
    generator.nextGeneration();
    generator.fill(buffer.subarray(16 * SECTOR_BYTES), 7, 32);
    return buffer;
  };
  assert.equal(fills(SEED, WRITER_ID), fills(SEED, WRITER_ID));
  const payload = (buffer: Uint8Array): Uint8Array => buffer.subarray(STAMP_HEADER_BYTES, SECTOR_BYTES);
  assert.not.equal(payload(fills(SEED, WRITER_ID)), payload(fills(SEED ^ 1, WRITER_ID)));
  assert.not.equal(payload(fills(SEED, WRITER_ID)), payload(fills(SEED, WRITER_ID + 1)));
  // The hrtime clock changes only the time field; payloads stay the seed's.
  const a = stamped(0, 4, new StampGenerator(SEED, WRITER_ID));
  const b = stamped(0, 4, new StampGenerator(SEED, WRITER_ID));
  assert.equal(payload(a), payload(b));
});

test('the payload is not degenerate: sectors differ and bytes spread', () => {
  const buffer = stamped(0, 256);
  const histogram = new Uint32Array(256);
  for (let sector = 0; sector < 256; sector += 1) {
    for (let i = STAMP_HEADER_BYTES; i < SECTOR_BYTES; i += 1) histogram[buffer[sector * SECTOR_BYTES + i]!]! += 1;
  }
  const expected_per_value = (256 * (SECTOR_BYTES - STAMP_HEADER_BYTES)) / 256;
  for (const n of histogram) assert.ok(Math.abs(n - expected_per_value) < expected_per_value * 0.3, `byte histogram ${n}`);
  assert.not.equal(buffer.subarray(STAMP_HEADER_BYTES, SECTOR_BYTES), buffer.subarray(SECTOR_BYTES + STAMP_HEADER_BYTES, 2 * SECTOR_BYTES));
  // A rewrite of the same LBA carries new payload, not a replay of the last fill's.
  const generator = new StampGenerator(SEED, WRITER_ID);
  const first = stamped(0, 1, generator);
  const second = stamped(0, 1, generator);
  assert.not.equal(first.subarray(STAMP_HEADER_BYTES), second.subarray(STAMP_HEADER_BYTES));
});

test('bad arguments assert', () => {
  assert.throws(() => new StampGenerator(-1, 0), /seed/);
  assert.throws(() => new StampGenerator(1, 2 ** 32), /writer_id/);
  const generator = new StampGenerator(1, 1);
  assert.throws(() => generator.lastStamp(), /before any fill/);
  assert.throws(() => generator.fill(new Uint8Array(1000), 0, 2), /short of 2 sectors/);
  assert.throws(() => generator.fill(new Uint8Array(512), -1, 1), /first_lba/);
  assert.throws(() => checkSectors(new Uint8Array(512), 0.5, 1), /first_lba/);
});

/** Fills per attempt: 100 bytes per fill of garbage would be 10 MB, several scavenges. */
const GC_WATCH_FILLS = 100_000;
/** Heap noise allowed per attempt (the loop itself, counters); far below what per-fill garbage adds. */
const GC_WATCH_HEAP_GROWTH_BYTES_MAX = 64 * 1024;
/** A GC with no garbage of ours can still happen (leftovers of earlier tests); retry that many times. */
const GC_WATCH_ATTEMPTS_MAX = 3;

test('fill allocates nothing (counter clock): no GC and no heap growth over 100 000 fills', async () => {
  const generator = new StampGenerator(SEED, WRITER_ID, { clock: 'counter' });
  const buffer = new Uint8Array(8 * SECTOR_BYTES);
  for (let i = 0; i < 10_000; i += 1) generator.fill(buffer, i, 8); // warm up: optimized code allocates less
  const gc_starts: number[] = [];
  const observer = new PerformanceObserver((list) => { for (const e of list.getEntries()) gc_starts.push(e.startTime); });
  observer.observe({ entryTypes: ['gc'] });
  let verdict = '';
  let clean = false;
  try {
    for (let attempt = 1; attempt <= GC_WATCH_ATTEMPTS_MAX; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 20)); // let earlier GC entries arrive first
      const started = performance.now();
      const heap_before = process.memoryUsage().heapUsed;
      for (let i = 0; i < GC_WATCH_FILLS; i += 1) generator.fill(buffer, i * 8, 8);
      const heap_growth_bytes = process.memoryUsage().heapUsed - heap_before;
      const ended = performance.now();
      await new Promise((resolve) => setTimeout(resolve, 20));
      const gc_count = gc_starts.filter((t) => t >= started && t <= ended).length;
      verdict = `attempt ${attempt}: ${gc_count} GCs, heap grew ${heap_growth_bytes} bytes`;
      clean = gc_count === 0 && heap_growth_bytes < GC_WATCH_HEAP_GROWTH_BYTES_MAX;
      if (clean) break;
    }
  } finally {
    observer.disconnect();
  }
  console.log(`  ${verdict}`);
  assert.ok(clean, verdict);
});

test('fill and check of 64 MiB: throughput (printed, not asserted)', () => {
  const sector_count = (64 * MiB) / SECTOR_BYTES;
  const buffer = new Uint8Array(64 * MiB);
  const generator = new StampGenerator(SEED, WRITER_ID);
  const piece_sectors = MiB / SECTOR_BYTES;
  const fill_started = process.hrtime.bigint();
  for (let lba = 0; lba < sector_count; lba += piece_sectors) {
    generator.fill(buffer.subarray(lba * SECTOR_BYTES), lba, piece_sectors);
  }
  const fill_ms = Number(process.hrtime.bigint() - fill_started) / 1e6;
  const check_started = process.hrtime.bigint();
  const report = checkSectors(buffer, 0, sector_count, { max_sequence: 1, writer_id: WRITER_ID });
  const check_ms = Number(process.hrtime.bigint() - check_started) / 1e6;
  assert.ok(report.ok, formatReport(report));
  console.log(`  fill 64 MiB in ${fill_ms.toFixed(0)} ms (${(64 / (fill_ms / 1000)).toFixed(0)} MiB/s), `
    + `check in ${check_ms.toFixed(0)} ms (${(64 / (check_ms / 1000)).toFixed(0)} MiB/s)`);
});

test.run();

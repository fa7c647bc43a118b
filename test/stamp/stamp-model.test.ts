// Goal: SectorModel demands of an image exactly the pre-take state — per
// sector the last write acknowledged before the take, zeros where nothing
// was written — and names every other valid stamp (an older write, a
// post-take write, a stamp where zeros belong) instead of passing it.
// Method: a simulated volume (a buffer) takes overlapping seeded writes that
// the model records; at the take the model is frozen and the volume copied
// as the "image"; later writes go to the volume only. Then the image is
// damaged on purpose, sector by sector, and each report compared with the
// damage done.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Report, SECTOR_BYTES, SectorModel, StampGenerator, checkAgainst, formatReport,
} from '../lib/stamp';
import { testSeed } from '../lib/workers';

const SEED = testSeed('stamp model');
const WRITER_ID = 3;
const VOLUME_SECTORS = 256;

interface Scene {
  generator: StampGenerator;
  volume: Uint8Array;
  model: SectorModel;
}

function scene(): Scene {
  return {
    generator: new StampGenerator(SEED, WRITER_ID),
    volume: new Uint8Array(VOLUME_SECTORS * SECTOR_BYTES),
    model: new SectorModel(VOLUME_SECTORS),
  };
}

/** One acknowledged write: fill, land on the volume, record. */
function write(s: Scene, first_lba: number, sector_count: number): void {
  const piece = new Uint8Array(sector_count * SECTOR_BYTES);
  s.generator.fill(piece, first_lba, sector_count);
  s.volume.set(piece, first_lba * SECTOR_BYTES);
  s.model.record(first_lba, sector_count, s.generator.lastStamp());
}

function ranges(report: Report): [string, number, number][] {
  return report.ranges.map((r) => [r.kind, r.first_lba, r.sector_count]);
}

/** Volume written in three overlapping rounds up to LBA 199 (200-255 never written), then taken. */
function taken(): Scene & { image: Uint8Array; frozen: SectorModel; take_sequence: number; first_round: Uint8Array } {
  const s = scene();
  write(s, 0, 200);
  const first_round = s.volume.slice();
  write(s, 10, 20);
  write(s, 25, 10);
  const frozen = s.model.snapshot();
  const image = s.volume.slice();
  const take_sequence = s.generator.sequence;
  s.generator.nextGeneration();
  return { ...s, image, frozen, take_sequence, first_round };
}

test('the image holds exactly the pre-take state → ok', () => {
  const t = taken();
  const report = checkAgainst(t.image, 0, VOLUME_SECTORS, t.frozen, { max_sequence: t.take_sequence });
  assert.ok(report.ok, formatReport(report));
});

test('an older write where a newer one was acknowledged → mismatch at exactly those sectors', () => {
  const t = taken();
  const piece = t.first_round; // valid stamps, but LBAs 10-34 were overwritten since
  t.image.set(piece.subarray(12 * SECTOR_BYTES, 14 * SECTOR_BYTES), 12 * SECTOR_BYTES);
  t.image.set(piece.subarray(27 * SECTOR_BYTES, 28 * SECTOR_BYTES), 27 * SECTOR_BYTES);
  t.image.set(piece.subarray(100 * SECTOR_BYTES, 101 * SECTOR_BYTES), 100 * SECTOR_BYTES); // unchanged since: fine
  const report = checkAgainst(t.image, 0, VOLUME_SECTORS, t.frozen, { max_sequence: t.take_sequence });
  assert.equal(ranges(report), [['mismatch', 12, 2], ['mismatch', 27, 1]], formatReport(report));
  assert.match(formatReport(report), /LBA 12 mismatch: stamp seq 1 writer 3 time \d+, expected seq 1 writer 3 time \d+/);
  assert.not.equal(report.details[0]!.found!.time_ns, (t.frozen.entry(12) as { time_ns: bigint }).time_ns);
});

test('a post-take write in the image → leaked with the take limit, mismatch without', () => {
  const t = taken();
  write(t, 40, 8);
  t.image.set(t.volume.subarray(42 * SECTOR_BYTES, 44 * SECTOR_BYTES), 42 * SECTOR_BYTES);
  const limited = checkAgainst(t.image, 0, VOLUME_SECTORS, t.frozen, { max_sequence: t.take_sequence });
  assert.equal(ranges(limited), [['leaked', 42, 2]], formatReport(limited));
  const exact = checkAgainst(t.image, 0, VOLUME_SECTORS, t.frozen);
  assert.equal(ranges(exact), [['mismatch', 42, 2]]);
});

test('the frozen copy does not follow later writes; the live model does', () => {
  const t = taken();
  write(t, 0, 50);
  assert.ok(checkAgainst(t.image, 0, VOLUME_SECTORS, t.frozen).ok, 'the image still matches the take');
  assert.ok(checkAgainst(t.volume, 0, VOLUME_SECTORS, t.model).ok, 'the volume matches the live model');
  assert.equal(ranges(checkAgainst(t.volume, 0, VOLUME_SECTORS, t.frozen)), [['mismatch', 0, 50]]);
  assert.throws(() => t.frozen.record(0, 1, t.generator.lastStamp()), /frozen/);
});

test('zeros where nothing was written are fine; a stamp there is a mismatch; zeros where data was are unwritten', () => {
  const t = taken();
  const stray = new Uint8Array(SECTOR_BYTES);
  new StampGenerator(SEED, WRITER_ID).fill(stray, 210, 1);
  t.image.set(stray, 210 * SECTOR_BYTES);
  t.image.fill(0, 150 * SECTOR_BYTES, 153 * SECTOR_BYTES);
  const report = checkAgainst(t.image, 0, VOLUME_SECTORS, t.frozen);
  assert.equal(ranges(report), [['unwritten', 150, 3], ['mismatch', 210, 1]], formatReport(report));
  assert.match(formatReport(report), /LBA 210 mismatch: .*expected zeros \(never written\)/);
});

test('corruption and misaddressing are still classified as such under a model', () => {
  const t = taken();
  t.image[60 * SECTOR_BYTES + 99]! ^= 4;
  t.image.copyWithin(70 * SECTOR_BYTES, 71 * SECTOR_BYTES, 72 * SECTOR_BYTES);
  const report = checkAgainst(t.image, 0, VOLUME_SECTORS, t.frozen);
  assert.equal(ranges(report), [['corrupt', 60, 1], ['misaddressed', 70, 1]]);
});

test('uncertain sectors (in flight at the take) accept either version but still reject leaks and damage', () => {
  const t = taken();
  // A write filled before the take, acknowledged after: it may or may not be in the image.
  const in_flight = new Uint8Array(4 * SECTOR_BYTES);
  const before = new StampGenerator(SEED + 1, WRITER_ID);
  before.fill(in_flight, 80, 4);
  t.frozen.markUncertain(80, 4);
  t.image.set(in_flight.subarray(0, 2 * SECTOR_BYTES), 80 * SECTOR_BYTES); // landed half
  assert.ok(checkAgainst(t.image, 0, VOLUME_SECTORS, t.frozen, { max_sequence: t.take_sequence }).ok);
  write(t, 82, 1); // a post-take write
  t.image.set(t.volume.subarray(82 * SECTOR_BYTES, 83 * SECTOR_BYTES), 82 * SECTOR_BYTES);
  t.image[83 * SECTOR_BYTES + 300]! ^= 1;
  const report = checkAgainst(t.image, 0, VOLUME_SECTORS, t.frozen, { max_sequence: t.take_sequence });
  assert.equal(ranges(report), [['leaked', 82, 1], ['corrupt', 83, 1]], formatReport(report));
});

test('recordBuffer records what record does, and refuses a buffer that is not valid stamps', () => {
  const s = scene();
  write(s, 5, 30);
  const other = new SectorModel(VOLUME_SECTORS);
  other.recordBuffer(s.volume.subarray(5 * SECTOR_BYTES), 5, 30);
  for (const lba of [4, 5, 20, 34, 35]) assert.equal(other.entry(lba), s.model.entry(lba), `LBA ${lba}`);
  const damaged = s.volume.slice(5 * SECTOR_BYTES, 35 * SECTOR_BYTES);
  damaged[7]! ^= 1;
  assert.throws(() => other.recordBuffer(damaged, 5, 30), /not valid stamps/);
});

test("a model of unknown initial contents accepts any valid stamp where nothing was recorded", () => {
  const model = new SectorModel(64, { initial: 'unknown' });
  const image = new Uint8Array(64 * SECTOR_BYTES);
  new StampGenerator(SEED, 9).fill(image, 0, 64);
  assert.ok(checkAgainst(image, 0, 64, model).ok);
  assert.equal(model.entry(3), 'uncertain');
  image.copyWithin(0, SECTOR_BYTES, 2 * SECTOR_BYTES);
  assert.equal(ranges(checkAgainst(image, 0, 64, model)), [['misaddressed', 0, 1]]);
});

test('a partial range checks against the right model entries', () => {
  const t = taken();
  const piece = t.image.slice(20 * SECTOR_BYTES, 40 * SECTOR_BYTES);
  assert.ok(checkAgainst(piece, 20, 20, t.frozen).ok);
  assert.equal(checkAgainst(piece, 21, 19, t.frozen).counts.misaddressed, 19, 'an offset range is misaddressed');
  assert.throws(() => checkAgainst(t.image, 200, 100, t.frozen), /outside/);
});

test.run();

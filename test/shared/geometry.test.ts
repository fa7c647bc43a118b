// Goal: chunk and tracking-block sizes follow blksnap's rule (double the
// unit from the minimum shift while the count exceeds the maximum, up to
// the maximum shift; a chunk never below a page or the minimal I/O), and the
// last unit is short where the capacity does not divide. Parameters
// validate at the boundary. Method: a table of capacities from 1 sector to
// 256 TiB, odd sizes, minimal I/O of 512 B / 4 KiB / 64 KiB, and overrides.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chunkGeometry, trackingGeometry, unitSectors } from '../../src/shared/geometry';
import { DEFAULT_PARAMS, parseParamAssignment, validateParams } from '../../src/shared/params';
import { GiB, KiB, MiB, TiB } from '../../src/shared/units';

const sectors = (bytes: number): number => bytes / 512;
const P = DEFAULT_PARAMS;

const CHUNK_CASES: [string, number, number, Partial<typeof P>, number, number, number][] = [
  // label, capacity sectors, min io bytes, overrides, shift, count, last unit sectors
  ['1 sector', 1, 512, {}, 18, 1, 1],
  ['odd 1 000 001 sectors', 1_000_001, 512, {}, 18, 1954, 65],
  ['1 GiB', sectors(GiB), 512, {}, 18, 4096, 512],
  ['512 GiB exactly at the count limit', sectors(512 * GiB), 4096, {}, 18, 2_097_152, 512],
  ['512 GiB + 1 sector doubles the chunk', sectors(512 * GiB) + 1, 4096, {}, 19, 1_048_577, 1],
  ['1 TiB', sectors(TiB), 4096, {}, 19, 2_097_152, 1024],
  ['256 TiB hits the maximum shift', sectors(256 * TiB), 4096, {}, 26, 4_194_304, 131_072],
  ['minimal I/O 64 KiB beats a small minimum', sectors(GiB), 64 * KiB, { chunk_minimum_shift: 12 }, 16, 16_384, 128],
  ['minimal I/O 4 KiB, minimum 12', sectors(GiB), 4 * KiB, { chunk_minimum_shift: 12 }, 12, 262_144, 8],
  ['never below a page', sectors(MiB), 512, { chunk_minimum_shift: 9 }, 12, 256, 8],
  ['minimal I/O beats the maximum shift', sectors(GiB), 128 * MiB, {}, 27, 8, 262_144],
  ['count override', sectors(GiB), 512, { chunk_maximum_count: 100 }, 24, 64, 32_768],
];

for (const [label, capacity, min_io, overrides, shift, count, last] of CHUNK_CASES) {
  test(`chunk geometry: ${label}`, () => {
    const g = chunkGeometry(capacity, min_io, { ...P, ...overrides });
    assert.equal([g.shift, g.count, g.last_unit_sectors], [shift, count, last]);
    assert.is((g.count - 1) * g.unit_sectors + g.last_unit_sectors, capacity, 'units cover the capacity exactly');
    assert.is(unitSectors(g, g.count - 1), last);
    if (g.count > 1) assert.is(unitSectors(g, 0), g.unit_sectors);
  });
}

const TRACKING_CASES: [string, number, Partial<typeof P>, number, number, number][] = [
  ['1 sector', 1, {}, 16, 1, 1],
  ['1 GiB', sectors(GiB), {}, 16, 16_384, 128],
  ['odd 3 GiB + 7 sectors', sectors(3 * GiB) + 7, {}, 16, 49_153, 7],
  ['1 TiB', sectors(TiB), {}, 19, 2_097_152, 1024],
  ['256 TiB capped at 64 MiB blocks', sectors(256 * TiB), {}, 26, 4_194_304, 131_072],
  ['minimum shift override', sectors(GiB), { tracking_block_minimum_shift: 12 }, 12, 262_144, 8],
];

for (const [label, capacity, overrides, shift, count, last] of TRACKING_CASES) {
  test(`tracking geometry: ${label}`, () => {
    const g = trackingGeometry(capacity, { ...P, ...overrides });
    assert.equal([g.shift, g.count, g.last_unit_sectors], [shift, count, last]);
  });
}

test('bad capacities assert', () => {
  assert.throws(() => chunkGeometry(0, 512, P), /positive/);
  assert.throws(() => trackingGeometry(1.5, P), /positive/);
  assert.throws(() => chunkGeometry(8, 1000, P), /power of two/);
});

test('params: defaults, overrides, clear errors', () => {
  assert.equal(validateParams(undefined), { ...P });
  assert.is(validateParams({ chunk_minimum_shift: 12 }).chunk_minimum_shift, 12);
  assert.throws(() => validateParams({ chunk_minimum_shift: 3 }), /chunk_minimum_shift must be an integer in \[9, 30\]/);
  assert.throws(() => validateParams({ nonsense: 1 }), /unknown parameter 'nonsense'/);
  assert.throws(() => validateParams({ chunk_maximum_in_queue: '16' }), /got "16"/);
  assert.throws(() => validateParams([1]), /must be an object/);
  assert.throws(() => validateParams({ chunk_minimum_shift: 20, chunk_maximum_shift: 19 }), /exceeds/);
  assert.equal(parseParamAssignment('chunk_maximum_in_queue=32'), ['chunk_maximum_in_queue', 32]);
  assert.throws(() => parseParamAssignment('chunk_maximum_in_queue'), /NAME=INTEGER/);
});

test.run();

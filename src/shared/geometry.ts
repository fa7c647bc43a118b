// How a volume is cut into chunks (the copy-on-write unit) and tracking
// blocks (the CBT unit), computed as blksnap computes them:
//
//   shift = minimum shift
//   while count(capacity, shift) > maximum count and shift < maximum shift:
//     shift += 1
//
// A chunk is never smaller than a page (O_DIRECT and slab alignment) nor
// than the device's minimal I/O size; that rule beats the maximum shift,
// because a smaller chunk could not be read or written at all. The last
// chunk and the last tracking block of a volume may be short.

import { assert } from './assert';
import type { Params } from './params';
import { PAGE_SHIFT, SECTOR_SHIFT, isPowerOfTwo, pow2 } from './units';

export interface Geometry {
  /** log2 of the unit size in bytes. */
  shift: number;
  /** Size of every unit but maybe the last, in sectors. */
  unit_sectors: number;
  /** Number of units covering the capacity (the last may be short). */
  count: number;
  /** Size of the last unit, in sectors (equals unit_sectors when it divides). */
  last_unit_sectors: number;
}

/** Units of 2^shift bytes needed to cover capacity_sectors. */
export function countByShift(capacity_sectors: number, shift: number): number {
  return Math.ceil(capacity_sectors / pow2(shift - SECTOR_SHIFT));
}

function geometryOf(capacity_sectors: number, shift: number): Geometry {
  const unit_sectors = pow2(shift - SECTOR_SHIFT);
  const count = countByShift(capacity_sectors, shift);
  const last_unit_sectors = capacity_sectors - (count - 1) * unit_sectors;
  return { shift, unit_sectors, count, last_unit_sectors };
}

function assertCapacity(capacity_sectors: number): void {
  assert(Number.isSafeInteger(capacity_sectors) && capacity_sectors >= 1,
    `capacity must be a positive whole number of sectors, got ${capacity_sectors}`);
}

export function chunkGeometry(capacity_sectors: number, min_io_bytes: number, params: Params): Geometry {
  assertCapacity(capacity_sectors);
  assert(isPowerOfTwo(min_io_bytes), `minimal I/O size must be a power of two, got ${min_io_bytes}`);
  const min_io_shift = Math.log2(min_io_bytes);
  let shift = Math.max(params.chunk_minimum_shift, PAGE_SHIFT);
  while (shift < min_io_shift ||
    (countByShift(capacity_sectors, shift) > params.chunk_maximum_count && shift < params.chunk_maximum_shift)) {
    shift += 1;
  }
  return geometryOf(capacity_sectors, shift);
}

export function trackingGeometry(capacity_sectors: number, params: Params): Geometry {
  assertCapacity(capacity_sectors);
  let shift = params.tracking_block_minimum_shift;
  while (countByShift(capacity_sectors, shift) > params.tracking_block_maximum_count &&
    shift < params.tracking_block_maximum_shift) {
    shift += 1;
  }
  return geometryOf(capacity_sectors, shift);
}

/** Sectors in unit `index` of a geometry (the last one may be short). */
export function unitSectors(geometry: Geometry, index: number): number {
  return index === geometry.count - 1 ? geometry.last_unit_sectors : geometry.unit_sectors;
}

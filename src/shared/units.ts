// Units shared by every layer. Sizes on the wire and in the CBT API are in
// 512-byte sectors, as upstream blksnap; memory and files are in bytes.

export const SECTOR_SHIFT = 9;
export const SECTOR_BYTES = 1 << SECTOR_SHIFT;
/** The smallest chunk we ever use, and the O_DIRECT alignment we assume. */
export const PAGE_SHIFT = 12;
export const PAGE_BYTES = 1 << PAGE_SHIFT;
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

/** 2^shift as a plain number: shifts reach past 31, where `<<` would wrap. */
export function pow2(shift: number): number {
  return 2 ** shift;
}

export function sectorsToBytes(sectors: number): number {
  return sectors * SECTOR_BYTES;
}

export function isPowerOfTwo(value: number): boolean {
  // Math.log2 is exact on powers of two, also past 2^31 where bit tricks wrap.
  return Number.isSafeInteger(value) && value > 0 && Number.isInteger(Math.log2(value));
}

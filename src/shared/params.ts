// The tunable parameters of docs/design.md §7, with blksnap v7's defaults. Each is a
// daemon option (config key and `--param NAME=VALUE`). validateParams() is
// the boundary: it turns untrusted input into a Params or a clear error.

import { UblksnapError } from './errors';

export interface Params {
  /** Smallest CBT block: 2^16 = 64 KiB. A smaller block costs map memory. */
  tracking_block_minimum_shift: number;
  /** The CBT block doubles while the map would hold more blocks than this. */
  tracking_block_maximum_count: number;
  /** Largest CBT block: 2^26 = 64 MiB; past it the count may exceed the maximum. */
  tracking_block_maximum_shift: number;
  /** Smallest chunk: 2^18 = 256 KiB. Never below the page size or minimal I/O. */
  chunk_minimum_shift: number;
  /** The chunk doubles while the volume would hold more chunks than this. */
  chunk_maximum_count: number;
  /** Largest chunk: 2^26 = 64 MiB. */
  chunk_maximum_shift: number;
  /** A store-queue flush starts when more chunks than this wait in memory. */
  chunk_maximum_in_queue: number;
  /** Chunk buffers kept for reuse: the size of the buffer slab, in buffers. */
  free_diff_buffer_pool_size: number;
  /** Growth step of a diff-storage file, in sectors; grow when free ≤ half. */
  diff_storage_minimum: number;
}

export const DEFAULT_PARAMS: Readonly<Params> = Object.freeze({
  tracking_block_minimum_shift: 16,
  tracking_block_maximum_count: 2_097_152,
  tracking_block_maximum_shift: 26,
  chunk_minimum_shift: 18,
  chunk_maximum_count: 2_097_152,
  chunk_maximum_shift: 26,
  chunk_maximum_in_queue: 16,
  free_diff_buffer_pool_size: 128,
  diff_storage_minimum: 2_097_152,
});

export const PARAM_NAMES = Object.keys(DEFAULT_PARAMS) as (keyof Params)[];

interface Range { min: number; max: number; }

/** Shifts: 9 (a sector) .. 30 (1 GiB). Counts: at least 1, at most 2^31. */
const SHIFT_RANGE: Range = { min: 9, max: 30 };
const COUNT_RANGE: Range = { min: 1, max: 2 ** 31 };
const PARAM_RANGES: Readonly<Record<keyof Params, Range>> = {
  tracking_block_minimum_shift: SHIFT_RANGE,
  tracking_block_maximum_count: COUNT_RANGE,
  tracking_block_maximum_shift: SHIFT_RANGE,
  chunk_minimum_shift: SHIFT_RANGE,
  chunk_maximum_count: COUNT_RANGE,
  chunk_maximum_shift: SHIFT_RANGE,
  chunk_maximum_in_queue: { min: 1, max: 65_536 },
  free_diff_buffer_pool_size: { min: 4, max: 1_048_576 },
  diff_storage_minimum: { min: 8, max: 2 ** 40 },
};

/**
 * Validates a partial set of parameters (from a config file, flags or the
 * in-process API) and merges it over the defaults.
 */
export function validateParams(input: unknown): Params {
  if (input === undefined || input === null) return { ...DEFAULT_PARAMS };
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new UblksnapError('EINVAL', 'parameters must be an object of NAME: number');
  }
  const params: Params = { ...DEFAULT_PARAMS };
  for (const [name, value] of Object.entries(input as Record<string, unknown>)) {
    if (!(PARAM_NAMES as string[]).includes(name)) {
      throw new UblksnapError('EINVAL', `unknown parameter '${name}' (known: ${PARAM_NAMES.join(', ')})`);
    }
    const key = name as keyof Params;
    const range = PARAM_RANGES[key];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < range.min || value > range.max) {
      throw new UblksnapError('EINVAL', `parameter ${name} must be an integer in [${range.min}, ${range.max}], got ${JSON.stringify(value)}`);
    }
    params[key] = value;
  }
  if (params.tracking_block_minimum_shift > params.tracking_block_maximum_shift) {
    throw new UblksnapError('EINVAL', 'tracking_block_minimum_shift exceeds tracking_block_maximum_shift');
  }
  if (params.chunk_minimum_shift > params.chunk_maximum_shift) {
    throw new UblksnapError('EINVAL', 'chunk_minimum_shift exceeds chunk_maximum_shift');
  }
  return params;
}

/** Parses `NAME=VALUE` as given to `--param`. */
export function parseParamAssignment(text: string): [keyof Params, number] {
  const match = /^([a-z_]+)=(\d+)$/.exec(text);
  if (!match) throw new UblksnapError('EINVAL', `--param expects NAME=INTEGER, got '${text}'`);
  const name = match[1] as string;
  const value = Number(match[2]);
  validateParams({ [name]: value });
  return [name as keyof Params, value];
}

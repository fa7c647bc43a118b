// The store side of a diff area: writing a batch of IN_MEMORY chunks from
// their buffers to the difference storage, as few writes as their slots
// allow. Used by the store actor (actors/store.ts), which pops the batch
// from the store queue, sorts it and holds every chunk's lock meanwhile.
//
//   batch (sorted, locked)   3  4  5  7  9 20 21        first stores: one extent
//   slots                    0  1  2  3  4  5  6   ──►  one pwritev
//
//   batch                    0  4  5 21                 0 is new, the others re-stores
//   slots                    7  1  2  5            ──►  pwritev(7) pwritev(1-2) pwritev(5)
//
// A chunk that has no slot yet gets one from an extent allocated for all
// such chunks of the batch together, in batch order: a batch of first
// copies is one run of adjacent slots, whichever volume chunks they are. A
// chunk stored again after an image write keeps its slot (the storage holds
// each chunk once) and shares a write only where its slot is adjacent. One
// pwritev per run: one system call and one take of the storage file's lock
// for up to STORE_BATCH_CHUNKS_MAX chunks.

import { assert } from '../shared/assert';
import { ChunkState, NO_OFFSET, NO_SLOT } from '../shared/chunk-table';
import { ERRNO_BY_CODE } from '../shared/errors';
import { NO_ROOM } from '../shared/storage-counters';
import { SECTOR_BYTES } from '../shared/units';
import { slotSectors, type DiffArea } from './diff-area';
import { writevFully } from './volume-io';

/**
 * A store batch holds this many chunks at most, and so does a run of
 * adjacent slots written by one pwritev (far under the kernel's IOV_MAX of
 * 1024 iovecs). It bounds the chunk locks the store holds at once: 16 MiB
 * of 256 KiB chunks, a few milliseconds of writing on tmpfs, during which
 * an image read of one of them waits.
 */
export const STORE_BATCH_CHUNKS_MAX = 64;

/** What storeBatch did with a batch. */
export interface StoreBatchOutcome {
  stored: number;
  /** Vectored writes issued (one per run of adjacent slots). */
  writes: number;
  /** Chunks still IN_MEMORY, to be queued again: left[0..left_count). */
  left: Int32Array;
  left_count: number;
  /** Some chunk found no room in the storage. */
  no_room: boolean;
  /** 0, or the errno of the write that failed (its run's chunks are FAILED). */
  errno: number;
  /** The first chunk of the failed run, or -1. */
  error_chunk: number;
}

export function createStoreBatchOutcome(): StoreBatchOutcome {
  return { stored: 0, writes: 0, left: new Int32Array(STORE_BATCH_CHUNKS_MAX), left_count: 0, no_room: false, errno: 0, error_chunk: -1 };
}

const EIO = ERRNO_BY_CODE.EIO;
/** Fills a run's iovec array between writes (it must not keep chunk views alive). */
const EMPTY_VIEW = new Uint8Array(0);

// Scratch of the one batch a store thread handles at a time, allocated once per thread.
const kept_chunks = new Int32Array(STORE_BATCH_CHUNKS_MAX);
const run_views: Uint8Array[] = [];

/**
 * Under the locks of batch[0..count) (distinct chunks in ascending order):
 * writes every IN_MEMORY chunk of the batch to the diff storage, marks it
 * STORED and frees its buffer; chunks in any other state are left alone.
 *
 * When the storage has no room for all of them, the chunks that found none
 * stay IN_MEMORY and are listed in `outcome.left` for the caller to queue
 * again; a failed write fails its run's chunks (FAILED), and the chunks
 * after it stay IN_MEMORY, listed the same way.
 */
export function storeBatch(area: DiffArea, batch: Int32Array, count: number, allocate: (sectors: number) => number,
  outcome: StoreBatchOutcome): void {
  assert(count <= batch.length && count <= STORE_BATCH_CHUNKS_MAX && outcome.left.length >= count, `store batch of ${count} chunks`);
  outcome.stored = 0;
  outcome.writes = 0;
  outcome.left_count = 0;
  outcome.no_room = false;
  outcome.errno = 0;
  outcome.error_chunk = -1;
  // The chunks with data to store (the caller's batch stays as it is: it unlocks from it).
  let kept = 0;
  for (let i = 0; i < count; i += 1) {
    const chunk = batch[i]!;
    assert(i === 0 || chunk > batch[i - 1]!, 'a store batch is sorted and holds each chunk once');
    assert(area.table.isLocked(chunk), `store batch chunk ${chunk} is not locked`);
    if (area.table.state(chunk) === ChunkState.IN_MEMORY) kept_chunks[kept++] = chunk;
  }
  if (placeBatch(area, kept, allocate) < kept) outcome.no_room = true;
  let i = 0;
  while (i < kept) {
    // A chunk without a slot waits for growth.
    if (area.table.offset(kept_chunks[i]!) === NO_OFFSET) {
      outcome.left[outcome.left_count++] = kept_chunks[i]!;
      i += 1;
      continue;
    }
    const run_count = runLength(area, i, kept);
    const errno = writeRun(area, i, run_count);
    outcome.writes += 1;
    if (errno !== 0) {
      outcome.errno = errno;
      outcome.error_chunk = kept_chunks[i]!;
      for (let j = i + run_count; j < kept; j += 1) outcome.left[outcome.left_count++] = kept_chunks[j]!;
      return;
    }
    outcome.stored += run_count;
    i += run_count;
  }
}

/**
 * Gives every chunk of kept_chunks[0..count) that has no storage slot one:
 * one extent for all of them when there is room, else one slot at a time
 * until the room runs out. Returns how many of the chunks have a slot.
 */
function placeBatch(area: DiffArea, count: number, allocate: (sectors: number) => number): number {
  const table = area.table;
  let need_sectors = 0;
  for (let i = 0; i < count; i += 1) {
    if (table.offset(kept_chunks[i]!) === NO_OFFSET) need_sectors += slotSectors(area.chunkBytes(kept_chunks[i]!));
  }
  if (need_sectors === 0) return count;
  let extent = allocate(need_sectors);
  if (extent !== NO_ROOM) {
    for (let i = 0; i < count; i += 1) {
      const chunk = kept_chunks[i]!;
      if (table.offset(chunk) !== NO_OFFSET) continue;
      table.setOffset(chunk, extent);
      extent += slotSectors(area.chunkBytes(chunk));
    }
    return count;
  }
  let placed = 0;
  for (let i = 0; i < count; i += 1) {
    const chunk = kept_chunks[i]!;
    if (table.offset(chunk) === NO_OFFSET) {
      const offset = allocate(slotSectors(area.chunkBytes(chunk)));
      if (offset === NO_ROOM) break;
      table.setOffset(chunk, offset);
    }
    placed += 1;
  }
  return placed;
}

/** How many chunks from kept_chunks[first] on lie in adjacent slots, each slot filled whole but the run's last. */
function runLength(area: DiffArea, first: number, count: number): number {
  const table = area.table;
  let end_sectors = table.offset(kept_chunks[first]!) + slotSectors(area.chunkBytes(kept_chunks[first]!));
  let length = 1;
  while (first + length < count) {
    const previous = kept_chunks[first + length - 1]!;
    const next = kept_chunks[first + length]!;
    // A short chunk leaves a gap up to its slot's end: the run stops after it.
    if (area.chunkBytes(previous) !== slotSectors(area.chunkBytes(previous)) * SECTOR_BYTES) break;
    if (table.offset(next) !== end_sectors) break;
    end_sectors += slotSectors(area.chunkBytes(next));
    length += 1;
  }
  return length;
}

/** Writes kept_chunks[first..first+count) (adjacent slots) with one pwritev. Returns an errno. */
function writeRun(area: DiffArea, first: number, count: number): number {
  const table = area.table;
  run_views.length = count;
  let bytes = 0;
  for (let i = 0; i < count; i += 1) {
    const chunk = kept_chunks[first + i]!;
    const view = area.slab.view(table.slot(chunk));
    const chunk_bytes = area.chunkBytes(chunk);
    run_views[i] = chunk_bytes === view.length ? view : view.subarray(0, chunk_bytes);
    bytes += chunk_bytes;
  }
  try {
    writevFully(area.storage_fd, run_views, bytes, table.offset(kept_chunks[first]!) * SECTOR_BYTES);
  } catch (error) {
    for (let i = 0; i < count; i += 1) area.failChunk(kept_chunks[first + i]!);
    const errno = (error as { errno?: number }).errno;
    return typeof errno === 'number' ? Math.abs(errno) : EIO;
  } finally {
    run_views.fill(EMPTY_VIEW);
  }
  for (let i = 0; i < count; i += 1) {
    const chunk = kept_chunks[first + i]!;
    const slot = table.slot(chunk);
    table.setState(chunk, ChunkState.STORED, NO_SLOT);
    area.slab.release(slot);
  }
  return 0;
}

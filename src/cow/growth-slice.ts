// One slice of difference-storage growth: fallocate the sectors that follow
// the capacity and publish them, under the growth lock of the storage
// counters (shared/storage-counters.ts, GROW_LOCK). Two kinds of thread do
// it, with the same function:
//
//   the grow actor   slice after slice until the step the control plane
//                    asked for is reserved, in the background, at a high
//                    nice value (actors/grow.ts);
//   a writer         whose copy run found no room while a step was pending
//                    (cow/diff-area.ts): one slice, at the writer's own
//                    priority, then it allocates its run from it.
//
// Design notes
//
// Why a writer grows (issue 15): the grow actor runs at nice 10 so that
// growth does not slow the image reads a backup runs beside it. But once
// the writers have used the room reserved so far, growth is what they
// wait for, and a nice-10 thread on two cores the writers (and whatever
// else runs there) keep busy gets little of them:
// a 512 MiB step took 500-700 ms instead of 40-130, the writers that
// found no room copied chunk by chunk through the slab and the store queue
// (which then waited for the same growth), and the first-touch row of the
// engine bench fell to half of what it was when growth was done before the
// writes. A writer that grows one slice itself pays about 1 ms of fallocate
// for 4 MiB of room on tmpfs, less than the queue route costs for one run.
//
// On tmpfs a slice's pages are reserved here and made real memory later,
// ahead of the writers and outside the growth lock (actors/warm.ts).
//
// Nothing else changes: a slice never goes past REQUESTED (the step the
// control plane asked for, itself within the limit and the need), growth
// still reserves the blocks before any chunk is written there, and a
// fallocate that fails in a writer is left for the grow actor to meet and
// report (no_space, then the overflow that breaks the snapshot, never the
// volume) — the writer only takes the queue route for that run.

import { assert } from '../shared/assert';
import { fallocate } from '../native';
import type { StorageCounters } from '../shared/storage-counters';
import { SECTOR_BYTES } from '../shared/units';

/**
 * A slice is this many sectors (4 MiB), published as soon as it is
 * reserved. Small, because fallocate holds the file's inode lock for the
 * whole slice and every storage write to the same file needs that lock:
 * with 32 MiB slices on tmpfs, at the grow actor's nice value and on two
 * busy cores, a 256 KiB store write waited up to 200 ms behind one slice
 * (4 MiB: under 9 ms). A writer that grows takes one slice: about 1 ms of
 * fallocate on tmpfs, room for four runs of 1 MiB.
 */
export const GROW_SLICE_SECTORS = 8_192;

/** growSlice(): another thread holds the growth lock; nothing was done. */
export const GROWTH_BUSY = -1;

/**
 * Grows the storage by one slice of at most `slice_max_sectors`, never past
 * `target_sectors` nor REQUESTED. Returns the sectors grown, 0 when nothing
 * is pending, GROWTH_BUSY when another thread holds the lock. Throws
 * fallocate's error (ENOSPC, EIO, ...) with the lock released and the
 * capacity unchanged.
 */
export function growSlice(counters: StorageCounters, storage_fd: number, slice_max_sectors: number, target_sectors: number): number {
  assert(Number.isSafeInteger(slice_max_sectors) && slice_max_sectors > 0, `bad slice ${slice_max_sectors}`);
  if (!counters.tryLockGrowth()) return GROWTH_BUSY;
  try {
    // Read under the lock: only the holder moves CAPACITY.
    const capacity = counters.capacity_sectors;
    const ceiling = Math.min(target_sectors, counters.requested_sectors);
    if (capacity >= ceiling) return 0;
    const slice = Math.min(slice_max_sectors, ceiling - capacity);
    fallocate(storage_fd, capacity * SECTOR_BYTES, slice * SECTOR_BYTES, 0);
    counters.extend(capacity + slice);
    return slice;
  } finally {
    counters.unlockGrowth();
  }
}

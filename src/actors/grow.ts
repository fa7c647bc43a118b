// The grow actor: a piscina task that extends a difference-storage file
// with fallocate up to the size the control plane asked for (never past
// the limit; the control plane computed the target from the counters).
// fallocate reserves the blocks, so later chunk writes cannot fail with
// ENOSPC from the filesystem: a full filesystem shows up here, as a failed
// growth, and the snapshot overflows cleanly instead. It grows slice by
// slice (cow/growth-slice.ts); a writer that ran out of room may grow a
// slice in between, and the actor goes on from the capacity it left.

import { setThreadName } from '../native';
import { assert } from '../shared/assert';
import { GROW_SLICE_SECTORS, GROWTH_BUSY, growSlice } from '../cow/growth-slice';
import { ERRNO_BY_CODE } from '../shared/errors';
import { StorageCounters } from '../shared/storage-counters';
import type { GrowResult, GrowTask } from './messages';
import { BACKGROUND_NICE, FOREGROUND_NICE, setPriority } from './thread-priority';

/**
 * A step a caller waits for (take's first, engine/snapshot.ts) runs at
 * FOREGROUND_NICE: at BACKGROUND_NICE on two cores busy with 4 KiB random
 * writes, a 1 GiB step kept take waiting 278-298 ms median, 1.3-1.6 s at
 * most.
 */
/**
 * The actor waits this long at a time for a writer's slice (the writer
 * holds the growth lock for one fallocate of GROW_SLICE_SECTORS)…
 */
const GROWTH_LOCK_WAIT_SLICE_MS = 20;
/** …and fails the step (ETIMEDOUT, as a failed fallocate) if the lock stays held this long. */
const GROWTH_LOCK_WAIT_MS_MAX = 30_000;

// Piscina loads this file once, on the pool's one thread: the name is the thread's.
setThreadName('ublksnap-grow');

export default function grow(task: GrowTask): GrowResult {
  setPriority(task.waited_for === true ? FOREGROUND_NICE : BACKGROUND_NICE);
  const counters = new StorageCounters(task.storage_counters);
  // The control plane asks (StorageCounters.request) before it grows: slices never pass REQUESTED.
  assert(task.target_sectors <= counters.requested_sectors,
    `grow task for ${task.target_sectors} sectors, but only ${counters.requested_sectors} were requested`);
  let lock_wait_deadline_ms = 0;
  while (counters.capacity_sectors < task.target_sectors) {
    let grown: number;
    try {
      grown = growSlice(counters, task.storage_fd, GROW_SLICE_SECTORS, task.target_sectors);
    } catch (error) {
      const e = error as { code?: string; errno?: number; message?: string };
      counters.growthFailed();
      return { capacity_sectors: counters.capacity_sectors, error: { code: e.code ?? 'EIO', errno: Math.abs(e.errno ?? 5), message: e.message ?? String(error) } };
    }
    // Nothing pending below the target: the step was withdrawn (a failure elsewhere).
    if (grown === 0) break;
    if (grown !== GROWTH_BUSY) {
      lock_wait_deadline_ms = 0;
      continue;
    }
    // A writer is growing a slice: wait for it, then go on from where it left the capacity.
    if (lock_wait_deadline_ms === 0) lock_wait_deadline_ms = Date.now() + GROWTH_LOCK_WAIT_MS_MAX;
    if (Date.now() > lock_wait_deadline_ms) {
      counters.growthFailed();
      return {
        capacity_sectors: counters.capacity_sectors,
        error: { code: 'ETIMEDOUT', errno: ERRNO_BY_CODE.ETIMEDOUT, message: `the growth lock stayed held for ${GROWTH_LOCK_WAIT_MS_MAX} ms` },
      };
    }
    counters.waitForGrowthLock(GROWTH_LOCK_WAIT_SLICE_MS);
  }
  counters.growthDone();
  return { capacity_sectors: counters.capacity_sectors };
}

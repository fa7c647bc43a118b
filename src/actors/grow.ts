// The grow actor: a piscina task that extends a difference-storage file
// with fallocate up to the size the control plane asked for (never past
// the limit; the control plane computed the target from the counters).
// fallocate reserves the blocks, so later chunk writes cannot fail with
// ENOSPC from the filesystem: a full filesystem shows up here, as a failed
// growth, and the snapshot overflows cleanly instead.

import { fallocate, setThreadNice } from '../native';
import { StorageCounters } from '../shared/storage-counters';
import { SECTOR_BYTES } from '../shared/units';
import type { GrowResult, GrowTask } from './messages';

/**
 * fallocate works in slices of this many sectors (4 MiB), each published
 * as soon as it is reserved: a store task waiting for room resumes after
 * the first slice instead of after the whole step (1 GiB by default).
 * Small, because fallocate holds the file's inode lock for the whole
 * slice and every store write to the same file needs that lock: with 32 MiB
 * slices on tmpfs, at GROW_THREAD_NICE and on two busy cores, a 256 KiB
 * store write waited up to 200 ms behind one slice (4 MiB: under 9 ms),
 * and the writers waited for the buffers it held.
 */
const GROW_SLICE_SECTORS = 8_192;
/**
 * Growth is background work: on tmpfs fallocate allocates and accounts
 * every page, about as much CPU as the copies themselves, and at full
 * priority it slowed the image reads a backup starts right after take. At this nice value it takes what
 * the foreground leaves; a store task waiting for room idles its thread, so
 * growth is never starved for long. (The pool's one thread keeps it.)
 */
const GROW_THREAD_NICE = 10;

export default function grow(task: GrowTask): GrowResult {
  setThreadNice(GROW_THREAD_NICE);
  const counters = new StorageCounters(task.storage_counters);
  let capacity = counters.capacity_sectors;
  while (capacity < task.target_sectors) {
    const slice = Math.min(GROW_SLICE_SECTORS, task.target_sectors - capacity);
    try {
      fallocate(task.storage_fd, capacity * SECTOR_BYTES, slice * SECTOR_BYTES, 0);
    } catch (error) {
      const e = error as { code?: string; errno?: number; message?: string };
      counters.growthFailed();
      return { capacity_sectors: capacity, error: { code: e.code ?? 'EIO', errno: Math.abs(e.errno ?? 5), message: e.message ?? String(error) } };
    }
    capacity += slice;
    counters.extend(capacity);
  }
  counters.growthDone();
  return { capacity_sectors: capacity };
}

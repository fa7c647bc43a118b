// The grow actor: a piscina task that extends a difference-storage file
// with fallocate up to the size the control plane asked for (never past
// the limit; the control plane computed the target from the counters).
// fallocate reserves the blocks, so later chunk writes cannot fail with
// ENOSPC from the filesystem: a full filesystem shows up here, as a failed
// growth, and the snapshot overflows cleanly instead.

import { fallocate, fileInfo } from '../native';
import { StorageCounters } from '../shared/storage-counters';
import { SECTOR_BYTES } from '../shared/units';
import type { GrowResult, GrowTask } from './messages';

export default function grow(task: GrowTask): GrowResult {
  const counters = new StorageCounters(task.storage_counters);
  const from_sectors = counters.capacity_sectors;
  if (task.target_sectors <= from_sectors) {
    counters.growthDone();
    return { capacity_sectors: from_sectors };
  }
  try {
    fallocate(task.storage_fd, from_sectors * SECTOR_BYTES, (task.target_sectors - from_sectors) * SECTOR_BYTES, 0);
  } catch (error) {
    const e = error as { code?: string; errno?: number; message?: string };
    counters.growthFailed();
    return { capacity_sectors: from_sectors, error: { code: e.code ?? 'EIO', errno: Math.abs(e.errno ?? 5), message: e.message ?? String(error) } };
  }
  // Trust the file, not the request: it is what later writes will land in.
  const size_sectors = Math.floor(fileInfo(task.storage_fd).size_bytes / SECTOR_BYTES);
  counters.grown(Math.min(Math.max(size_sectors, task.target_sectors), counters.limit_sectors));
  return { capacity_sectors: counters.capacity_sectors };
}

// The store actor: a piscina task that flushes one diff area's store queue
// to the difference storage. A task carries only descriptors of shared
// memory (indices, never chunk data): it pops chunk numbers from the queue,
// and for each IN_MEMORY chunk allocates space (once per chunk: a chunk
// stored again after an image write reuses its place), writes the buffer,
// marks the chunk STORED and frees the buffer.
//
// It stops early when an allocation finds no room, puts that chunk back,
// and tells the control plane, which grows the storage (grow.ts) and runs
// the task again, or breaks the snapshot when the limit is reached.
//
// In 'drop' mode (a broken or destroyed snapshot) it only frees buffers.

import { NO_ROOM, StorageCounters } from '../shared/storage-counters';
import { DiffArea, type AreaNotifier } from '../cow/diff-area';
import type { StoreResult, StoreTask } from './messages';

/** Chunks one task handles at most before it returns (bounds a task's run time). */
const CHUNKS_PER_TASK_MAX = 4096;
/** While a growth step is under way, an allocation waits for room this long at most… */
const ROOM_WAIT_MS_MAX = 10_000;
/** …in sleeps of this length, woken early by every published slice. */
const ROOM_WAIT_SLICE_MS = 50;

/** Allocates, waiting for a growth step in progress; NO_ROOM when none is. */
function allocateWaiting(counters: StorageCounters, sectors: number): number {
  const deadline = Date.now() + ROOM_WAIT_MS_MAX;
  for (;;) {
    const generation = counters.generation;
    const offset = counters.allocate(sectors);
    if (offset !== NO_ROOM || !counters.growth_pending || Date.now() >= deadline) return offset;
    counters.waitForChange(generation, ROOM_WAIT_SLICE_MS);
  }
}

/** A store task reports through its result, not through notices. */
const silent: AreaNotifier = {
  flush() { /* the control plane re-checks the queue after each task */ },
  corrupted() { /* reported in the result */ },
  lowSpace() { /* a store task never clones; its low space is in the result */ },
};

export default function store(task: StoreTask): StoreResult {
  const area = new DiffArea(task.area, silent);
  const counters = new StorageCounters(task.area.storage_counters);
  const allocate = (sectors: number): number => allocateWaiting(counters, sectors);
  const result: StoreResult = { stored: 0, dropped: 0, no_room: false, low_space: false };
  area.clearFlushRequest();
  for (let n = 0; n < CHUNKS_PER_TASK_MAX; n += 1) {
    const chunk = area.nextQueued();
    if (chunk < 0) break;
    area.table.lock(chunk);
    try {
      if (task.mode === 'drop' || !area.healthy) {
        area.failChunk(chunk);
        result.dropped += 1;
        continue;
      }
      const outcome = area.storeChunk(chunk, allocate);
      if (outcome === 'stored') {
        result.stored += 1;
      } else if (outcome === 'no_room') {
        area.requeue(chunk);
        result.no_room = true;
        break;
      } else if (typeof outcome === 'number') {
        result.error = { errno: outcome, message: `writing chunk ${chunk} to the difference storage failed (errno ${outcome})` };
        break;
      }
    } finally {
      area.table.unlock(chunk);
    }
  }
  result.low_space = counters.claimLowSpace();
  return result;
}

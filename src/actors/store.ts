// The store actor: a piscina task that flushes one diff area's store queue
// to the difference storage. A task carries only descriptors of shared
// memory (indices, never chunk data). It pops the queue in batches of up
// to STORE_BATCH_CHUNKS_MAX chunk numbers, sorts a batch and locks its
// chunks in ascending order (as every multi-chunk locker does), and hands
// the batch to storeBatch (cow/store-batch.ts): one extent of storage for the chunks
// that have none yet, one pwritev per run of adjacent slots, every chunk
// STORED and its buffer freed. The task's own costs (the piscina message,
// the views of the area's shared memory) are paid once per task, which
// stores up to CHUNKS_PER_TASK_MAX chunks.
//
// It stops early when an allocation finds no room, puts the chunks that
// found none back, and tells the control plane, which grows the storage
// (grow.ts) and runs the task again, or breaks the snapshot when the limit
// is reached. A failed write fails that run's chunks, puts the rest of the
// batch back and reports the error (the control plane breaks the snapshot).
//
// In 'drop' mode (a broken or destroyed snapshot) it only frees buffers.

import { NO_ROOM, StorageCounters } from '../shared/storage-counters';
import { DiffArea, type AreaNotifier } from '../cow/diff-area';
import { createStoreBatchOutcome, STORE_BATCH_CHUNKS_MAX, storeBatch } from '../cow/store-batch';
import { setThreadName } from '../native';
import type { StoreResult, StoreTask } from './messages';

// Piscina loads this file once per pool thread: the name is the thread's.
setThreadName('ublksnap-store');

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

// The batch and its outcome, allocated once per store thread.
const batch = new Int32Array(STORE_BATCH_CHUNKS_MAX);
const outcome = createStoreBatchOutcome();

/** Pops up to STORE_BATCH_CHUNKS_MAX queued chunks into `batch`, sorted ascending, each once. */
function popBatch(area: DiffArea, limit: number): number {
  let count = 0;
  while (count < limit) {
    const chunk = area.nextQueued();
    if (chunk < 0) break;
    // Insertion sort: a batch is small, and mostly in order already.
    let i = count;
    while (i > 0 && batch[i - 1]! > chunk) {
      batch[i] = batch[i - 1]!;
      i -= 1;
    }
    // A chunk queued twice (stored, loaded again by an image write, queued
    // again) is stored once: storeBatch writes what its buffer holds now.
    if (i > 0 && batch[i - 1] === chunk) {
      for (let j = i; j < count; j += 1) batch[j] = batch[j + 1]!;
      continue;
    }
    batch[i] = chunk;
    count += 1;
  }
  return count;
}

export default function store(task: StoreTask): StoreResult {
  const area = new DiffArea(task.area, silent);
  const counters = new StorageCounters(task.area.storage_counters);
  const allocate = (sectors: number): number => allocateWaiting(counters, sectors);
  const result: StoreResult = { stored: 0, dropped: 0, writes: 0, no_room: false, low_space: false };
  area.clearFlushRequest();
  let handled = 0;
  while (handled < CHUNKS_PER_TASK_MAX) {
    const count = popBatch(area, Math.min(STORE_BATCH_CHUNKS_MAX, CHUNKS_PER_TASK_MAX - handled));
    if (count === 0) break;
    handled += count;
    for (let i = 0; i < count; i += 1) area.table.lock(batch[i]!);
    try {
      if (task.mode === 'drop' || !area.healthy) {
        for (let i = 0; i < count; i += 1) area.failChunk(batch[i]!);
        result.dropped += count;
        continue;
      }
      storeBatch(area, batch, count, allocate, outcome);
      result.stored += outcome.stored;
      result.writes += outcome.writes;
      // Back to the queue (still IN_MEMORY, still locked by us: no one can store them meanwhile).
      for (let i = 0; i < outcome.left_count; i += 1) area.requeue(outcome.left[i]!);
    } finally {
      for (let i = 0; i < count; i += 1) area.table.unlock(batch[i]!);
    }
    if (outcome.errno !== 0) {
      result.error = {
        errno: outcome.errno,
        message: `writing chunk ${outcome.error_chunk} to the difference storage failed (errno ${outcome.errno})`,
      };
      break;
    }
    if (outcome.no_room) {
      result.no_room = true;
      break;
    }
  }
  result.low_space = counters.claimLowSpace();
  return result;
}

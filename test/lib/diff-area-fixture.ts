// A taken snapshot's diff-area descriptor for tests that drive DiffArea,
// the store and growth in process: every shared buffer made fresh, the
// snapshot marked TAKEN, no cloning.

import type { DiffArea } from '../../src/cow/diff-area';
import type { VolumeReader } from '../../src/cow/volume-io';
import { alignedOffset } from '../../src/native';
import { createAreaControl } from '../../src/shared/area-control';
import { ChunkTable } from '../../src/shared/chunk-table';
import type { DiffAreaDescriptor } from '../../src/shared/descriptors';
import { Ring } from '../../src/shared/ring';
import { Slab } from '../../src/shared/slab';
import { createSnapshotControl, SnapshotStateCode, SnapshotWord } from '../../src/shared/snapshot-control';
import type { StorageCounters } from '../../src/shared/storage-counters';

/** A diff area under test, with what a check compares it against. */
export interface TestArea {
  area: DiffArea;
  descriptor: DiffAreaDescriptor;
  counters: StorageCounters;
  volume: VolumeReader;
  /** What the image must read (the volume at take, with any image writes applied). */
  model: Buffer;
  close(): void;
}

export interface TakenAreaOptions {
  area_id: number;
  chunk_shift: number;
  chunk_count: number;
  /** Slab buffers, also the store queue's threshold; the queue's capacity is the next power of two. */
  buffer_count: number;
  storage_fd: number;
  counters: StorageCounters;
}

export function takenAreaDescriptor(options: TakenAreaOptions): DiffAreaDescriptor {
  const chunk_bytes = 2 ** options.chunk_shift;
  let queue_capacity = 1;
  while (queue_capacity < options.buffer_count) queue_capacity *= 2;
  const descriptor: DiffAreaDescriptor = {
    area_id: options.area_id,
    volume_index: 0,
    snapshot_serial: 1,
    chunk_shift: options.chunk_shift,
    chunk_count: options.chunk_count,
    last_chunk_sectors: chunk_bytes / 512,
    table: ChunkTable.create(options.chunk_count).buffers,
    store_queue: Ring.create(queue_capacity, 1).buffer,
    area_control: createAreaControl(),
    slab: Slab.create(chunk_bytes, options.buffer_count, alignedOffset).buffers,
    storage_fd: options.storage_fd,
    storage_counters: options.counters.buffer,
    snapshot_control: createSnapshotControl().buffer as SharedArrayBuffer,
    chunk_maximum_in_queue: options.buffer_count,
    clone_chunks: false,
  };
  Atomics.store(new Int32Array(descriptor.snapshot_control), SnapshotWord.STATE, SnapshotStateCode.TAKEN);
  return descriptor;
}

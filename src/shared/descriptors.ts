// Descriptors of shared memory: what the control plane sends a thread once
// (at attach, snapshot add, queue open) so it can map the same
// SharedArrayBuffers. Plain structured-clonable data; per-request traffic
// never comes here (request-record.ts).

import type { ChunkTableBuffers } from './chunk-table';
import type { SlabBuffers } from './slab';

/** An attached volume, as every I/O thread needs it. */
export interface VolumeDescriptor {
  volume_index: number;
  name: string;
  /** A file descriptor of this process: valid in every thread. */
  fd: number;
  capacity_bytes: number;
  cbt: SharedArrayBuffer;
  /** volume-control.ts */
  control: SharedArrayBuffer;
  /** Fault injection for tests (fault-words.ts); undefined in production. */
  faults?: SharedArrayBuffer;
  /** A hold on volume writes for tests (write-hold.ts); undefined in production. */
  write_hold?: SharedArrayBuffer;
}

/** One volume's diff area in one snapshot. */
export interface DiffAreaDescriptor {
  area_id: number;
  volume_index: number;
  snapshot_serial: number;
  chunk_shift: number;
  chunk_count: number;
  last_chunk_sectors: number;
  table: ChunkTableBuffers;
  store_queue: SharedArrayBuffer;
  /** area-control.ts */
  area_control: SharedArrayBuffer;
  slab: SlabBuffers;
  storage_fd: number;
  storage_counters: SharedArrayBuffer;
  snapshot_control: SharedArrayBuffer;
  chunk_maximum_in_queue: number;
  /** Save chunks by cloning their extents into the storage (engine/cow-path.ts decided it at take). */
  clone_chunks: boolean;
}

/** A frontend queue: where completions go and where payloads live. */
export interface QueueDescriptor {
  queue_id: number;
  completions: SharedArrayBuffer;
  slab: SlabBuffers;
}

// What crosses postMessage between the control plane and the actors:
// descriptors of shared memory (sent once, at attach / add / queue open)
// and the rare notifications actors raise. Per-request traffic never comes
// here; it goes through the request rings (request-record.ts).

import type { ChunkTableBuffers } from '../shared/chunk-table';
import type { SlabBuffers } from '../shared/slab';

/** An attached volume, as every I/O actor needs it. */
export interface VolumeDescriptor {
  volume_index: number;
  name: string;
  /** A file descriptor of this process: valid in every thread. */
  fd: number;
  capacity_bytes: number;
  cbt: SharedArrayBuffer;
  control: SharedArrayBuffer;
  /** Fault injection for tests: see fault-injector.ts; undefined in production. */
  faults?: SharedArrayBuffer;
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
  /** Int32 [0] FLUSH_REQUESTED: set by the actor that asks for a flush. */
  area_control: SharedArrayBuffer;
  slab: SlabBuffers;
  storage_fd: number;
  storage_counters: SharedArrayBuffer;
  snapshot_control: SharedArrayBuffer;
  chunk_maximum_in_queue: number;
}

/** A frontend queue: where completions go and where payloads live. */
export interface QueueDescriptor {
  queue_id: number;
  completions: SharedArrayBuffer;
  slab: SlabBuffers;
}

/** Notifications from an I/O actor to the control plane. */
export type ActorNotice =
  | { type: 'flush'; area_id: number }
  | { type: 'corrupted'; area_id: number; errno: number; message: string };

export interface ActorStats {
  /** Requests completed. */
  served: number;
  /** Requests that met a frozen gate and waited for the thaw. */
  parked: number;
  /** Garbage collections in the actor since it started. */
  gc_count: number;
}

/** The comlink surface of the cow and image actors. */
export interface IoActorControl {
  attachVolume(volume: VolumeDescriptor): void;
  detachVolume(volume_index: number): void;
  addArea(area: DiffAreaDescriptor): void;
  forgetArea(area_id: number): void;
  attachQueue(queue: QueueDescriptor): void;
  detachQueue(queue_id: number): void;
  stats(): ActorStats;
  stop(): void;
}

/** Store pool task: flush one diff area's store queue (or drop it). */
export interface StoreTask {
  mode: 'store' | 'drop';
  area: DiffAreaDescriptor;
  volume_fd: number;
  /** Free space at or below which the task reports low space (sectors). */
  low_space_threshold_sectors: number;
}

export interface StoreResult {
  stored: number;
  dropped: number;
  /** An allocation found no room: the queue still holds chunks. */
  no_room: boolean;
  /** Free space fell to the threshold: grow now. */
  low_space: boolean;
  /** A write to the diff storage failed. */
  error?: { errno: number; message: string };
}

/** Grow task: fallocate the diff storage file up to target_sectors. */
export interface GrowTask {
  storage_fd: number;
  storage_counters: SharedArrayBuffer;
  target_sectors: number;
}

export interface GrowResult {
  capacity_sectors: number;
  error?: { code: string; errno: number; message: string };
}

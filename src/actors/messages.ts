// What crosses postMessage between the control plane and the actors:
// descriptors of shared memory (sent once, at attach / add / queue open)
// and the rare notifications actors raise. Per-request traffic never comes
// here; it goes through the request rings (request-record.ts).

import type { ChunkTableBuffers } from '../shared/chunk-table';
import type { SlabBuffers } from '../shared/slab';
import type { MetaContext } from '../nbd/meta-context';
import type { RequestLimits } from '../nbd/request';
import type { TransmissionCounters } from '../nbd/transmission';

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

/**
 * An NBD connection whose transmission phase an I/O actor serves
 * (nbd-session.ts). The main thread negotiated it; the actor reads the
 * requests from the socket and runs them in its own thread.
 */
export interface NbdSessionDescriptor {
  /** Also the id of the session's queue: unique among the engine's queues. */
  session_id: number;
  /** A duplicate of the connected socket's descriptor, for the actor alone: the session closes it. */
  fd: number;
  /** GO's replies: the session writes them before anything else. */
  replies: Uint8Array[];
  /** Bytes the negotiating thread received after GO, in order. */
  early: Uint8Array[];
  /** The server's connection id, for log lines. */
  connection_id: number;
  target_handle: number;
  limits: RequestLimits;
  contexts: MetaContext[];
  /** For change contexts: the frozen CBT map of the target's volume, as it was at GO. */
  change_map: { block_bytes: number; block_count: number; changes_number: number } | null;
  queue_depth: number;
  max_io_bytes: number;
  zero_segment_bytes: number;
  write_backlog_bytes_max: number;
}

export type ActorLogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Notifications from an I/O actor to the control plane. */
export type ActorNotice =
  | { type: 'flush'; area_id: number }
  | { type: 'corrupted'; area_id: number; errno: number; message: string }
  /** A log line from an actor (hosted NBD sessions): written by the engine's logger. */
  | { type: 'log'; level: ActorLogLevel; fields: Record<string, string | number | boolean | string[]>; message: string };

export interface ActorStats {
  /** Requests completed. */
  served: number;
  /** Requests that met a frozen gate and waited for the thaw. */
  parked: number;
  /** Garbage collections in the actor since it started. */
  gc_count: number;
  /** NBD sessions the actor serves now. */
  sessions: number;
}

/** The comlink surface of the cow and image actors. */
export interface IoActorControl {
  attachVolume(volume: VolumeDescriptor): void;
  detachVolume(volume_index: number): void;
  addArea(area: DiffAreaDescriptor): void;
  forgetArea(area_id: number): void;
  attachQueue(queue: QueueDescriptor): void;
  detachQueue(queue_id: number): void;
  /** Serves an NBD transmission until its connection ends; resolves with its counters then. */
  hostNbdSession(session: NbdSessionDescriptor): Promise<TransmissionCounters>;
  /** Server stop: answer what is in flight, then end the connection. */
  drainNbdSession(session_id: number): void;
  /** Hard disconnect (a drain that took too long). */
  closeNbdSession(session_id: number): void;
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

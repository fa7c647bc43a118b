// What crosses postMessage between the control plane and the actors:
// descriptors of shared memory (sent once, at attach / add / queue open)
// and the rare notifications actors raise. Per-request traffic never comes
// here; it goes through the request rings (request-record.ts).

import type { DiffAreaDescriptor, QueueDescriptor, VolumeDescriptor } from '../shared/descriptors';
import type { ActorLogLevel, LogFields, SessionCounters, SessionDescriptor } from './session-contract';

export type { ActorLogLevel, LogFields };

export type { DiffAreaDescriptor, QueueDescriptor, VolumeDescriptor };


/** Notifications from an I/O actor to the control plane. */
export type ActorNotice =
  | { type: 'flush'; area_id: number }
  | { type: 'corrupted'; area_id: number; errno: number; message: string }
  /** A clone claimed the next growth step (diff-area.ts): the control plane starts it. */
  | { type: 'low_space'; area_id: number }
  /** A log line from an actor (hosted sessions): written by the engine's logger. */
  | { type: 'log'; level: ActorLogLevel; fields: LogFields; message: string };

export interface ActorStats {
  /** Requests completed. */
  served: number;
  /** Requests that met a frozen gate and waited for the thaw. */
  parked: number;
  /** Garbage collections in the actor since it started. */
  gc_count: number;
  /** Frontend sessions the actor serves now. */
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
  /** Runs a frontend session (session-contract.ts) until it ends; resolves with its counters then. */
  hostSession(session: SessionDescriptor): Promise<SessionCounters>;
  /** Frontend stop: answer what is in flight, then end the session. */
  drainSession(session_id: number): void;
  /** End the session now (a drain that took too long). */
  closeSession(session_id: number): void;
  stats(): ActorStats;
  stop(): void;
}

/** Store pool task: flush one diff area's store queue (or drop it). */
export interface StoreTask {
  mode: 'store' | 'drop';
  area: DiffAreaDescriptor;
  volume_fd: number;
}

export interface StoreResult {
  stored: number;
  dropped: number;
  /** Vectored writes to the diff storage: one per run of adjacent slots (stored ÷ writes = chunks per write). */
  writes: number;
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
  /** A caller waits for this step (take's first): it runs at normal priority, not in the background (actors/grow.ts). */
  waited_for?: boolean;
}

export interface GrowResult {
  capacity_sectors: number;
  error?: { code: string; errno: number; message: string };
}

/** Warm task: make [from_sectors, to_sectors) of a storage on tmpfs real memory (actors/warm.ts). */
export interface WarmTask {
  storage_fd: number;
  storage_counters: SharedArrayBuffer;
  /** The snapshot's control words: warming stops once it is destroyed or broken. */
  snapshot_control: SharedArrayBuffer;
  from_sectors: number;
  to_sectors: number;
  /** Follows a step nobody waits for: runs at the grow actor's nice value. */
  background: boolean;
  /**
   * A piece warmed faster than this (ns per MiB) was memory the host
   * already backs: the next pieces are sampled, not warmed (actors/warm.ts).
   * 0 warms every piece; Infinity takes every piece for backed.
   */
  backed_ns_per_mib: number;
}

export interface WarmResult {
  /** Warming reached here (to_sectors, or where it stopped). */
  warmed_sectors: number;
  /** Of those, stepped over because the memory around them was backed already. */
  skipped_sectors: number;
  /** The kernel cannot warm (no MADV_POPULATE_WRITE) or a call failed: warm no more. */
  error?: { code: string; message: string };
}

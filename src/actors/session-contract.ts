// How a frontend runs its per-connection or per-queue loop inside an I/O
// actor, without the actor or the engine knowing which frontend it is.
//
//   frontend (main thread)                      I/O actor (worker thread)
//   ──────────────────────                      ─────────────────────────
//   engine.hostSession(descriptor) ──comlink──► session-host.ts:
//                                                 require(descriptor.module)
//                                                 queue = an ActorLocalQueue
//                                                 module.runSession(context, payload)
//   hosted.finished ◄──────────────────────────── counters, when the session ends
//
// A session module is a compiled JS file of the frontend that exports
// `runSession`. Its payload is the frontend's own structured-clonable data
// (a socket's descriptor and negotiated options, a kernel device and queue
// id); its counters are an opaque record the engine only passes on.
//
// Threads and waits: a session runs on the actor's event loop, beside the
// actor's request ring and every other session it hosts. It must never block
// the thread for long; the one blocking wait it may meet is inside the
// copy-on-write core (a chunk lock held by another actor, or a free chunk
// buffer: DiffArea, bounded by BUFFER_WAIT_TIMEOUT_MS), and while it waits
// every other session of this actor waits too.

import type { VolumeDescriptor } from '../shared/descriptors';
import type { IoQueue } from '../shared/io-queue';

export type ActorLogLevel = 'debug' | 'info' | 'warn' | 'error';
/** Only plain values cross to the main thread (an Error does not clone faithfully). */
export type LogFields = Record<string, string | number | boolean | string[]>;

/** What the engine sends an actor to start a session. */
export interface SessionDescriptor<Payload = unknown> {
  /** Also the id of the session's queue: unique among the engine's queues. */
  session_id: number;
  /** Absolute path of the frontend's compiled session module (exports runSession). */
  module: string;
  /** The frontend's short name, for status and logs. */
  frontend: string;
  /** The export this session serves (request-record.ts packHandle). */
  target_handle: number;
  /** Tags of the session's queue and the bytes of each tag's slot. */
  queue_depth: number;
  max_io_bytes: number;
  payload: Payload;
}

/** Counters a session reports when it ends: the frontend defines the keys. */
export type SessionCounters = Record<string, number>;

export interface SessionLogger {
  log(level: ActorLogLevel, fields: LogFields, message: string): void;
}

/** What the actor gives a session. */
export interface SessionContext {
  readonly session_id: number;
  readonly target_handle: number;
  /** The session's queue, served in this thread (no ring, no wake-up). */
  readonly queue: IoQueue;
  /** True while the target still exists (an image dies at destroy, a volume at detach). */
  isLive(): boolean;
  /** Copies the frozen CBT map of the target's volume from first_block; returns bytes copied. */
  readSnapshotCbt(first_block: number, target: Uint8Array): number;
  /**
   * The target volume's descriptor and shared words, for a session whose
   * native code serves plain reads and writes itself under the volume's
   * write gate (DirectVolumeAccess); null for an image, or a volume gone.
   */
  directVolume(): DirectVolumeAccess | null;
  readonly logger: SessionLogger;
}

/**
 * What native code needs to serve a live volume's reads, and its writes
 * while no snapshot needs copy-before-write, exactly as the actor's handler
 * would (cow/volume-requests.ts): the descriptor, the control block whose
 * write gate it enters, the CBT map it marks, and the test-only write hold
 * it must leave to the actor. Valid while the session runs; the control
 * block's DETACHED word says when to stop.
 */
export type DirectVolumeAccess = Pick<VolumeDescriptor, 'fd' | 'capacity_bytes' | 'control' | 'cbt' | 'write_hold'>;

/** A session the module started. */
export interface RunningSession {
  /** Resolves with the session's counters once it ended (its queue idle). */
  readonly finished: Promise<SessionCounters>;
  /** Answer what is in flight, then end. */
  drain(): void;
  /** End now. */
  close(): void;
}

/** The one export of a session module. */
export interface SessionModule<Payload = unknown> {
  runSession(context: SessionContext, payload: Payload): RunningSession;
}

// The engine's public surface: what the daemon, the frontends, the tests
// and the benchmark may use. The implementation is engine.ts. Frontends
// import this file and src/shared only.
//
//   control:  attach / detach volumes, snapshots (create, add, take,
//             destroy, collect, info), events, CBT (info, map, markdirty)
//   I/O:      IoQueue — per-queue tags, one request-buffer slot per tag,
//             completions by tag; no allocation per request.
//
// Sizes: bytes in the I/O interface (offset_bytes, length_bytes), sectors
// in the CBT interface, as upstream blksnap.

import type { CbtInfo, CbtState } from '../shared/cbt-map';
import type { Params } from '../shared/params';
import type { StorageSnapshot } from '../shared/storage-counters';
import type { SessionCounters, SessionDescriptor } from '../actors/session-contract';
import type { IoQueue } from '../shared/io-queue';

export { IoFlags, IoOp } from '../shared/request-record';
export type { IoQueue } from '../shared/io-queue';
export type { CbtInfo, CbtState } from '../shared/cbt-map';
export type {
  ActorLogLevel, DirectVolumeAccess, LogFields, RunningSession, SessionContext, SessionCounters, SessionDescriptor, SessionLogger, SessionModule,
} from '../actors/session-contract';


export interface EngineOptions {
  params?: Partial<Params>;
  /** Long-lived workers serving volume requests (copy-on-write). Default 2. */
  cow_workers?: number;
  /** Long-lived workers serving snapshot-image requests. Default 1. */
  image_workers?: number;
  /** piscina threads flushing store queues. Default 1. */
  store_threads?: number;
  /** A pino logger; default: silent. */
  logger?: import('pino').Logger;
  /**
   * Test hooks (Engine.injectReadFault, Engine.holdNextWrite): volume reads
   * of a byte range fail with EIO (shared/fault-words.ts); a volume write
   * waits inside the write gate until released (shared/write-hold.ts).
   * Off: the I/O path never looks at either.
   */
  fault_injection?: boolean;
  /**
   * Hold a write lease on each regular-file volume and treat another
   * process opening it for writing as a foreign writer: its snapshot
   * breaks (EIO) and its CBT starts a new generation (writer-watch.ts).
   * For a daemon, whose main loop answers the lease break; off by default
   * because a synchronous open of a watched file on the engine's own main
   * thread would wait for the kernel's lease-break-time.
   */
  watch_other_writers?: boolean;
}

export interface VolumeInfo {
  /** Stable while attached: used in IoQueue targets. */
  volume_index: number;
  name: string;
  path: string;
  kind: 'file' | 'block';
  capacity_sectors: number;
  logical_block_bytes: number;
  /** The snapshot that holds this volume, if any. */
  snapshot_id: string | null;
}

export type SnapshotState = 'created' | 'taken' | 'corrupted' | 'destroyed';

/** Quiesces the devices of a snapshot's volumes for take; resolves to the function that undoes it (EngineControl.snapshotTake). */
export type TakeQuiesce = () => Promise<() => Promise<void>>;

export interface SnapshotInfo {
  id: string;
  state: SnapshotState;
  /** 0, or the errno that corrupted the snapshot (28 = ENOSPC, 5 = EIO). */
  error_code: number;
  volumes: string[];
  /** created: the path did not exist and snapshot_create made it (a file, or a directory for a path ending in '/'). */
  storage: StorageSnapshot & {
    kind: 'file' | 'tmpfile' | 'block'; path: string; created: boolean;
    /** On tmpfs: the sectors below this were made real memory ahead of the writers (0 elsewhere). */
    warmed_sectors: number;
    /** Of those, stepped over: the memory around them was backed already, and warming it pays nothing. */
    warm_skipped_sectors: number;
  };
  chunks: {
    volume: string; chunk_bytes: number; chunk_count: number; in_memory: number; stored: number; failed: number; queued: number;
    /** How copy-before-write saves this volume's chunks: cloning extents, or reading and writing bytes (why, then). */
    cbw: 'reflink' | 'copy'; cbw_reason: string;
    /** Chunks saved before a write so far, by clone and by copy. */
    cloned: number; copied: number;
    /** Of `cloned`, the chunks cloned ahead of a sequential writer, before a write reached them. */
    cloned_ahead: number;
  }[];
}

export type SnapshotEventCode = 'corrupted' | 'no_space' | 'low_space' | 'grown' | 'destroyed';

export interface SnapshotEvent {
  code: SnapshotEventCode;
  /** Milliseconds since the epoch. */
  time: number;
  /** corrupted: the volume and errno; no_space: sectors asked for; grown: new capacity. */
  volume?: string;
  errno?: number;
  requested_sectors?: number;
  capacity_sectors?: number;
}

export interface SnapshotCreateOptions {
  /** Volume paths or names to add now (more may be added until take). */
  volumes: string[];
  /** A regular file (grown with fallocate), a directory (O_TMPFILE) or a block device. */
  storage: string;
  /** The most the diff storage may grow to, in bytes (block device: its size). */
  limit_bytes: number;
}

/**
 * An export resolved once (when a frontend binds a connection or a device) to a handle that
 * requests carry as a plain number.
 */
export interface ExportTarget {
  handle: number;
  kind: 'volume' | 'image';
  volume_name: string;
  snapshot_id: string | null;
  size_bytes: number;
  writable: boolean;
  logical_block_bytes: number;
}

/** A frontend session an I/O actor serves (EngineControl.hostSession). */
export interface HostedSession {
  readonly session_id: number;
  /** Resolves with the session's counters (the frontend's own keys) once it ended. */
  readonly finished: Promise<SessionCounters>;
  /** Answer what is in flight, then end the connection. */
  drain(): void;
  /** Hard disconnect. */
  close(): void;
}

export interface EngineStatus {
  volumes: (VolumeInfo & { cbt: CbtInfo })[];
  snapshots: SnapshotInfo[];
  queues: { queue_id: number; depth: number; in_flight: number }[];
  /** Frontend sessions served inside the actors (hostSession). */
  sessions: { session_id: number; frontend: string; depth: number; actor: 'cow' | 'image' }[];
  workers: { cow: number; image: number; store: number };
}


export interface CbtRange {
  /** First sector. */
  sector: number;
  /** Sectors. */
  count: number;
}

/** What a volume's snapshot state looks like to `snapshot_info -d`. */
export interface VolumeSnapshotInfo {
  snapshot_id: string | null;
  /** 0, or the errno that broke the snapshot holding this volume. */
  error_code: number;
  /** The image's export name (`NAME@ID`) while a taken snapshot holds the volume. */
  image_export: string | null;
}

/** A volume's change tracking as a daemon saves it across a restart (exportCbt). */
export interface SavedCbt {
  state: CbtState;
  /** Why its generation began. */
  generation_reason: string;
}

export interface AttachOptions {
  /** Default: the file name of the path, made safe. */
  name?: string;
  /**
   * Continue this saved change tracking. Used when it fits the volume as it
   * is now (same size and tracking geometry, consistent); otherwise a new
   * generation starts and cbtInfo's generation_reason says what did not fit.
   * The caller vouches that nothing wrote the volume since it was saved.
   */
  cbt?: SavedCbt;
  /** Why a new generation begins when no cbt is restored (default 'first attach'). */
  new_generation_reason?: string;
}

/**
 * The control interface of the engine. Every method validates its
 * arguments and throws UblksnapError (errors.ts) with a code:
 * ESRCH unknown volume/snapshot, EALREADY added/taken twice, EBUSY in
 * another snapshot or open elsewhere, EINVAL nonsense, ENOENT missing path.
 * `volume` arguments accept the attached path or the volume name.
 */
export interface EngineControl {
  attach(path: string, options?: AttachOptions): Promise<VolumeInfo>;
  /** Refused (EBUSY) while in a snapshot unless force, which destroys that snapshot. */
  detach(volume: string, options?: { force?: boolean }): Promise<void>;
  volumes(): VolumeInfo[];
  volume(volume: string): VolumeInfo;

  cbtInfo(volume: string): CbtInfo;
  /** Copies the snapshot copy of the map from first_block into target; returns bytes copied. */
  readCbtMap(volume: string, first_block: number, target: Uint8Array): number;
  markDirty(volume: string, ranges: CbtRange[]): void;
  /**
   * A copy of the volume's change tracking, to restore at a later attach.
   * Take it only when nothing writes the volume (frontends stopped), or a
   * completed write may be missing from it.
   */
  exportCbt(volume: string): SavedCbt;

  snapshotCreate(options: SnapshotCreateOptions): Promise<string>;
  snapshotAdd(id: string, volume: string): Promise<void>;
  /**
   * Takes the snapshot: every volume at once (see docs/design.md, "Take").
   * `quiesce`, when given, runs once the snapshot is ready to be taken (its
   * diff areas built, the storage's first growth step reserved), right
   * before the volumes are written back and frozen: the daemon freezes the
   * filesystems mounted on the frontends' devices there. The function it
   * returns runs right after the volumes thaw, whether the take succeeded
   * or not.
   */
  snapshotTake(id: string, quiesce?: TakeQuiesce): Promise<void>;
  snapshotDestroy(id: string): Promise<void>;
  snapshotCollect(): string[];
  snapshotInfo(id: string): SnapshotInfo;
  volumeSnapshotInfo(volume: string): VolumeSnapshotInfo;
  /** The next event of the snapshot, or null after timeout_ms. A destroyed snapshot yields 'destroyed' once, then ESRCH. */
  waitEvent(id: string, timeout_ms: number): Promise<SnapshotEvent | null>;

  /** 'NAME' (the live volume) or 'NAME@ID' (the image of snapshot ID, from take to destroy). */
  resolveExport(name: string): ExportTarget;
  /** Every export that resolves right now. */
  exportNames(): string[];
  /** True while the target behind handle still exists (an image dies at destroy). */
  isLive(handle: number): boolean;
  /** Opens a frontend queue; resolves once every actor can see it. */
  openQueue(options: { depth: number; max_io_bytes: number }): Promise<IoQueue>;
  /**
   * Runs a frontend's session module (actors/session-contract.ts) inside
   * the I/O actor that serves its export's kind, the least busy of them.
   * Its tags count against the open-tag limit like a queue's. EINVAL for a
   * bad queue shape, ESRCH when the export is gone, EBUSY when the tags
   * would pass the limit.
   */
  hostSession(session: Omit<SessionDescriptor, 'session_id'>): HostedSession;

  status(): EngineStatus;
  /** Destroys every snapshot, flushes, joins every worker, closes every file. */
  stop(): Promise<void>;
}

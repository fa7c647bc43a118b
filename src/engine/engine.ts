// The engine: the in-process heart of ublksnap that every frontend drives.
// The control plane lives here, on the main thread: the registry of
// volumes and snapshots, validation of every control call, events, and the
// frontend queues. Data moves in the actors (actor-pools.ts).
//
//   Engine ── volumes (volume.ts) ── tracker (CBT)
//          ── snapshots (snapshot.ts) ── diff storage, diff areas, events
//          ── queues (io-queue.ts) ──► request rings ──► cow / image actors
//          ── actor pools: cow-read, image-io, store (piscina), grow (piscina)

import { fstatSync, statSync, type Stats } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import { assert } from '../shared/assert';
import type { CbtInfo } from '../shared/cbt-map';
import { ERRNO_BY_CODE, UblksnapError } from '../shared/errors';
import { validateParams, type Params } from '../shared/params';
import { handleIsImage, handleVolume, packHandle, VOLUME_INDEX_LIMIT } from '../shared/request-record';
import { PAGE_BYTES } from '../shared/units';
import { FROZEN, markDetached, targetIsLive, WRITES_IN_FLIGHT } from '../shared/volume-control';
import { armWriteHold, releaseWriteHold, waitWriteHeld } from '../shared/write-hold';
import type { ActorNotice, ActorStats } from '../actors/messages';
import type { SessionCounters, SessionDescriptor } from '../actors/session-contract';
import { OPEN_TAGS_MAX, QUEUE_DEPTH_MAX, QUEUE_IO_BYTES_MAX } from '../shared/limits';
import { ActorPools } from './actor-pools';
import type {
  AttachOptions, CbtRange, EngineControl, EngineOptions, EngineStatus, ExportTarget, HostedSession, IoQueue, SnapshotCreateOptions,
  SavedCbt, SnapshotEvent, SnapshotInfo, TakeQuiesce, VolumeInfo, VolumeSnapshotInfo,
} from './api';
import { DiffStorage } from './diff-storage';
import { armFault, disarmFault } from '../shared/fault-words';
import { EngineIoQueue } from './io-queue';
import { Snapshot } from './snapshot';
import type { TrackerStart } from './tracker';
import { defaultVolumeName, validateVolumeName, VolumeRecord } from './volume';
import { WriterWatch, type WatchNotice } from './writer-watch';

/**
 * At least two of each, even on two cores: a frontend session (a network
 * connection) is served whole by one actor (actors/session-host.ts), so a
 * client with several connections (a parallel copy opens four) uses a second core only with a second
 * actor (measured on two cores: nbdcopy of a volume 1450 → 1750 MiB/s with
 * a second cow actor, bench/README.md). Requests from the in-process API
 * share one ring among the actors of a kind.
 */
const DEFAULT_COW_WORKERS = Math.max(2, Math.min(4, Math.floor(availableParallelism() / 2)));
const DEFAULT_IMAGE_WORKERS = 2;
const DEFAULT_STORE_THREADS = 1;
const WORKERS_MAX = 16;
/** Chunks left in a store queue are flushed after this much quiet. */
export const STORE_IDLE_FLUSH_MS = 200;
/** waitEvent never waits longer than this (clients long-poll again). */
export const EVENT_WAIT_MAX_MS = 3_600_000;
/** Destroyed snapshots keep their last events for late waiters, this many at most. */
const RETIRED_SNAPSHOTS_MAX = 256;
/** A generation reason is a phrase for a log line and a `cbtinfo` field, not a document. */
export const GENERATION_REASON_LENGTH_MAX = 512;
const SNAPSHOT_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The tracker's start from attach's options, checked at this boundary. */
function trackerStart(options: AttachOptions): TrackerStart {
  const start: TrackerStart = {};
  const reason = (value: unknown, what: string): string => {
    if (typeof value !== 'string' || value.length === 0 || value.length > GENERATION_REASON_LENGTH_MAX) {
      throw new UblksnapError('EINVAL', `${what} must be a string of 1-${GENERATION_REASON_LENGTH_MAX} characters`);
    }
    return value;
  };
  if (options.new_generation_reason !== undefined) start.new_generation_reason = reason(options.new_generation_reason, 'new_generation_reason');
  if (options.cbt !== undefined) {
    const { state, generation_reason } = options.cbt;
    if (typeof state !== 'object' || state === null || !(state.active instanceof Uint8Array) || !(state.snapshot instanceof Uint8Array)) {
      throw new UblksnapError('EINVAL', 'cbt.state must be a CbtState with active and snapshot byte arrays');
    }
    start.state = state;
    start.state_reason = reason(generation_reason, 'cbt.generation_reason');
  }
  return start;
}

export class Engine implements EngineControl {
  private readonly volumes_by_index: (VolumeRecord | undefined)[] = [];
  private readonly snapshots = new Map<string, Snapshot>();
  private readonly retired = new Map<string, Snapshot>();
  private readonly queues = new Map<number, EngineIoQueue>();
  /** Hosted frontend sessions (their queues live in the actors): id → tags and handle. */
  private readonly sessions = new Map<number, { frontend: string; depth: number; actor: 'cow' | 'image'; finished: Promise<SessionCounters>; close(): void }>();
  private next_queue_id = 0;
  private readonly idle_timer: NodeJS.Timeout;
  private stopped = false;
  /** Leases on regular-file volumes (EngineOptions.watch_other_writers), else null. */
  private readonly writer_watch: WriterWatch | null;

  private constructor(private readonly pools: ActorPools, readonly params: Params,
    private readonly logger: Logger, private readonly fault_injection: boolean, watch_other_writers: boolean) {
    this.idle_timer = setInterval(() => this.flushIdleQueues(), STORE_IDLE_FLUSH_MS);
    this.idle_timer.unref();
    this.writer_watch = watch_other_writers ? new WriterWatch((notice) => this.onWatchNotice(notice)) : null;
  }

  static async start(options: EngineOptions = {}): Promise<Engine> {
    const params = validateParams(options.params ?? {});
    const count = (value: number | undefined, fallback: number, what: string): number => {
      const n = value ?? fallback;
      if (!Number.isInteger(n) || n < 1 || n > WORKERS_MAX) throw new UblksnapError('EINVAL', `${what} must be an integer in [1, ${WORKERS_MAX}], got ${n}`);
      return n;
    };
    const counts = {
      cow: count(options.cow_workers, DEFAULT_COW_WORKERS, 'cow_workers'),
      image: count(options.image_workers, DEFAULT_IMAGE_WORKERS, 'image_workers'),
      store: count(options.store_threads, DEFAULT_STORE_THREADS, 'store_threads'),
    };
    const logger = options.logger ?? pino({ level: 'silent' });
    let engine: Engine | undefined;
    const pools = new ActorPools(counts, (notice) => engine?.onNotice(notice), logger);
    // Control calls after start (attach first of all) then measure the call, not the workers' boot.
    try {
      await pools.started();
    } catch (error) {
      await pools.stop();
      throw new UblksnapError('EIO', `the engine's workers did not start: ${(error as Error).message}`);
    }
    engine = new Engine(pools, params, logger, options.fault_injection === true, options.watch_other_writers === true);
    logger.info({ workers: counts }, 'engine started');
    return engine;
  }

  // ── volumes ─────────────────────────────────────────────────────────────

  async attach(volume_path: string, options: AttachOptions = {}): Promise<VolumeInfo> {
    this.assertRunning();
    if (typeof volume_path !== 'string' || volume_path.length === 0) throw new UblksnapError('EINVAL', 'attach needs the path of a file or block device');
    const resolved = path.resolve(volume_path);
    const name = validateVolumeName(options.name ?? defaultVolumeName(resolved));
    // The same file or device by another path (a symlink, a hard link) is
    // found by identity before it is opened: an open would also break the
    // attached one's write lease (writer-watch.ts), from our own thread.
    const target = statSync(resolved, { throwIfNoEntry: false });
    for (const volume of this.allVolumes()) {
      if (volume.path === resolved) throw new UblksnapError('EALREADY', `${resolved} is already attached as ${volume.name}`);
      if (volume.name === name) throw new UblksnapError('EEXIST', `a volume named ${name} is already attached (${volume.path})`);
      if (target !== undefined && sameFile(target, fstatSync(volume.fd))) {
        throw new UblksnapError('EALREADY', `${resolved} is ${volume.path}, already attached as ${volume.name}`);
      }
    }
    let index = this.volumes_by_index.findIndex((v) => v === undefined);
    if (index < 0) index = this.volumes_by_index.length;
    if (index >= VOLUME_INDEX_LIMIT) throw new UblksnapError('EBUSY', `at most ${VOLUME_INDEX_LIMIT} volumes may be attached`);
    const volume = VolumeRecord.open(index, name, resolved, this.params, this.fault_injection, trackerStart(options));
    this.volumes_by_index[index] = volume;
    try {
      await this.pools.broadcast((actor) => actor.attachVolume(volume.descriptor));
    } catch (error) {
      this.volumes_by_index[index] = undefined;
      volume.close();
      throw error;
    }
    if (this.writer_watch !== null && volume.kind === 'file') {
      const unwatched = this.writer_watch.watch(volume.index, volume.fd);
      if (unwatched !== null) this.logger.warn({ volume: name, path: resolved }, unwatched);
    }
    const cbt = volume.tracker.info();
    this.logger.info({
      volume: name, path: resolved, capacity_sectors: volume.capacity_sectors,
      cbt_generation_id: cbt.generation_id, cbt_changes_number: cbt.changes_number, cbt_generation_reason: cbt.generation_reason,
      cbt_restored: options.cbt !== undefined && volume.tracker.map.generation_id === options.cbt.state.generation_id,
    }, 'volume attached');
    return volume.describe();
  }

  async detach(volume_ref: string, options: { force?: boolean } = {}): Promise<void> {
    this.assertRunning();
    const volume = this.findVolume(volume_ref);
    const snapshot = volume.snapshot;
    if (snapshot !== null) {
      if (options.force !== true) {
        throw new UblksnapError('EBUSY', `volume ${volume.name} is in snapshot ${snapshot.id}: destroy it first, or detach with force`);
      }
      await this.snapshotDestroy(snapshot.id);
    }
    this.writer_watch?.unwatch(volume.index);
    // Once every actor dropped the volume, none is inside one of its requests
    // (a native queue serving it directly stops at the DETACHED word first).
    markDetached(volume.control);
    this.volumes_by_index[volume.index] = undefined;
    await this.pools.broadcast((actor) => actor.detachVolume(volume.index));
    volume.close();
    this.logger.info({ volume: volume.name }, 'volume detached');
  }

  volumes(): VolumeInfo[] {
    return this.allVolumes().map((v) => v.describe());
  }

  volume(volume_ref: string): VolumeInfo {
    return this.findVolume(volume_ref).describe();
  }

  // ── CBT ─────────────────────────────────────────────────────────────────

  cbtInfo(volume_ref: string): CbtInfo {
    return this.findVolume(volume_ref).tracker.info();
  }

  readCbtMap(volume_ref: string, first_block: number, target: Uint8Array): number {
    const map = this.findVolume(volume_ref).tracker.map;
    if (!Number.isSafeInteger(first_block) || first_block < 0 || first_block > map.block_count) {
      throw new UblksnapError('EINVAL', `first block ${first_block} outside [0, ${map.block_count}]`);
    }
    if (!(target instanceof Uint8Array)) throw new UblksnapError('EINVAL', 'readCbtMap needs a Uint8Array to fill');
    return map.readSnapshot(first_block, target);
  }

  exportCbt(volume_ref: string): SavedCbt {
    const { state, generation_reason } = this.findVolume(volume_ref).tracker.exportState();
    return { state, generation_reason };
  }

  markDirty(volume_ref: string, ranges: CbtRange[]): void {
    const volume = this.findVolume(volume_ref);
    if (!Array.isArray(ranges) || ranges.length === 0) throw new UblksnapError('EINVAL', 'markdirty needs at least one SECTOR:COUNT range');
    for (const range of ranges) {
      const ok = range && Number.isSafeInteger(range.sector) && Number.isSafeInteger(range.count) &&
        range.sector >= 0 && range.count > 0 && range.sector + range.count <= volume.capacity_sectors;
      if (!ok) throw new UblksnapError('ERANGE', `range ${JSON.stringify(range)} is not inside [0, ${volume.capacity_sectors}) sectors`);
    }
    for (const range of ranges) volume.tracker.map.markDirty(range.sector, range.count);
  }

  // ── snapshots ───────────────────────────────────────────────────────────

  async snapshotCreate(options: SnapshotCreateOptions): Promise<string> {
    this.assertRunning();
    if (!options || !Array.isArray(options.volumes)) throw new UblksnapError('EINVAL', 'snapshot_create needs a list of volumes');
    const volumes = options.volumes.map((ref) => this.findVolume(ref));
    // An attached volume is open exclusively, so opening it would fail anyway; say why in words.
    const clash = typeof options.storage === 'string' ? this.allVolumes().find((v) => v.path === path.resolve(options.storage)) : undefined;
    if (clash) throw new UblksnapError('EBUSY', `the difference storage ${clash.path} is the attached volume ${clash.name}; put it elsewhere`);
    const storage = DiffStorage.open(options.storage, options.limit_bytes);
    const snapshot = new Snapshot(storage, this.pools, this.params, this.logger);
    try {
      // Volumes of other snapshots here; add() checks each volume of this one.
      storage.refuseIfOn(this.allVolumes().filter((v) => v.snapshot !== null)
        .map((v) => ({ path: v.path, info: v.info })));
      for (const volume of volumes) snapshot.add(volume);
    } catch (error) {
      for (const volume of snapshot.volumes) volume.snapshot = null;
      await storage.close();
      throw error;
    }
    this.snapshots.set(snapshot.id, snapshot);
    this.logger.info({ snapshot: snapshot.id, volumes: volumes.map((v) => v.name), storage: storage.path, kind: storage.kind, storage_created: storage.created_here }, 'snapshot created');
    return snapshot.id;
  }

  async snapshotAdd(id: string, volume_ref: string): Promise<void> {
    this.findSnapshot(id).add(this.findVolume(volume_ref));
  }

  async snapshotTake(id: string, quiesce?: TakeQuiesce): Promise<void> {
    this.assertRunning();
    await this.findSnapshot(id).take(quiesce);
  }

  async snapshotDestroy(id: string): Promise<void> {
    const snapshot = this.findSnapshot(id);
    this.snapshots.delete(id);
    this.retire(snapshot);
    await snapshot.destroy();
  }

  snapshotCollect(): string[] {
    return [...this.snapshots.keys()];
  }

  snapshotInfo(id: string): SnapshotInfo {
    return this.findSnapshot(id).info();
  }

  volumeSnapshotInfo(volume_ref: string): VolumeSnapshotInfo {
    const volume = this.findVolume(volume_ref);
    const snapshot = volume.snapshot;
    if (snapshot === null) return { snapshot_id: null, error_code: 0, image_export: null };
    return {
      snapshot_id: snapshot.id,
      error_code: snapshot.error_code,
      image_export: snapshot.taken ? `${volume.name}@${snapshot.id}` : null,
    };
  }

  async waitEvent(id: string, timeout_ms: number): Promise<SnapshotEvent | null> {
    if (!Number.isSafeInteger(timeout_ms) || timeout_ms < 0 || timeout_ms > EVENT_WAIT_MAX_MS) {
      throw new UblksnapError('EINVAL', `timeout must be an integer in [0, ${EVENT_WAIT_MAX_MS}] ms`);
    }
    const snapshot = this.snapshots.get(id) ?? this.retired.get(id);
    if (snapshot === undefined || snapshot.events.drained) throw this.unknownSnapshot(id);
    return snapshot.nextEvent(timeout_ms);
  }

  // ── exports and I/O ─────────────────────────────────────────────────────

  resolveExport(name: string): ExportTarget {
    if (typeof name !== 'string') throw new UblksnapError('EINVAL', 'an export name must be a string');
    const at = name.indexOf('@');
    const volume = this.findVolumeByName(at < 0 ? name : name.slice(0, at));
    const base = { volume_name: volume.name, size_bytes: volume.capacity_bytes, logical_block_bytes: volume.logical_block_bytes, writable: true };
    if (at < 0) return { ...base, handle: packHandle(volume.index, 0), kind: 'volume', snapshot_id: null };
    const snapshot_id = name.slice(at + 1);
    const snapshot = volume.snapshot;
    if (snapshot === null || snapshot.id !== snapshot_id || !snapshot.taken) {
      throw new UblksnapError('ESRCH', `no image ${name}: volume ${volume.name} is not in taken snapshot ${snapshot_id}`);
    }
    return { ...base, handle: packHandle(volume.index, snapshot.serial), kind: 'image', snapshot_id };
  }

  exportNames(): string[] {
    const names: string[] = [];
    for (const volume of this.allVolumes()) {
      names.push(volume.name);
      if (volume.snapshot?.taken) names.push(`${volume.name}@${volume.snapshot.id}`);
    }
    return names;
  }

  isLive(handle: number): boolean {
    return targetIsLive(this.volumes_by_index[handleVolume(handle)]?.control, handle);
  }

  async openQueue(options: { depth: number; max_io_bytes: number }): Promise<IoQueue> {
    this.assertRunning();
    const { depth, max_io_bytes } = options ?? {};
    this.reserveQueue(depth, max_io_bytes);
    const queue = new EngineIoQueue(this.next_queue_id++, depth, max_io_bytes,
      { cow: this.pools.cow_ring, image: this.pools.image_ring },
      async (closed) => {
        this.queues.delete(closed.queue_id);
        if (!this.stopped) await this.pools.broadcast((actor) => actor.detachQueue(closed.queue_id));
      });
    this.queues.set(queue.queue_id, queue);
    await this.pools.broadcast((actor) => actor.attachQueue(queue.descriptor));
    return queue;
  }

  hostSession(session: Omit<SessionDescriptor, 'session_id'>): HostedSession {
    this.assertRunning();
    const depth = session.queue_depth;
    if (!this.isLive(session.target_handle)) throw new UblksnapError('ESRCH', 'the export is gone');
    this.reserveQueue(depth, session.max_io_bytes);
    const session_id = this.next_queue_id++;
    const kind = handleIsImage(session.target_handle) ? 'image' : 'cow';
    const placement = this.pools.hostSession(kind, { ...session, session_id });
    // A session that ended (or an actor that failed it) frees its tags.
    const finished = placement.finished.finally(() => { this.sessions.delete(session_id); });
    this.sessions.set(session_id, { frontend: session.frontend, depth, actor: kind, finished, close: placement.close });
    return { session_id, finished, drain: placement.drain, close: placement.close };
  }

  /**
   * Checks a queue's shape (a ring queue's or a hosted session's: the same
   * slab of depth slots) and refuses `depth` more tags when the request
   * rings could not hold them all.
   */
  private reserveQueue(depth: number, max_io_bytes: number): void {
    if (!Number.isInteger(depth) || depth < 1 || depth > QUEUE_DEPTH_MAX) {
      throw new UblksnapError('EINVAL', `queue depth must be an integer in [1, ${QUEUE_DEPTH_MAX}], got ${depth}`);
    }
    if (!Number.isInteger(max_io_bytes) || max_io_bytes < PAGE_BYTES || max_io_bytes > QUEUE_IO_BYTES_MAX || max_io_bytes % PAGE_BYTES !== 0) {
      throw new UblksnapError('EINVAL', `max_io_bytes must be a multiple of ${PAGE_BYTES} in [${PAGE_BYTES}, ${QUEUE_IO_BYTES_MAX}], got ${max_io_bytes}`);
    }
    let open_depth = 0;
    for (const queue of this.queues.values()) open_depth += queue.depth;
    for (const session of this.sessions.values()) open_depth += session.depth;
    if (open_depth + depth > OPEN_TAGS_MAX) {
      throw new UblksnapError('EBUSY', `${open_depth} tags are open; a queue of ${depth} more would pass the ${OPEN_TAGS_MAX} open tags the request rings hold`);
    }
  }

  // ── status and life ─────────────────────────────────────────────────────

  status(): EngineStatus {
    return {
      volumes: this.allVolumes().map((v) => ({ ...v.describe(), cbt: v.tracker.info() })),
      snapshots: [...this.snapshots.values()].map((s) => s.info()),
      queues: [...this.queues.values()].map((q) => ({ queue_id: q.queue_id, depth: q.depth, in_flight: q.in_flight })),
      sessions: [...this.sessions].map(([session_id, s]) => ({ session_id, frontend: s.frontend, depth: s.depth, actor: s.actor })),
      workers: this.pools.counts,
    };
  }

  /** Counters of every I/O actor: requests served and parked, garbage collections. */
  actorStats(): Promise<(ActorStats & { kind: 'cow' | 'image' })[]> {
    return this.pools.stats();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    clearInterval(this.idle_timer);
    for (const id of [...this.snapshots.keys()]) await this.snapshotDestroy(id);
    for (const queue of [...this.queues.values()]) await queue.close();
    for (const session of [...this.sessions.values()]) {
      session.close();
      await session.finished.catch(() => undefined);
    }
    this.stopped = true;
    await this.pools.stop();
    this.writer_watch?.stop();
    for (const volume of this.allVolumes()) volume.close();
    this.volumes_by_index.length = 0;
    this.logger.info('engine stopped');
  }

  /**
   * What the writer watch saw (writer-watch.ts). A writer that bypasses the
   * exports changed what the image shows and what the CBT knows: break the
   * snapshot holding the volume (as overflow does) and start a new CBT
   * generation, both with the reason.
   */
  private onWatchNotice(notice: WatchNotice): void {
    const volume = this.volumes_by_index[notice.key];
    if (volume === undefined) return;
    const where = { volume: volume.name, path: volume.path };
    if (notice.kind === 'rearmed') {
      this.logger.info(where, 'the other process closed the volume file: writes that bypass the exports are noticed again');
      return;
    }
    if (notice.kind === 'reader') {
      this.logger.info(where, 'another process opened the volume file for reading: writes that bypass the exports are not noticed until it closes it');
      return;
    }
    const reason = 'another process opened the volume file for writing, bypassing the exports';
    this.logger.warn(where, `${reason}: its snapshot breaks and its change tracking starts a new generation (write a volume only through its exports)`);
    const membership = volume.snapshot;
    if (membership !== null && membership.taken) this.snapshots.get(membership.id)?.breakSnapshot(ERRNO_BY_CODE.EIO, volume.name, reason);
    volume.tracker.resetGeneration(reason);
  }

  /** Test hook: volume reads of [first, end) bytes fail with EIO (needs fault_injection). */
  injectReadFault(volume_ref: string, first_byte: number, end_byte: number): void {
    const faults = this.findVolume(volume_ref).faults;
    assert(faults !== undefined, 'the engine was started without fault_injection');
    armFault(faults, first_byte, end_byte);
  }

  clearReadFault(volume_ref: string): void {
    const faults = this.findVolume(volume_ref).faults;
    if (faults) disarmFault(faults);
  }

  /**
   * Test hook: the next write to pass the volume's write gate stays inside
   * it until releaseHeldWrite (shared/write-hold.ts; needs fault_injection).
   */
  holdNextWrite(volume_ref: string): void {
    armWriteHold(this.writeHold(volume_ref));
  }

  /** Test hook: resolves once a write is held (false after timeout_ms). */
  waitWriteHeld(volume_ref: string, timeout_ms: number): Promise<boolean> {
    return waitWriteHeld(this.writeHold(volume_ref), timeout_ms);
  }

  releaseHeldWrite(volume_ref: string): void {
    releaseWriteHold(this.writeHold(volume_ref));
  }

  /** Test hook: the volume's write gate as the actors see it (shared/volume-control.ts). */
  writeGate(volume_ref: string): { frozen: boolean; writes_in_flight: number } {
    const control = this.findVolume(volume_ref).control;
    return { frozen: Atomics.load(control, FROZEN) === 1, writes_in_flight: Atomics.load(control, WRITES_IN_FLIGHT) };
  }

  private writeHold(volume_ref: string): Int32Array {
    const hold = this.findVolume(volume_ref).write_hold;
    assert(hold !== undefined, 'the engine was started without fault_injection');
    return new Int32Array(hold);
  }

  // ── internals ───────────────────────────────────────────────────────────

  private onNotice(notice: ActorNotice): void {
    if (notice.type === 'log') {
      this.logger[notice.level](notice.fields, notice.message);
      return;
    }
    for (const snapshot of this.snapshots.values()) {
      const area = snapshot.areas.get(notice.area_id);
      if (area === undefined) continue;
      if (notice.type === 'flush') snapshot.flush(area);
      else if (notice.type === 'low_space') snapshot.onLowSpace();
      else snapshot.onCorrupted(area.volume.name, notice.errno, notice.message);
      return;
    }
  }

  private flushIdleQueues(): void {
    for (const snapshot of this.snapshots.values()) {
      if (!snapshot.taken) continue;
      for (const area of snapshot.areas.values()) {
        if (area.flushing === null && area.view.store_queue.count > 0) snapshot.flush(area);
      }
    }
  }

  private retire(snapshot: Snapshot): void {
    this.retired.set(snapshot.id, snapshot);
    for (const [id, old] of this.retired) {
      if (this.retired.size <= RETIRED_SNAPSHOTS_MAX) break;
      if (old !== snapshot) this.retired.delete(id);
    }
  }

  private allVolumes(): VolumeRecord[] {
    return this.volumes_by_index.filter((v): v is VolumeRecord => v !== undefined);
  }

  private findVolume(ref: string): VolumeRecord {
    if (typeof ref !== 'string' || ref.length === 0) throw new UblksnapError('EINVAL', 'a volume is named by its path or its name');
    const resolved = path.resolve(ref);
    const found = this.allVolumes().find((v) => v.name === ref || v.path === resolved);
    if (found === undefined) throw new UblksnapError('ESRCH', `no attached volume ${ref}`);
    return found;
  }

  private findVolumeByName(name: string): VolumeRecord {
    const found = this.allVolumes().find((v) => v.name === name);
    if (found === undefined) throw new UblksnapError('ESRCH', `no export ${name}: no attached volume has that name`);
    return found;
  }

  private findSnapshot(id: string): Snapshot {
    if (typeof id !== 'string' || !SNAPSHOT_ID_PATTERN.test(id)) {
      throw new UblksnapError('EINVAL', `snapshot id ${JSON.stringify(id)} is not a UUID`);
    }
    const snapshot = this.snapshots.get(id);
    if (snapshot === undefined) throw this.unknownSnapshot(id);
    return snapshot;
  }

  private unknownSnapshot(id: string): UblksnapError {
    return new UblksnapError('ESRCH', `unknown snapshot ${id}`);
  }

  private assertRunning(): void {
    if (this.stopped) throw new UblksnapError('ESHUTDOWN', 'the engine is stopped');
  }
}

/** One file (device and inode) or one block device (its device number), whatever the paths. */
function sameFile(a: Stats, b: Stats): boolean {
  if (a.isBlockDevice() || b.isBlockDevice()) return a.isBlockDevice() && b.isBlockDevice() && a.rdev === b.rdev;
  return a.dev === b.dev && a.ino === b.ino;
}

// One snapshot on the control plane: its volumes, its difference storage,
// a diff area per volume, its events, and the coordination the actors
// cannot do alone — take, destroy, store-queue flushes and storage growth.
//
// Design notes
//
// Take (coherent across volumes): the diff areas are built and handed to
// every actor first, outside the freeze, while the storage's first growth
// step is reserved (FIRST_STEP_WAIT_MS_MAX). Then every volume's gate is
// frozen at once, the writes in flight drain, each CBT map switches,
// copy-on-write is armed and the image opened, and the gates thaw. A write
// that passed a gate before the freeze completes before the switch (it is
// in the image); a write that meets the frozen gate waits in its actor and
// is copied on write after the thaw (it is not).
//
// Destroy: the image gate closes (new image requests fail), image I/O in
// flight drains, copy-on-write is disarmed under a freeze, running store
// and grow tasks finish, and only then does the storage close — a store
// task must never write through a file descriptor number that the close
// made free for reuse.
//
// Flush and growth: an actor that filled its store queue past
// chunk_maximum_in_queue sends one notice; the control plane runs store
// tasks on piscina until the queue is empty. A task (or a clone in an
// actor) that took free space to the low-water mark starts a growth step;
// one that found no room waits for growth, and if growth is impossible
// (limit reached, filesystem full, a block device) the snapshot overflows:
// it breaks with ENOSPC, the queue is dropped, and the volume writes go on
// untouched. The low-water mark and the step follow the measured fill rate
// (growth-plan.ts), and growth stops at the room every chunk of the
// snapshot's volumes can take: a 256 MiB volume never gets a 1 GiB storage.

import { randomUUID } from 'node:crypto';
import { fdatasync as fdatasyncCallback } from 'node:fs';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { alignedOffset } from '../native';
import { ChunkTable } from '../shared/chunk-table';
import { ERRNO_BY_CODE, UblksnapError } from '../shared/errors';
import { chunkGeometry } from '../shared/geometry';
import type { Params } from '../shared/params';
import { Ring } from '../shared/ring';
import { Slab } from '../shared/slab';
import { corruptSnapshot, createSnapshotControl, SnapshotStateCode, SnapshotWord } from '../shared/snapshot-control';
import { SECTOR_BYTES } from '../shared/units';
import {
  ARMED_AREA, FROZEN, IMAGE_AREA, IMAGE_IN_FLIGHT, IMAGE_SERIAL, NO_AREA, waitForZero, WRITES_IN_FLIGHT,
} from '../shared/volume-control';
import type { DiffAreaDescriptor, StoreResult } from '../actors/messages';
import type { ActorPools } from './actor-pools';
import type { SnapshotEvent, SnapshotInfo, SnapshotState, TakeQuiesce } from './api';
import { DiffArea } from '../cow/diff-area';
import { createAreaControl, savedChunks } from '../shared/area-control';
import { NEED_MET } from '../shared/storage-counters';
import { slotSectors } from '../cow/diff-area';
import { chooseCowPath, type CowPath } from './cow-path';
import { GrowthPlan } from './growth-plan';
import { StorageWarmer } from './storage-warmer';
import type { DiffStorage } from './diff-storage';
import { EventQueue } from './events';
import type { VolumeRecord } from './volume';

const fdatasyncAsync = promisify(fdatasyncCallback);

/** Writes in flight must drain within this at take or destroy, else the take fails. */
export const GATE_DRAIN_TIMEOUT_MS = 10_000;
/**
 * Take waits this long at most for the storage's first growth step before
 * it freezes the volumes. Reserved before the freeze, the first step is
 * not raced by the first writes after it: on tmpfs, fallocate holds the
 * storage's inode lock, which every storage write needs. Measured on two
 * cores (the engine bench's round, tmpfs, a 512 MiB step fallocated in
 * 36-53 ms; 4 alternated pairs of 10 rounds): first touch ÷ plain write
 * loop, medians 0.42-0.53 with the step racing the writes, 0.52-0.58 with
 * it reserved first.
 * The freeze itself still costs milliseconds; the step runs at normal
 * priority (actors/thread-priority.ts, FOREGROUND_NICE), and one slower than this
 * goes on in the background, as every later step does.
 */
export const FIRST_STEP_WAIT_MS_MAX = 5_000;
/** Store tasks per flush at most (each handles up to 4096 chunks). */
const FLUSH_ROUNDS_MAX = 1024;

const ENOSPC = ERRNO_BY_CODE.ENOSPC;

export interface AreaRecord {
  descriptor: DiffAreaDescriptor;
  view: DiffArea;
  volume: VolumeRecord;
  cow_path: CowPath;
  flushing: Promise<void> | null;
  flush_again: boolean;
}

let next_area_id = 1;
let next_serial = 1;

export class Snapshot {
  readonly id = randomUUID();
  readonly serial = next_serial++;
  readonly control = createSnapshotControl();
  readonly volumes: VolumeRecord[] = [];
  readonly areas = new Map<number, AreaRecord>();
  readonly events = new EventQueue();
  private destroyed = false;
  private growing: Promise<boolean> | null = null;
  private no_space_reported = false;
  private readonly tasks = new Set<Promise<unknown>>();
  private readonly growth_plan: GrowthPlan;
  private readonly warmer: StorageWarmer;

  constructor(readonly storage: DiffStorage, private readonly pools: ActorPools,
    private readonly params: Params, private readonly logger: Logger) {
    this.growth_plan = new GrowthPlan(params.diff_storage_minimum);
    this.warmer = new StorageWarmer(storage.counters, storage.fd, this.control, (task) => pools.warm(task), logger.child({ snapshot: this.id }));
    storage.counters.setLowWater(this.growth_plan.low_water_sectors());
  }

  get state(): SnapshotState {
    if (this.destroyed) return 'destroyed';
    switch (Atomics.load(this.control, SnapshotWord.STATE) as SnapshotStateCode) {
      case SnapshotStateCode.CREATED: return 'created';
      case SnapshotStateCode.TAKEN: return 'taken';
      case SnapshotStateCode.CORRUPTED: return 'corrupted';
      case SnapshotStateCode.DESTROYING: return 'destroyed';
    }
  }

  get error_code(): number {
    return Atomics.load(this.control, SnapshotWord.ERRNO);
  }

  get taken(): boolean {
    return this.state === 'taken' || this.state === 'corrupted';
  }

  add(volume: VolumeRecord): void {
    if (this.state !== 'created') throw new UblksnapError('EPERM', `snapshot ${this.id} is already taken: volumes can only be added before take`);
    if (this.volumes.includes(volume)) throw new UblksnapError('EALREADY', `volume ${volume.name} is already in snapshot ${this.id}`);
    if (volume.snapshot !== null) throw new UblksnapError('EBUSY', `volume ${volume.name} is in snapshot ${volume.snapshot.id}`);
    this.storage.refuseIfOn([{ path: volume.path, info: volume.info }]);
    this.volumes.push(volume);
    volume.snapshot = this;
  }

  // ── take ────────────────────────────────────────────────────────────────

  async take(quiesce?: TakeQuiesce): Promise<void> {
    if (this.state !== 'created') throw new UblksnapError('EALREADY', `snapshot ${this.id} is already taken`);
    if (this.volumes.length === 0) throw new UblksnapError('EINVAL', `snapshot ${this.id} has no volumes`);
    const started = process.hrtime.bigint();
    const areas = this.volumes.map((volume) => this.createArea(volume));
    this.storage.counters.setNeed(areas.reduce((sum, area) => sum + areaNeedSectors(area.descriptor), 0));
    // An empty (or nearly full) storage starts growing now, not at the first
    // store, at normal priority: take waits for it.
    const first_step = this.growIfLow(true);
    try {
      await this.pools.broadcast((actor) => Promise.all(areas.map((area) => actor.addArea(area.descriptor))));
      if (first_step !== null) await settledWithin(first_step, FIRST_STEP_WAIT_MS_MAX);
      // The frontends quiesce their devices (freeze the filesystems on
      // them) only now, so that what they hold still covers the write-back
      // and the switch, not the areas or the growth step.
      const thaw = quiesce === undefined ? null : await quiesce();
      try {
        // A clone first writes back the volume's dirty pages in its range:
        // done here, outside the freeze and off the write path, it leaves
        // the first touches only the clone itself (libuv's pool does it,
        // the event loop goes on).
        await Promise.all(areas.filter((area) => area.cow_path.kind === 'reflink').map((area) => fdatasyncAsync(area.volume.fd)));
        await this.frozen(async () => {
          for (const area of areas) {
            area.volume.tracker.map.switchForTake();
            Atomics.store(area.volume.control, ARMED_AREA, area.descriptor.area_id);
            Atomics.store(area.volume.control, IMAGE_AREA, area.descriptor.area_id);
            Atomics.store(area.volume.control, IMAGE_SERIAL, this.serial);
          }
          Atomics.store(this.control, SnapshotWord.STATE, SnapshotStateCode.TAKEN);
        });
      } finally {
        if (thaw !== null) await thaw();
      }
    } catch (error) {
      // Taken, and only the thaw failed: the snapshot stands, the caller hears of the thaw.
      if (this.state !== 'created') throw error;
      // Nothing was armed (the switch runs last): forget the areas, stay 'created'.
      this.areas.clear();
      await this.pools.broadcast((actor) => Promise.all(areas.map((area) => actor.forgetArea(area.descriptor.area_id))));
      throw error;
    }
    const took_ms = Number(process.hrtime.bigint() - started) / 1e6;
    const cow_paths = Object.fromEntries(areas.map((area) => [area.volume.name, area.cow_path]));
    this.logger.info({ snapshot: this.id, volumes: this.volumes.map((v) => v.name), took_ms, cow_paths }, 'snapshot taken');
  }

  private createArea(volume: VolumeRecord): AreaRecord {
    const geometry = chunkGeometry(volume.capacity_sectors, volume.min_io_bytes, this.params);
    const chunk_bytes = geometry.unit_sectors * SECTOR_BYTES;
    const slot_count = Math.max(1, Math.min(this.params.free_diff_buffer_pool_size, geometry.count));
    let queue_capacity = 1;
    while (queue_capacity < slot_count) queue_capacity *= 2;
    const cow_path = chooseCowPath(volume, this.storage, chunk_bytes);
    const descriptor: DiffAreaDescriptor = {
      area_id: next_area_id++,
      volume_index: volume.index,
      snapshot_serial: this.serial,
      chunk_shift: geometry.shift,
      chunk_count: geometry.count,
      last_chunk_sectors: geometry.last_unit_sectors,
      table: ChunkTable.create(geometry.count).buffers,
      store_queue: Ring.create(queue_capacity, 1).buffer,
      area_control: createAreaControl(),
      slab: Slab.create(chunk_bytes, slot_count, alignedOffset).buffers,
      storage_fd: this.storage.fd,
      storage_counters: this.storage.counters.buffer,
      snapshot_control: this.control.buffer as SharedArrayBuffer,
      chunk_maximum_in_queue: this.params.chunk_maximum_in_queue,
      clone_chunks: cow_path.kind === 'reflink',
    };
    const record: AreaRecord = {
      descriptor, volume, cow_path, flushing: null, flush_again: false,
      view: new DiffArea(descriptor, { flush: () => undefined, corrupted: () => undefined, lowSpace: () => undefined }),
    };
    this.areas.set(descriptor.area_id, record);
    return record;
  }

  /**
   * Runs `switch` with every volume's write gate frozen and drained.
   * Throws ETIMEDOUT (and thaws) when writes do not drain in time.
   */
  private async frozen(switchOver: () => void | Promise<void>): Promise<void> {
    for (const volume of this.volumes) Atomics.store(volume.control, FROZEN, 1);
    try {
      for (const volume of this.volumes) await waitForZero(volume.control, WRITES_IN_FLIGHT, GATE_DRAIN_TIMEOUT_MS, `writes to ${volume.name}`);
      await switchOver();
    } finally {
      for (const volume of this.volumes) Atomics.store(volume.control, FROZEN, 0);
      this.pools.wakeAll();
    }
  }

  // ── destroy ─────────────────────────────────────────────────────────────

  async destroy(): Promise<void> {
    if (this.destroyed) throw new UblksnapError('ESRCH', `snapshot ${this.id} is already destroyed`);
    this.destroyed = true;
    Atomics.store(this.control, SnapshotWord.STATE, SnapshotStateCode.DESTROYING);
    for (const volume of this.volumes) Atomics.store(volume.control, IMAGE_SERIAL, 0);
    for (const volume of this.volumes) await waitForZero(volume.control, IMAGE_IN_FLIGHT, GATE_DRAIN_TIMEOUT_MS, `image I/O of ${volume.name}`);
    await this.frozen(() => {
      for (const volume of this.volumes) {
        Atomics.store(volume.control, ARMED_AREA, NO_AREA);
        Atomics.store(volume.control, IMAGE_AREA, NO_AREA);
      }
    });
    // After this broadcast no actor is inside a request that uses the areas.
    await this.pools.broadcast((actor) => Promise.all([...this.areas.keys()].map((id) => actor.forgetArea(id))));
    await Promise.allSettled([...this.tasks]);
    await this.storage.close();
    for (const volume of this.volumes) volume.snapshot = null;
    this.events.close({ code: 'destroyed', time: Date.now() });
    this.logger.info({ snapshot: this.id }, 'snapshot destroyed');
  }

  // ── flush and growth ────────────────────────────────────────────────────

  /** An actor asked for a flush of this area (or the idle timer did). */
  flush(area: AreaRecord): void {
    if (this.destroyed) return;
    if (area.flushing) {
      area.flush_again = true;
      return;
    }
    area.flushing = this.track(this.flushLoop(area)).finally(() => {
      area.flushing = null;
      if (area.flush_again && !this.destroyed) {
        area.flush_again = false;
        this.flush(area);
      }
    });
  }

  /** Starts a growth step when free space is at or below the low-water mark; null when none started. */
  private growIfLow(waited_for = false): Promise<boolean> | null {
    const counters = this.storage.counters;
    return counters.growable && counters.claimLowSpace() ? this.grow(waited_for) : null;
  }

  /** An actor's clone claimed the next growth step. */
  onLowSpace(): void {
    if (!this.destroyed) void this.grow();
  }

  private async flushLoop(area: AreaRecord): Promise<void> {
    for (let round = 0; round < FLUSH_ROUNDS_MAX && !this.destroyed; round += 1) {
      this.growIfLow();
      const mode = this.state === 'taken' ? 'store' : 'drop';
      let result: StoreResult;
      try {
        result = await this.pools.store({ mode, area: area.descriptor, volume_fd: area.volume.fd });
      } catch (error) {
        this.logger.error({ err: error, snapshot: this.id }, 'store task failed');
        this.breakSnapshot(ERRNO_BY_CODE.EIO, area.volume.name, `store task failed: ${(error as Error).message}`);
        continue;
      }
      if (result.error) this.breakSnapshot(result.error.errno, area.volume.name, result.error.message);
      if (result.low_space) void this.grow();
      if (result.no_room && !(await this.grow())) {
        this.breakSnapshot(ENOSPC, area.volume.name, 'the difference storage is full');
      }
      if (area.view.store_queue.count === 0) return;
    }
  }

  /** One growth step (shared by every caller while it runs). Resolves true if the storage grew. */
  private grow(waited_for = false): Promise<boolean> {
    if (this.growing) return this.growing;
    const counters = this.storage.counters;
    this.growth_plan.sampleFill(Date.now(), counters.filled_sectors);
    const target = counters.request(this.growth_plan.step_sectors());
    if (target === NEED_MET) {
      // Room for every chunk is there or on its way: nothing to grow, nothing to report.
      counters.growthDone();
      return Promise.resolve(true);
    }
    if (target === 0) {
      counters.growthDone();
      this.reportNoSpace(counters.requested_sectors);
      return Promise.resolve(false);
    }
    const start_capacity_sectors = counters.capacity_sectors;
    const started_ms = Date.now();
    this.events.push({ code: 'low_space', time: Date.now(), requested_sectors: target, capacity_sectors: start_capacity_sectors });
    this.growing = this.track(this.pools.grow({ storage_fd: this.storage.fd, storage_counters: counters.buffer, target_sectors: target, waited_for })
      .then((result) => {
        if (result.error) {
          this.logger.warn({ snapshot: this.id, error: result.error }, 'difference storage could not grow');
          this.reportNoSpace(target, result.error.errno);
          return false;
        }
        this.growth_plan.sampleGrowth(result.capacity_sectors - start_capacity_sectors, Date.now() - started_ms);
        counters.setLowWater(this.growth_plan.low_water_sectors());
        this.events.push({ code: 'grown', time: Date.now(), capacity_sectors: result.capacity_sectors });
        const warming = this.warmer.warm(!waited_for);
        if (warming !== null) void this.track(warming);
        this.logger.info({ snapshot: this.id, capacity_sectors: result.capacity_sectors }, 'difference storage grew');
        return true;
      }, (error: unknown) => {
        this.logger.error({ err: error, snapshot: this.id }, 'grow task failed');
        counters.growthFailed();
        return false;
      })
      .finally(() => { this.growing = null; }));
    return this.growing;
  }

  private reportNoSpace(requested_sectors: number, errno = ENOSPC): void {
    if (this.no_space_reported) return;
    this.no_space_reported = true;
    this.events.push({ code: 'no_space', time: Date.now(), requested_sectors, errno });
  }

  /** Breaks the snapshot (first error wins) and drops its queued chunks. */
  breakSnapshot(errno: number, volume: string, message: string): void {
    if (corruptSnapshot(this.control, errno)) this.onCorrupted(volume, errno, message);
  }

  /** The snapshot was broken (here or by an actor): report and release buffers. */
  onCorrupted(volume: string, errno: number, message: string): void {
    if (errno === ENOSPC) {
      this.storage.counters.setOverflow();
      this.reportNoSpace(this.storage.counters.requested_sectors);
    }
    this.events.push({ code: 'corrupted', time: Date.now(), volume, errno });
    this.logger.warn({ snapshot: this.id, volume, errno, message }, 'snapshot corrupted');
    for (const area of this.areas.values()) this.flush(area);
  }

  private track<T>(promise: Promise<T>): Promise<T> {
    this.tasks.add(promise);
    void promise.finally(() => this.tasks.delete(promise)).catch(() => undefined);
    return promise;
  }

  // ── reporting ───────────────────────────────────────────────────────────

  info(): SnapshotInfo {
    return {
      id: this.id,
      state: this.state,
      error_code: this.error_code,
      volumes: this.volumes.map((v) => v.name),
      storage: {
        ...this.storage.counters.snapshot(), warmed_sectors: this.warmer.warmed_sectors, warm_skipped_sectors: this.warmer.skipped_sectors,
        kind: this.storage.kind, path: this.storage.path, created: this.storage.created_here,
      },
      chunks: [...this.areas.values()].map((area) => {
        const census = area.view.table.census();
        const saved = savedChunks(new Int32Array(area.descriptor.area_control));
        return {
          volume: area.volume.name,
          chunk_bytes: area.view.chunk_bytes,
          chunk_count: area.view.chunk_count,
          in_memory: census.IN_MEMORY,
          stored: census.STORED,
          failed: census.FAILED,
          queued: area.view.store_queue.count,
          cbw: area.cow_path.kind,
          cbw_reason: area.cow_path.kind === 'copy' ? area.cow_path.reason : '',
          cloned: saved.cloned,
          copied: saved.copied,
          cloned_ahead: saved.cloned_ahead,
        };
      }),
    };
  }

  nextEvent(timeout_ms: number): Promise<SnapshotEvent | null> {
    return this.events.wait(timeout_ms);
  }
}

/** The most one volume's chunks can take in the storage: each chunk one slot, once. */
function areaNeedSectors(area: DiffAreaDescriptor): number {
  const chunk_bytes = 2 ** area.chunk_shift;
  return (area.chunk_count - 1) * slotSectors(chunk_bytes) + slotSectors(area.last_chunk_sectors * SECTOR_BYTES);
}

/** Resolves once `promise` settles or `ms` have passed, whichever comes first; never rejects. */
function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, ms); });
  return Promise.race([promise.then(() => undefined, () => undefined), deadline]).finally(() => clearTimeout(timer));
}

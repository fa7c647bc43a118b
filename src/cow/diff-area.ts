// A diff area as an actor sees it: one volume's chunk table, store queue
// and chunk buffers in one snapshot. This file is the one implementation of
// copy-on-write and of snapshot-image I/O; the cow, image and store actors
// only call it (the store through store-batch.ts).
//
// Design notes
//
// Copy before write (blksnap.rst, "Copy on write"): a block layer may
// reorder a read and a later write, so the old data of a chunk is read into
// memory *before* the write that overwrites it is released, never after.
// The write locks each run of adjacent NEW chunks it covers, saves them,
// unlocks; then it goes to the volume. A chunk past NEW needs nothing, and
// a write whose chunks are all past NEW (the fast path) reads the chunk
// words and takes no lock at all.
//
// Copying a run: straight to the storage (one extent of slots, one read
// into this thread's run buffer, one write; the chunks go NEW → STORED)
// when the storage has room now, or once this writer grew one slice of the
// pending growth step itself (growth-slice.ts says why); otherwise chunk by
// chunk into slab buffers (NEW → IN_MEMORY), queued for the store actor,
// which waits for growth and writes them in batches (store-batch.ts).
//
// Image I/O holds each chunk's lock while it reads or modifies the chunk,
// so a volume write (which locks a NEW chunk to copy it) and an image read
// of the same chunk never interleave. Image data comes from:
//
//     NEW        the volume (nothing changed there yet)
//     IN_MEMORY  the chunk's buffer (copied, waiting for the store)
//     STORED     the difference storage, at the chunk's offset
//     FAILED     nowhere: EIO
//
// An image write first brings the chunk into memory (from the volume if
// NEW, from the diff storage if STORED), modifies the buffer and queues the
// chunk to be stored again. The volume is never written through an image.
//
// A request range is split at chunk boundaries into pieces; the first and
// last piece may be partial (unaligned head and tail), the middle ones are
// whole chunks.
//
// Clone before write: where the engine found at take that the volume and
// the storage share a filesystem with shared extents (engine/cow-path.ts),
// a NEW chunk is saved by cloning its extents into a slot of the storage,
// under the chunk's lock, and goes straight to STORED: no buffer, no store
// queue, no bytes moved. The slot is allocated exactly as the store would
// allocate it (same counters, same limit), so image reads and writes find
// a cloned chunk where they find a stored one. Whatever a clone cannot do
// (no room yet, a short tail chunk, a failing ioctl) falls back to the copy
// for that chunk; an allocated slot stays the chunk's and the store reuses it.
// A write that continues a sequential stream of first touches also clones
// the NEW chunks after its own, in the same run (clone ahead, below), within
// room the storage has spare.
//
// Storage slots start on STORAGE_SLOT_ALIGN_BYTES boundaries (a short last
// chunk takes a whole number of them), which a clone needs and a copy does
// not mind.

import { assert } from '../shared/assert';
import { ChunkState, ChunkTable, NO_OFFSET, NO_SLOT } from '../shared/chunk-table';
import { ERRNO_BY_CODE } from '../shared/errors';
import { Ring } from '../shared/ring';
import { Slab } from '../shared/slab';
import { corruptSnapshot, snapshotIsHealthy } from '../shared/snapshot-control';
import { PAGE_BYTES, SECTOR_BYTES, pow2 } from '../shared/units';
import {
  NO_STREAM, clearFlushRequest, countClonedAhead, countSavedChunk, requestFlush, setStreamNextChunk, streamNextChunk,
} from '../shared/area-control';
import { NO_ROOM, StorageCounters } from '../shared/storage-counters';
import type { DiffAreaDescriptor } from '../shared/descriptors';
import { GROW_SLICE_SECTORS, GROWTH_BUSY, growSlice } from './growth-slice';
import { readFully, writeFully, type VolumeReader } from './volume-io';

/** A writer waits for a free chunk buffer in slices of this… */
const BUFFER_WAIT_SLICE_MS = 20;
/** …and breaks the snapshot (never the write) if none frees in this long. */
export const BUFFER_WAIT_TIMEOUT_MS = 30_000;

/**
 * Storage slots start at multiples of this: the block of every filesystem a
 * chunk can be cloned on (a clone needs block-aligned offsets). Costs a
 * short last chunk at most this much less one sector.
 */
export const STORAGE_SLOT_ALIGN_BYTES = PAGE_BYTES;

/** The sectors a chunk of `bytes` takes in the storage. */
export function slotSectors(bytes: number): number {
  return Math.ceil(bytes / STORAGE_SLOT_ALIGN_BYTES) * (STORAGE_SLOT_ALIGN_BYTES / SECTOR_BYTES);
}

/**
 * A write's adjacent NEW chunks are cloned together, this many at most: it
 * bounds the locks one writer holds at once (a 64 MiB write of 256 KiB
 * chunks is 4 runs).
 */
const CLONE_RUN_CHUNKS_MAX = 64;

/**
 * Bytes cloned ahead of a sequential writer with one run: 16 MiB, what a
 * client with 16 writes of 1 MiB in flight covers. One ioctl then saves
 * what those writes would otherwise clone one by one (each ioctl costs XFS
 * ~200 µs however small), and the ahead room stays small next to a growth
 * step. In chunks, not bytes, the window left 64 KiB chunks 4 MiB: writes
 * in flight past it each cloned their own run, and the bench's network
 * sequential first touch on XFS stayed at 0.81× our no-snapshot write
 * against 1.02× for 256 KiB chunks (bench/README.md, "Clone ahead in
 * bytes").
 */
const CLONE_AHEAD_BYTES = 16 << 20;
/** …and this many chunks at most: it bounds the locks one writer holds (with CLONE_RUN_CHUNKS_MAX). */
const CLONE_AHEAD_CHUNKS_MAX = 256;

/** How many chunks of `chunk_bytes` a sequential writer clones ahead at most. */
export function cloneAheadChunks(chunk_bytes: number): number {
  return Math.max(1, Math.min(CLONE_AHEAD_CHUNKS_MAX, Math.floor(CLONE_AHEAD_BYTES / chunk_bytes)));
}

/**
 * copyBeforeWrite saves a run of adjacent NEW chunks, of this many bytes at
 * most, with one copy_file_range (copyInKernel). Where the kernel cannot
 * copy between the two files, it reads and writes through a buffer of this
 * size per thread (allocated at its first use, never freed): the size of a
 * CPU's L2 cache here, so the bytes read are still there when they are
 * written. A 1 MiB write is one run of four 256 KiB chunks.
 */
export const COPY_RUN_BYTES_MAX = 1 << 20;
let copy_run_buffer: Uint8Array | null = null;

function copyRunBuffer(): Uint8Array {
  copy_run_buffer ??= new Uint8Array(COPY_RUN_BYTES_MAX);
  return copy_run_buffer;
}

/**
 * A copy run that found no room grows (or waits for) this many slices at
 * most before it takes the queue route: other writers may take the room
 * a slice made before this one allocates from it.
 */
const GROW_HELP_ATTEMPTS_MAX = 4;
/**
 * A writer waits this long at a time for the slice another thread is
 * growing (one fallocate of GROW_SLICE_SECTORS: about 1 ms on tmpfs; more
 * when the nice grow actor holding the lock is preempted).
 */
const GROW_HELP_WAIT_MS = 5;

/**
 * copy_file_range's answers that say "not between these two files":
 * a block device (EINVAL), two filesystems (EXDEV), no such call.
 */
const KERNEL_COPY_UNSUPPORTED: ReadonlySet<string> = new Set(['EINVAL', 'EXDEV', 'ENOSYS', 'EOPNOTSUPP', 'ENOTSUP']);

const EIO = ERRNO_BY_CODE.EIO;
const ETIMEDOUT = ERRNO_BY_CODE.ETIMEDOUT;

/** What an area reports to the control plane; implemented by each actor. */
export interface AreaNotifier {
  flush(area_id: number): void;
  corrupted(area_id: number, errno: number, message: string): void;
  /** A clone left free space at or below the low-water mark and claimed the next growth step. */
  lowSpace(area_id: number): void;
}

export class DiffArea {
  readonly area_id: number;
  readonly table: ChunkTable;
  readonly store_queue: Ring;
  readonly slab: Slab;
  readonly chunk_bytes: number;
  readonly chunk_count: number;
  readonly last_chunk_bytes: number;
  readonly storage_fd: number;
  readonly clone_chunks: boolean;
  private readonly counters: StorageCounters;
  private readonly area_control: Int32Array;
  private readonly snapshot_control: Int32Array;
  private readonly chunk_maximum_in_queue: number;
  private readonly record = new Int32Array(1);
  /** The chunks of a clone run and its ahead chunks, held locked by copyBeforeWrite (allocated once: the write path allocates nothing). */
  private readonly clone_run: Int32Array;
  private readonly clone_ahead_chunks: number;
  /** The chunks of the run copyBeforeWrite holds locked, and how many fit the run buffer. */
  private readonly copy_run: Int32Array;
  private readonly copy_run_chunks_max: number;
  /** A fallocate this thread tried for a copy run failed: it no longer grows the storage (growForRun). */
  private grow_failed = false;
  /**
   * Copy runs go through copy_file_range (copyInKernel): not where the area
   * clones, whose copy runs must move bytes (on a filesystem with shared
   * extents the call clones, and a partial write into a shared chunk splits
   * the volume's extents: "Partial writes are copied" in bench/README.md),
   * nor once the call refused this area's volume and storage.
   */
  private kernel_copy: boolean;

  constructor(readonly descriptor: DiffAreaDescriptor, private readonly notifier: AreaNotifier) {
    this.area_id = descriptor.area_id;
    this.table = new ChunkTable(descriptor.table);
    this.store_queue = new Ring(descriptor.store_queue);
    this.slab = new Slab(descriptor.slab);
    this.chunk_bytes = pow2(descriptor.chunk_shift);
    this.chunk_count = descriptor.chunk_count;
    this.last_chunk_bytes = descriptor.last_chunk_sectors * SECTOR_BYTES;
    this.storage_fd = descriptor.storage_fd;
    this.clone_chunks = descriptor.clone_chunks;
    this.kernel_copy = !descriptor.clone_chunks;
    this.counters = new StorageCounters(descriptor.storage_counters);
    this.area_control = new Int32Array(descriptor.area_control);
    this.snapshot_control = new Int32Array(descriptor.snapshot_control);
    this.chunk_maximum_in_queue = descriptor.chunk_maximum_in_queue;
    assert(this.slab.slot_bytes >= this.chunk_bytes, 'chunk buffers smaller than a chunk');
    this.copy_run_chunks_max = Math.max(1, Math.floor(COPY_RUN_BYTES_MAX / this.chunk_bytes));
    this.copy_run = new Int32Array(this.copy_run_chunks_max);
    this.clone_ahead_chunks = cloneAheadChunks(this.chunk_bytes);
    this.clone_run = new Int32Array(CLONE_RUN_CHUNKS_MAX + this.clone_ahead_chunks);
  }

  get healthy(): boolean {
    return snapshotIsHealthy(this.snapshot_control);
  }

  chunkBytes(chunk: number): number {
    return chunk === this.chunk_count - 1 ? this.last_chunk_bytes : this.chunk_bytes;
  }

  // ── the write path ──────────────────────────────────────────────────────

  /**
   * Saves the old data of every NEW chunk in [offset, offset + length)
   * before a volume write. Never fails the write: an error breaks the
   * snapshot instead.
   */
  copyBeforeWrite(volume: VolumeReader, offset_bytes: number, length_bytes: number): void {
    if (length_bytes === 0 || !this.healthy) return;
    const end_bytes = offset_bytes + length_bytes;
    const first = Math.floor(offset_bytes / this.chunk_bytes);
    const last = Math.floor((end_bytes - 1) / this.chunk_bytes);
    if (this.table.allPastNew(first, last)) {
      this.markStreamEnd(end_bytes);
      return;
    }
    // Each run of adjacent NEW chunks is locked (ascending, as every
    // multi-chunk locker does; every other locker holds one chunk at a
    // time, so no cycle can form), saved (copyRun, or saveRun when the area
    // clones, see there), and unlocked before the next.
    const sequential = this.clone_chunks && this.continuesStream(offset_bytes, last);
    let cloned_ahead = false;
    let chunk = first;
    while (chunk <= last) {
      if (this.table.state(chunk) !== ChunkState.NEW) {
        chunk += 1;
        continue;
      }
      // Where the area clones, a chunk this write covers only in part is
      // copied all the same, unless a sequential stream is about to cover
      // it whole: the write would land in a shared extent, the filesystem
      // would give its blocks a new home and split the volume's extent
      // around them, and every later clone of that chunk pays per piece
      // (bench/README.md, "Partial writes are copied").
      const clone = this.clone_chunks && (sequential || this.coversWhole(chunk, offset_bytes, end_bytes));
      const run = clone ? this.clone_run : this.copy_run;
      const run_max = clone ? CLONE_RUN_CHUNKS_MAX : this.copy_run_chunks_max;
      let run_last = last;
      // Outside a stream, a copy run is that one chunk, and a clone run (its
      // first chunk covered whole) stops before a partly covered last one.
      if (this.clone_chunks && !sequential) {
        if (!clone) run_last = chunk;
        else if (!this.coversWhole(last, offset_bytes, end_bytes)) run_last = last - 1;
      }
      let run_count = 0;
      let ahead_count = 0;
      try {
        // A clone run ends at a short chunk (it is copied).
        run_count = this.lockNewRun(chunk, run_last, run, run_max, clone);
        if (sequential && run_count > 0 && run[run_count - 1] === last) ahead_count = this.lockAhead(run_count);
        if (run_count > 0 && this.healthy) {
          if (clone) cloned_ahead = this.saveRun(volume, run_count, ahead_count) || cloned_ahead;
          else this.copyRun(volume, run_count);
        }
      } finally {
        for (let i = 0; i < run_count + ahead_count; i += 1) this.table.unlock(run[i]!);
      }
      chunk += Math.max(run_count, 1);
    }
    // Past chunks cloned ahead the stream expects the first chunk after
    // them (saveRun); otherwise the write's end, however its chunks were
    // saved: a writer that goes on from a copied chunk clones what comes
    // next, and ahead.
    if (!cloned_ahead) this.markStreamEnd(end_bytes);
  }

  /**
   * Where the area clones and a write ended at a chunk's end, a write that
   * starts there continues its stream. A write that ends inside a chunk
   * leaves the mark alone: writes with gaps between them (one 4 KiB write
   * per chunk, say) never make a stream, so nothing is cloned ahead of them
   * for their partial writes to split (bench/README.md, "Strides are no
   * stream"). Writes on the fast path mark too, so a stream of writes
   * smaller than a chunk is seen at the next chunk's start.
   */
  private markStreamEnd(end_bytes: number): void {
    if (this.clone_chunks && end_bytes % this.chunk_bytes === 0) setStreamNextChunk(this.area_control, end_bytes / this.chunk_bytes);
  }

  /** True when [offset, end) covers the whole of chunk. */
  private coversWhole(chunk: number, offset_bytes: number, end_bytes: number): boolean {
    const start = chunk * this.chunk_bytes;
    return start >= offset_bytes && start + this.chunkBytes(chunk) <= end_bytes;
  }

  /**
   * Locks the adjacent NEW chunks from `chunk` on (ascending, as every
   * multi-chunk locker does; see copyBeforeWrite), at most up to `last`
   * and `max` of them, into run[]; with `end_at_unaligned`, a chunk whose
   * size is not a whole number of storage slots ends the run after itself.
   * Returns how many it holds.
   */
  private lockNewRun(chunk: number, last: number, run: Int32Array, max: number, end_at_unaligned: boolean): number {
    let count = 0;
    while (chunk + count <= last && count < max) {
      const next = chunk + count;
      if (this.table.state(next) !== ChunkState.NEW) break;
      this.table.lock(next);
      if (this.table.state(next) !== ChunkState.NEW) {
        this.table.unlock(next);
        break;
      }
      run[count] = next;
      count += 1;
      if (end_at_unaligned && this.chunkBytes(next) % STORAGE_SLOT_ALIGN_BYTES !== 0) break;
    }
    return count;
  }

  /**
   * Under the locks of copy_run[0..count), adjacent NEW chunks: saves them
   * straight to the storage — one extent of slots, one pread of the run
   * into this thread's run buffer, one pwrite — and marks them STORED. On
   * tmpfs that moves each old byte twice, as the buffer-and-queue route
   * did, but through a buffer still in the caches and with no hand-off to
   * the store thread. The price: the volume write now waits for the
   * (buffered) storage write too, not only for the read of the volume. A
   * read or write error fails the whole run and breaks the snapshot. Where
   * the storage has no room yet, the writer grows a slice of the pending
   * step itself (growForRun); where that cannot be done or a chunk exceeds
   * the run buffer, each chunk goes the buffer-and-queue route instead
   * (copyChunk).
   */
  private copyRun(volume: VolumeReader, count: number): void {
    const run = this.copy_run;
    const first = run[0]!;
    let bytes = 0;
    let sectors = 0;
    for (let i = 0; i < count; i += 1) {
      bytes += this.chunkBytes(run[i]!);
      sectors += slotSectors(this.chunkBytes(run[i]!));
    }
    let offset = bytes <= COPY_RUN_BYTES_MAX ? this.counters.allocate(sectors) : NO_ROOM;
    if (offset === NO_ROOM && bytes <= COPY_RUN_BYTES_MAX) offset = this.growForRun(sectors);
    if (offset === NO_ROOM) {
      for (let i = 0; i < count; i += 1) this.copyChunk(volume, run[i]!);
      return;
    }
    for (let i = 0; i < count; i += 1) {
      this.table.setOffset(run[i]!, offset + i * slotSectors(this.chunk_bytes));
      countSavedChunk(this.area_control, false);
    }
    let stage = 'copy';
    try {
      if (!this.copyInKernel(volume, bytes, first * this.chunk_bytes, offset * SECTOR_BYTES)) {
        const buffer = copyRunBuffer();
        stage = 'read';
        volume.read(buffer, 0, bytes, first * this.chunk_bytes);
        stage = 'write';
        writeFully(this.storage_fd, buffer, 0, bytes, offset * SECTOR_BYTES);
      }
    } catch (error) {
      // The run's slots stay allocated (counted as filled): the snapshot breaks anyway.
      for (let i = 0; i < count; i += 1) this.table.setState(run[i]!, ChunkState.FAILED, NO_SLOT);
      const errno = (error as { errno?: number }).errno;
      this.corrupt(stage === 'read' || typeof errno !== 'number' ? EIO : Math.abs(errno),
        `copy-on-write ${stage} of chunks ${first}-${run[count - 1]} failed: ${(error as Error).message}`);
      return;
    }
    for (let i = 0; i < count; i += 1) this.table.setState(run[i]!, ChunkState.STORED, NO_SLOT);
    this.claimGrowth();
  }

  /**
   * Copies a run's old bytes from the volume to the storage inside the
   * kernel (copy_file_range: once through memory, where a read and a write
   * through the run buffer move them twice). False where this area clones,
   * where it cannot (the volume is a block device, the storage is on
   * another filesystem, the kernel lacks the call: this thread then stops
   * trying for the area) or a read would meet an injected fault: the
   * caller reads and writes.
   * Any other failure throws, as a failed read or write would.
   */
  private copyInKernel(volume: VolumeReader, bytes: number, volume_offset: number, storage_offset: number): boolean {
    if (!this.kernel_copy) return false;
    let copied: number;
    try {
      copied = volume.copyTo(this.storage_fd, storage_offset, bytes, volume_offset);
    } catch (error) {
      if (!KERNEL_COPY_UNSUPPORTED.has((error as { code?: string }).code ?? '')) throw error;
      this.kernel_copy = false;
      return false;
    }
    if (copied < 0) return false;
    if (copied !== bytes) throw new Error(`the volume ended after ${copied} of ${bytes} bytes at ${volume_offset}`);
    return true;
  }

  /**
   * A copy run found no room: grows the pending step by one slice at this
   * writer's priority and allocates the run from it (cow/growth-slice.ts
   * says why), or waits for the slice another thread is growing. NO_ROOM
   * when no step is pending (the control plane is asked for one; the run
   * takes the queue route meanwhile), when fallocate failed (the grow actor
   * meets the same error and reports it), or after GROW_HELP_ATTEMPTS_MAX
   * tries. Bounded: at most that many slices or lock waits of
   * GROW_HELP_WAIT_MS.
   */
  private growForRun(sectors: number): number {
    this.claimGrowth();
    if (!this.counters.growable || this.grow_failed) return NO_ROOM;
    for (let attempt = 0; attempt < GROW_HELP_ATTEMPTS_MAX; attempt += 1) {
      if (this.counters.pending_sectors === 0) return NO_ROOM;
      let grown: number;
      try {
        grown = growSlice(this.counters, this.storage_fd, GROW_SLICE_SECTORS, Number.MAX_SAFE_INTEGER);
      } catch {
        // ENOSPC or EIO from fallocate: not this write's to report; the
        // grow actor's next slice fails the same way and reports it.
        this.grow_failed = true;
        return NO_ROOM;
      }
      if (grown === GROWTH_BUSY) this.counters.waitForGrowthLock(GROW_HELP_WAIT_MS);
      const offset = this.counters.allocate(sectors);
      if (offset !== NO_ROOM) return offset;
    }
    return NO_ROOM;
  }

  /** True when a write from offset_bytes to within chunk `last` covers the start of the chunk a sequential stream reaches next. */
  private continuesStream(offset_bytes: number, last: number): boolean {
    const expected = streamNextChunk(this.area_control);
    return expected !== NO_STREAM && offset_bytes <= expected * this.chunk_bytes && expected <= last;
  }

  /**
   * After run[0..run_count): try-locks the NEW whole chunks that follow, as
   * many as the spare room and clone_ahead_chunks allow, into
   * run[run_count..). Returns how many it locked.
   */
  private lockAhead(run_count: number): number {
    const run = this.clone_run;
    const slot_sectors = slotSectors(this.chunk_bytes);
    const room_chunks = Math.floor(this.counters.spare_sectors() / slot_sectors) - run_count;
    const ahead_max = Math.min(this.clone_ahead_chunks, room_chunks);
    let ahead = 0;
    while (ahead < ahead_max) {
      const next = run[run_count - 1]! + ahead + 1;
      if (next >= this.chunk_count || this.chunkBytes(next) !== this.chunk_bytes) break;
      if (this.table.state(next) !== ChunkState.NEW || !this.table.tryLock(next)) break;
      if (this.table.state(next) !== ChunkState.NEW) {
        this.table.unlock(next);
        break;
      }
      run[run_count + ahead] = next;
      ahead += 1;
    }
    return ahead;
  }

  /**
   * Under the locks of clone_run[0..count + ahead): clones the run with its
   * ahead chunks as one extent; failing that, the run alone, or each of its
   * chunks alone through copyChunk. Ahead chunks that were not cloned stay
   * NEW. One clone of a 1 MiB write's four 256 KiB chunks cost XFS 16 µs;
   * four clones of one chunk each, 4 × 220 µs.
   *
   * Clone ahead: when the write continues a sequential stream (it covers
   * the start of the chunk where an earlier write ended, markStreamEnd),
   * the run that ends with the write's last chunk also takes up to
   * clone_ahead_chunks of the NEW chunks after it, within the storage's
   * spare room (StorageCounters.spare_sectors: never room a later chunk
   * could need).
   * Each is cloned under its lock before any write reaches it, so it is a
   * stored chunk like any other, and the writes that follow take the fast
   * path. Ahead chunks are only ever tried locks: one another thread holds
   * ends the run, nobody waits for a chunk no write asked for (lockAhead).
   * True when it cloned ahead.
   */
  private saveRun(volume: VolumeReader, count: number, ahead: number): boolean {
    const run = this.clone_run;
    const first = run[0]!;
    const last = run[count - 1]!;
    const whole = this.chunkBytes(last) % STORAGE_SLOT_ALIGN_BYTES === 0;
    if (ahead > 0 && this.cloneRun(volume, first, count + ahead)) {
      for (let i = 0; i < count + ahead; i += 1) countSavedChunk(this.area_control, true);
      countClonedAhead(this.area_control, ahead);
      setStreamNextChunk(this.area_control, last + ahead + 1);
      return true;
    }
    if (count > 1 && whole && this.cloneRun(volume, first, count)) {
      for (let i = 0; i < count; i += 1) countSavedChunk(this.area_control, true);
      return false;
    }
    for (let i = 0; i < count; i += 1) {
      if (this.table.state(run[i]!) === ChunkState.NEW && this.healthy) this.copyChunk(volume, run[i]!);
    }
    return false;
  }

  /**
   * Under the locks of `count` adjacent whole NEW chunks from `first`:
   * one extent of slots, one clone, all STORED. False with nothing changed
   * when there is no room for the run; false with the slots kept (as each
   * chunk's offset) when the clone fails.
   */
  private cloneRun(volume: VolumeReader, first: number, count: number): boolean {
    const slot_sectors = slotSectors(this.chunk_bytes);
    // A chunk may already own a slot from a failed clone: a run needs fresh ones.
    for (let i = 0; i < count; i += 1) if (this.table.offset(first + i) !== NO_OFFSET) return false;
    const offset = this.counters.allocate(slot_sectors * count);
    if (offset === NO_ROOM) {
      this.claimGrowth();
      return false;
    }
    for (let i = 0; i < count; i += 1) this.table.setOffset(first + i, offset + i * slot_sectors);
    try {
      if (!volume.clone(this.storage_fd, offset * SECTOR_BYTES, count * this.chunk_bytes, first * this.chunk_bytes)) return false;
    } catch {
      // The chunks keep their slots; copyChunk clones or copies each into its own.
      return false;
    }
    for (let i = 0; i < count; i += 1) this.table.setState(first + i, ChunkState.STORED, NO_SLOT);
    this.claimGrowth();
    return true;
  }

  /** Under the chunk's lock: NEW → STORED (cloned) or IN_MEMORY (queued), or FAILED. */
  private copyChunk(volume: VolumeReader, chunk: number): void {
    if (this.clone_chunks && this.cloneChunk(volume, chunk)) {
      countSavedChunk(this.area_control, true);
      return;
    }
    countSavedChunk(this.area_control, false);
    const slot = this.allocBuffer();
    if (slot === NO_SLOT) return;
    try {
      volume.read(this.slab.view(slot), 0, this.chunkBytes(chunk), chunk * this.chunk_bytes);
    } catch (error) {
      this.slab.release(slot);
      this.table.setState(chunk, ChunkState.FAILED, NO_SLOT);
      this.corrupt(EIO, `copy-on-write read of chunk ${chunk} failed: ${(error as Error).message}`);
      return;
    }
    this.table.setState(chunk, ChunkState.IN_MEMORY, slot);
    this.enqueue(chunk);
  }

  /**
   * Under the chunk's lock: NEW → STORED by cloning the chunk's extents
   * into a fresh slot. False when the chunk must be copied instead.
   */
  private cloneChunk(volume: VolumeReader, chunk: number): boolean {
    const bytes = this.chunkBytes(chunk);
    // A short last chunk ends mid-block and mid-storage: the kernel clones neither.
    if (bytes % STORAGE_SLOT_ALIGN_BYTES !== 0) return false;
    let offset = this.table.offset(chunk);
    if (offset === NO_OFFSET) {
      offset = this.counters.allocate(slotSectors(bytes));
      if (offset === NO_ROOM) {
        // The store waits for growth; a write must not: copy this chunk.
        this.claimGrowth();
        return false;
      }
      this.table.setOffset(chunk, offset);
    }
    try {
      if (!volume.clone(this.storage_fd, offset * SECTOR_BYTES, bytes, chunk * this.chunk_bytes)) return false;
    } catch {
      // EINVAL, ENOSPC, EIO from the ioctl: the copy path knows how to fail
      // (or succeed) with this chunk, and its slot is already allocated.
      return false;
    }
    this.table.setState(chunk, ChunkState.STORED, NO_SLOT);
    this.claimGrowth();
    return true;
  }

  /** Starts the next growth step when this allocation took free space to the low-water mark. */
  private claimGrowth(): void {
    if (this.counters.growable && this.counters.claimLowSpace()) this.notifier.lowSpace(this.area_id);
  }

  // ── the image path ──────────────────────────────────────────────────────

  /** Reads [offset, offset + length) of the image into target. Returns an errno. */
  imageRead(volume: VolumeReader, target: Uint8Array, offset_bytes: number, length_bytes: number): number {
    return this.imageIo(volume, target, offset_bytes, length_bytes, false);
  }

  /** Writes source into [offset, offset + length) of the image. Returns an errno. */
  imageWrite(volume: VolumeReader, source: Uint8Array, offset_bytes: number, length_bytes: number): number {
    return this.imageIo(volume, source, offset_bytes, length_bytes, true);
  }

  /** Walks the range chunk by chunk (partial head, whole chunks, partial tail), each under its lock. */
  private imageIo(volume: VolumeReader, buffer: Uint8Array, offset_bytes: number, length_bytes: number, write: boolean): number {
    let done = 0;
    while (done < length_bytes) {
      if (!this.healthy) return EIO;
      const position = offset_bytes + done;
      const chunk = Math.floor(position / this.chunk_bytes);
      const in_chunk = position - chunk * this.chunk_bytes;
      const piece = Math.min(length_bytes - done, this.chunkBytes(chunk) - in_chunk);
      this.table.lock(chunk);
      try {
        const errno = write
          ? this.writePiece(volume, chunk, buffer, done, in_chunk, piece)
          : this.readPiece(volume, chunk, buffer, done, in_chunk, piece);
        if (errno !== 0) return errno;
      } finally {
        this.table.unlock(chunk);
      }
      done += piece;
    }
    // A snapshot broken while we read may have handed us stale data.
    return this.healthy ? 0 : EIO;
  }

  private readPiece(volume: VolumeReader, chunk: number, target: Uint8Array, target_offset: number,
    in_chunk: number, piece: number): number {
    try {
      switch (this.table.state(chunk)) {
        case ChunkState.NEW:
          volume.read(target, target_offset, piece, chunk * this.chunk_bytes + in_chunk);
          return 0;
        case ChunkState.IN_MEMORY: {
          const view = this.slab.view(this.table.slot(chunk));
          target.set(view.subarray(in_chunk, in_chunk + piece), target_offset);
          return 0;
        }
        case ChunkState.STORED:
          readFully(this.storage_fd, target, target_offset, piece, this.table.offset(chunk) * SECTOR_BYTES + in_chunk);
          return 0;
        case ChunkState.FAILED:
          return EIO;
      }
    } catch (error) {
      // The volume or the diff storage failed under an image read: only this read fails.
      return EIO;
    }
  }

  private writePiece(volume: VolumeReader, chunk: number, source: Uint8Array, source_offset: number,
    in_chunk: number, piece: number): number {
    const slot = this.loadForWrite(volume, chunk);
    if (slot === NO_SLOT) return EIO;
    this.slab.view(slot).set(source.subarray(source_offset, source_offset + piece), in_chunk);
    return 0;
  }

  /** Under the chunk's lock: the chunk's buffer, loading it first if needed. */
  private loadForWrite(volume: VolumeReader, chunk: number): number {
    const state = this.table.state(chunk);
    if (state === ChunkState.IN_MEMORY) return this.table.slot(chunk);
    if (state === ChunkState.FAILED) return NO_SLOT;
    const slot = this.allocBuffer();
    if (slot === NO_SLOT) return NO_SLOT;
    const view = this.slab.view(slot);
    const bytes = this.chunkBytes(chunk);
    try {
      if (state === ChunkState.NEW) volume.read(view, 0, bytes, chunk * this.chunk_bytes);
      else readFully(this.storage_fd, view, 0, bytes, this.table.offset(chunk) * SECTOR_BYTES);
    } catch (error) {
      this.slab.release(slot);
      this.table.setState(chunk, ChunkState.FAILED, NO_SLOT);
      this.corrupt(EIO, `image write could not load chunk ${chunk}: ${(error as Error).message}`);
      return NO_SLOT;
    }
    this.table.setState(chunk, ChunkState.IN_MEMORY, slot);
    this.enqueue(chunk);
    return slot;
  }

  // ── the store side ──────────────────────────────────────────────────────

  /** Under the chunk's lock: drops a chunk's buffer for a broken snapshot. */
  failChunk(chunk: number): void {
    const state = this.table.state(chunk);
    if (state === ChunkState.FAILED) return;
    const slot = state === ChunkState.IN_MEMORY ? this.table.slot(chunk) : NO_SLOT;
    this.table.setState(chunk, ChunkState.FAILED, NO_SLOT);
    if (slot !== NO_SLOT) this.slab.release(slot);
  }

  /** Pops the next queued chunk, or -1. */
  nextQueued(): number {
    return this.store_queue.tryPop(this.record, 0) ? this.record[0]! : -1;
  }

  requeue(chunk: number): void {
    this.record[0] = chunk;
    this.store_queue.pushCertain(this.record, 0, true, `requeue of chunk ${chunk}`);
  }

  clearFlushRequest(): void {
    clearFlushRequest(this.area_control);
  }

  corrupt(errno: number, message: string): void {
    if (corruptSnapshot(this.snapshot_control, errno)) this.notifier.corrupted(this.area_id, errno, message);
  }

  // ── helpers ─────────────────────────────────────────────────────────────

  private enqueue(chunk: number): void {
    this.record[0] = chunk;
    // The queue holds as many cells as there are buffers, and every queued
    // chunk holds one buffer: it cannot be full.
    this.store_queue.pushCertain(this.record, 0, true, `store queue push of chunk ${chunk}`);
    if (this.store_queue.count > this.chunk_maximum_in_queue) this.requestFlush();
  }

  private requestFlush(): void {
    if (requestFlush(this.area_control)) this.notifier.flush(this.area_id);
  }

  /** A free chunk buffer; waits for the store to free one. NO_SLOT if the snapshot broke meanwhile. */
  private allocBuffer(): number {
    const slot = this.slab.tryAlloc();
    if (slot !== NO_SLOT) return slot;
    this.requestFlush();
    const deadline = Date.now() + BUFFER_WAIT_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const waited = this.slab.alloc(BUFFER_WAIT_SLICE_MS);
      if (waited !== NO_SLOT) return waited;
      if (!this.healthy) return NO_SLOT;
      this.requestFlush();
    }
    this.corrupt(ETIMEDOUT, `no chunk buffer freed within ${BUFFER_WAIT_TIMEOUT_MS} ms`);
    return NO_SLOT;
  }
}

// The warm actor: a piscina task that makes the pages growth reserved in a
// difference storage on tmpfs real memory, ahead of the writers that will
// store chunks there.
//
// Why (issue 15): fallocate on tmpfs reserves pages but leaves them
// unwritten, and the first write to each is what makes it real memory. On
// a VM whose host takes back the memory the guest frees (free page
// reporting, as on the machines the bench runs on) that first write waits
// for the host: the first touches of 1 GiB whose copies met such pages
// took 1.2-3.8 s of the writer's time in the kernel where 0.4-0.5 s is
// usual (bench/README.md, "Whose CPU a first touch spends"), and a plain
// `head -c 16G /dev/zero > /dev/shm/file` ran at 320 MiB/s.
//
// Why here and not in growth: growth that wrote zeros over each slice
// before publishing it took that cost off the writers, but take waits for
// its first step, and a take of 4 volumes then waited up to 4-5 s for 1 GiB
// of cold memory (session 13, bench/README.md). Warming runs after the
// step is published, outside the growth lock: take waits for fallocate
// only, and a writer that catches up with the warming pays for its pages
// as it did before. Warming changes no byte (MADV_POPULATE_WRITE,
// native/src/populate.cc), so it is safe beside writers storing chunks in
// the same range, and it starts at the fill cursor, since the pages behind
// it were made real by the writes that filled them.
//
// Where the memory is backed already (bare metal, or memory freed a
// moment ago), warming is a pass of clearing for nothing, which a writer
// would not have paid (a write that fills a page needs no clearing): the
// engine bench, which recycles its memory before each take, fell from
// 0.42-0.61× the plain loop to 0.34× with every piece warmed. So each
// piece is timed, and after a piece that was backed warming only samples
// the next ones (nextStride).
//
// Elsewhere fallocate reserves disk blocks, and there is nothing to warm:
// the control plane sends tasks only for a storage on tmpfs
// (StorageCounters.in_memory).

import { GROW_SLICE_SECTORS } from '../cow/growth-slice';
import { populateFileRange, setThreadName } from '../native';
import { SnapshotStateCode, SnapshotWord } from '../shared/snapshot-control';
import { StorageCounters } from '../shared/storage-counters';
import { MiB, PAGE_BYTES, SECTOR_BYTES } from '../shared/units';
import type { WarmResult, WarmTask } from './messages';
import { BACKGROUND_NICE, FOREGROUND_NICE, setPriority } from './thread-priority';

/** Warmed a piece at a time (a growth slice, 4 MiB), so a destroy or a writer passing by is seen soon. */
const WARM_PIECE_SECTORS = GROW_SLICE_SECTORS;
/** mmap wants whole pages: pieces start and end on one. */
const PAGE_SECTORS = PAGE_BYTES / SECTOR_BYTES;
/** After backed pieces, warming steps over this many pieces at most before it looks again. */
const STRIDE_PIECES_MAX = 16;

// Piscina loads this file once, on the pool's one thread: the name is the thread's.
setThreadName('ublksnap-warm');

export default function warm(task: WarmTask): WarmResult {
  // The step a take waited for is about to be filled: warm it at normal priority.
  setPriority(task.background ? BACKGROUND_NICE : FOREGROUND_NICE);
  const counters = new StorageCounters(task.storage_counters);
  const control = new Int32Array(task.snapshot_control);
  const end = alignDown(task.to_sectors);
  let position = alignDown(task.from_sectors);
  let stride = 0;
  let skipped = 0;
  while (position < end && stillUseful(control)) {
    // The writers filled up to here: their writes made those pages real.
    position = Math.max(position, alignDown(counters.filled_sectors));
    const piece = Math.min(WARM_PIECE_SECTORS, end - position);
    if (piece <= 0) break;
    const started = process.hrtime.bigint();
    try {
      populateFileRange(task.storage_fd, position * SECTOR_BYTES, piece * SECTOR_BYTES);
    } catch (error) {
      const e = error as { code?: string; message?: string };
      return { warmed_sectors: position, skipped_sectors: skipped, error: { code: e.code ?? 'EIO', message: e.message ?? String(error) } };
    }
    const ns_per_mib = Number(process.hrtime.bigint() - started) / (piece * SECTOR_BYTES / MiB);
    stride = nextStride(stride, ns_per_mib < task.backed_ns_per_mib);
    const stepped_over = Math.min(stride * WARM_PIECE_SECTORS, Math.max(0, end - position - piece));
    skipped += stepped_over;
    position += piece + stepped_over;
  }
  return { warmed_sectors: position >= end ? task.to_sectors : position, skipped_sectors: skipped };
}

/**
 * The pieces to step over after one that was (backed) or was not memory
 * the host already backs. Backed memory costs a writer nothing extra, and
 * warming it is a pass of clearing for nothing; but a new file takes the
 * memory freed last (backed) before the memory freed long ago (which the
 * host took back), so one backed piece says little of the rest. Warming
 * therefore samples: 1, 2, 4 … STRIDE_PIECES_MAX pieces stepped over while
 * pieces stay backed, every piece again from the first that is not.
 */
export function nextStride(stride: number, backed: boolean): number {
  return backed ? Math.min(STRIDE_PIECES_MAX, Math.max(1, stride * 2)) : 0;
}

function alignDown(sectors: number): number {
  return sectors - (sectors % PAGE_SECTORS);
}

/** A broken snapshot stores no more chunks, a destroyed one is closing its storage. */
function stillUseful(control: Int32Array): boolean {
  const state = Atomics.load(control, SnapshotWord.STATE);
  return state === SnapshotStateCode.CREATED || state === SnapshotStateCode.TAKEN;
}

// Goal: growth of a difference storage by slices (cow/growth-slice.ts) —
// one slice at most, never past the step asked for (REQUESTED) nor the
// caller's target, one thread at a time under the growth lock, on tmpfs
// each slice reserved but left unwritten (lseek SEEK_DATA: a hole; the warm
// actor makes it memory later, test/engine/warm.test.ts), a failing
// fallocate leaving the lock free and the capacity as it was — and its use
// by a writer: a copy run that finds no room while a step is pending grows
// one slice itself and goes straight to the storage (STORED, nothing
// queued), the grow actor goes on from the capacity the writer left; with
// no step pending the run takes the queue route and asks for one; a
// fallocate that fails in a writer leaves the run to the queue and the
// failure to the grow actor, which reports it.
// Method: real files on /dev/shm, a real DiffArea over a volume file of
// seeded random bytes (the layout the engine builds at take), the real grow
// task (actors/grow.ts) on this thread, two workers racing growSlice on one
// storage; the failing fallocate is real (a read-only descriptor, and a
// tmpfs mounted too small for one slice, as root).

import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import grow from '../../src/actors/grow';
import { DiffArea, type AreaNotifier } from '../../src/cow/diff-area';
import { GROW_SLICE_SECTORS, GROWTH_BUSY, growSlice } from '../../src/cow/growth-slice';
import { VolumeReader } from '../../src/cow/volume-io';
import { seekData } from '../../src/native/index';
import { ChunkState } from '../../src/shared/chunk-table';
import { StorageCounters } from '../../src/shared/storage-counters';
import { SECTOR_BYTES } from '../../src/shared/units';
import { takenAreaDescriptor, type TestArea } from '../lib/diff-area-fixture';
import { seededRandom } from '../lib/random';
import { gate, mountTmpfs } from '../lib/system';
import { runWorker } from '../lib/workers';

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK_SHIFT = 16;
const CHUNK_BYTES = 1 << CHUNK_SHIFT;
const CHUNK_SECTORS = CHUNK_BYTES / SECTOR_BYTES;
/** 8 MiB: two slices of storage for every chunk. */
const CHUNK_COUNT = 128;
const VOLUME_BYTES = CHUNK_COUNT * CHUNK_BYTES;
const VOLUME_SECTORS = VOLUME_BYTES / SECTOR_BYTES;
/** One write of 1 MiB: one copy run of 16 chunks. */
const RUN_BYTES = MiB;
const RUN_CHUNKS = RUN_BYTES / CHUNK_BYTES;
const SEED = 1515;

const root_suite = gate(test, 'growth slices on a full filesystem', { root: true, tools: ['mount'] });
let dir: string;

test.before(() => {
  dir = mkdtempSync('/dev/shm/ublksnap-grow-slice-');
});

test.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Area extends TestArea {
  /** How often the area claimed a growth step (AreaNotifier.lowSpace). */
  low_space_claims: number;
}

/** A volume of random bytes and an area over it; the storage at storage_path, empty, growable up to every chunk. */
function makeArea(storage_path: string, seed: number): Area {
  const model = Buffer.alloc(VOLUME_BYTES);
  const random = seededRandom(seed);
  for (let i = 0; i < VOLUME_BYTES; i += 1) model[i] = random() & 0xff;
  const volume_fd = openSync(path.join(dir, `volume-${seed}.img`), 'w+');
  writeSync(volume_fd, model, 0, VOLUME_BYTES, 0);
  const storage_fd = openSync(storage_path, 'w+');
  const counters = StorageCounters.create(0, VOLUME_SECTORS, true);
  counters.setNeed(VOLUME_SECTORS);
  const descriptor = takenAreaDescriptor({
    area_id: seed, chunk_shift: CHUNK_SHIFT, chunk_count: CHUNK_COUNT, buffer_count: CHUNK_COUNT, storage_fd, counters,
  });
  const result: Area = {
    area: undefined as unknown as DiffArea,
    descriptor, counters, model, low_space_claims: 0,
    volume: new VolumeReader(volume_fd, undefined),
    close: () => {
      closeSync(volume_fd);
      closeSync(storage_fd);
    },
  };
  const notifier: AreaNotifier = {
    flush: () => undefined,
    corrupted: () => undefined,
    lowSpace: () => { result.low_space_claims += 1; },
  };
  result.area = new DiffArea(descriptor, notifier);
  return result;
}

function statesOf(a: Area, first: number, count: number): ChunkState[] {
  return Array.from({ length: count }, (_, i) => a.area.table.state(first + i));
}

function assertImageExact(a: Area, what: string): void {
  const image = Buffer.alloc(VOLUME_BYTES);
  assert.is(a.area.imageRead(a.volume, image, 0, VOLUME_BYTES), 0, `${what}: image read`);
  assert.ok(image.equals(a.model), `${what}: the image reads the volume's bytes at take`);
}

test('growSlice: one slice at most, never past REQUESTED or the target; 0 when nothing is pending; busy while the lock is held', () => {
  const fd = openSync(path.join(dir, 'slices.diff'), 'w+');
  try {
    const counters = StorageCounters.create(0, 10 * GROW_SLICE_SECTORS, true);
    const step = 2 * GROW_SLICE_SECTORS + 1808;
    assert.is(counters.request(step), step);
    assert.is(growSlice(counters, fd, GROW_SLICE_SECTORS, Number.MAX_SAFE_INTEGER), GROW_SLICE_SECTORS, 'a whole slice');
    assert.is(counters.capacity_sectors, GROW_SLICE_SECTORS);
    assert.is(fstatSync(fd).size, GROW_SLICE_SECTORS * SECTOR_BYTES, 'the file holds what the capacity says');
    assert.is(growSlice(counters, fd, GROW_SLICE_SECTORS, GROW_SLICE_SECTORS + 100), 100, 'never past the target');
    assert.is(counters.tryLockGrowth(), true);
    assert.is(growSlice(counters, fd, GROW_SLICE_SECTORS, Number.MAX_SAFE_INTEGER), GROWTH_BUSY, 'another thread holds the lock');
    assert.is(counters.capacity_sectors, GROW_SLICE_SECTORS + 100, 'nothing grown while busy');
    counters.unlockGrowth();
    assert.is(growSlice(counters, fd, GROW_SLICE_SECTORS, Number.MAX_SAFE_INTEGER), GROW_SLICE_SECTORS);
    assert.is(growSlice(counters, fd, GROW_SLICE_SECTORS, Number.MAX_SAFE_INTEGER), 1708, 'the rest of the step');
    assert.is(counters.capacity_sectors, step);
    assert.is(growSlice(counters, fd, GROW_SLICE_SECTORS, Number.MAX_SAFE_INTEGER), 0, 'never past REQUESTED');
    assert.is(fstatSync(fd).size, step * SECTOR_BYTES);
  } finally {
    closeSync(fd);
  }
});

test('growSlice on tmpfs reserves a slice and writes nothing there: the pages stay a hole until warmed', () => {
  const fd = openSync(path.join(dir, 'in-memory.diff'), 'w+');
  try {
    const counters = StorageCounters.create(0, 10 * GROW_SLICE_SECTORS, true, true);
    assert.is(counters.in_memory, true);
    counters.request(GROW_SLICE_SECTORS + 104);
    assert.is(growSlice(counters, fd, GROW_SLICE_SECTORS, Number.MAX_SAFE_INTEGER), GROW_SLICE_SECTORS);
    assert.is(growSlice(counters, fd, GROW_SLICE_SECTORS, Number.MAX_SAFE_INTEGER), 104);
    // Under the growth lock, a write of the slice would hold every writer that needs room.
    assert.is(seekData(fd, 0), -1, 'a hole: fallocated, never written');
    assert.is(fstatSync(fd).size, (GROW_SLICE_SECTORS + 104) * SECTOR_BYTES);
  } finally {
    closeSync(fd);
  }
});

test('growSlice: a failing fallocate throws, with the lock free and the capacity unchanged', () => {
  const file = path.join(dir, 'read-only.diff');
  closeSync(openSync(file, 'w'));
  const fd = openSync(file, 'r');
  try {
    const counters = StorageCounters.create(0, GROW_SLICE_SECTORS, true);
    counters.request(GROW_SLICE_SECTORS);
    assert.throws(() => growSlice(counters, fd, GROW_SLICE_SECTORS, Number.MAX_SAFE_INTEGER), (error: { code?: string }) => error.code === 'EBADF');
    assert.is(counters.capacity_sectors, 0);
    assert.is(counters.tryLockGrowth(), true, 'the lock was released');
    counters.unlockGrowth();
  } finally {
    closeSync(fd);
  }
});

test('two threads growing one step at once reserve it exactly, each slice once', async () => {
  const fd = openSync(path.join(dir, 'race.diff'), 'w+');
  try {
    const SLICE_SECTORS = 256;
    const step = 4000 * SLICE_SECTORS + 17;
    const counters = StorageCounters.create(0, step, true);
    counters.request(step);
    const arrived = new SharedArrayBuffer(4);
    const grown = await Promise.all([0, 1].map(() => runWorker<number>('shared-hammer', {
      role: 'grow-slices', counters: counters.buffer, storage_fd: fd, slice_sectors: SLICE_SECTORS, arrived, racers: 2,
    })));
    console.log(`  sectors grown per thread: ${grown.join(', ')}`);
    assert.is(grown[0]! + grown[1]!, step, 'every sector of the step grown once');
    assert.is(counters.capacity_sectors, step);
    assert.is(fstatSync(fd).size, step * SECTOR_BYTES);
    assert.is(counters.tryLockGrowth(), true, 'the lock is free');
    counters.unlockGrowth();
  } finally {
    closeSync(fd);
  }
});

test('a copy run with no room while a step is pending grows one slice itself: STORED, nothing queued; the grow actor goes on', () => {
  const a = makeArea(path.join(dir, 'help.diff'), SEED);
  try {
    assert.is(a.counters.request(VOLUME_SECTORS), VOLUME_SECTORS, 'the step take asked for: every chunk');
    a.area.copyBeforeWrite(a.volume, 0, RUN_BYTES);
    assert.equal(statesOf(a, 0, RUN_CHUNKS), new Array(RUN_CHUNKS).fill(ChunkState.STORED), 'the run went straight to the storage');
    assert.is(a.area.store_queue.count, 0, 'nothing queued');
    assert.is(a.counters.capacity_sectors, GROW_SLICE_SECTORS, 'the writer grew one slice');
    assert.is(a.counters.filled_sectors, RUN_CHUNKS * CHUNK_SECTORS);
    // The writer's slice has room for three more runs: no growth for them.
    for (let run = 1; run < 4; run += 1) a.area.copyBeforeWrite(a.volume, run * RUN_BYTES, RUN_BYTES);
    assert.is(a.counters.capacity_sectors, GROW_SLICE_SECTORS);
    const result = grow({ storage_fd: a.descriptor.storage_fd, storage_counters: a.counters.buffer, target_sectors: VOLUME_SECTORS });
    assert.equal(result, { capacity_sectors: VOLUME_SECTORS }, 'the grow actor reserved the rest of the step');
    assert.is(fstatSync(a.descriptor.storage_fd).size, VOLUME_SECTORS * SECTOR_BYTES);
    for (let run = 4; run < VOLUME_BYTES / RUN_BYTES; run += 1) a.area.copyBeforeWrite(a.volume, run * RUN_BYTES, RUN_BYTES);
    assert.ok(statesOf(a, 0, CHUNK_COUNT).every((state) => state === ChunkState.STORED), 'every chunk STORED');
    assert.is(a.area.store_queue.count, 0);
    assertImageExact(a, 'after every chunk was saved');
  } finally {
    a.close();
  }
});

test('a copy run with no room and no step pending takes the queue route and asks for a step', () => {
  const a = makeArea(path.join(dir, 'no-step.diff'), SEED + 1);
  try {
    a.area.copyBeforeWrite(a.volume, 0, RUN_BYTES);
    assert.equal(statesOf(a, 0, RUN_CHUNKS), new Array(RUN_CHUNKS).fill(ChunkState.IN_MEMORY));
    assert.is(a.area.store_queue.count, RUN_CHUNKS, 'every chunk queued for the store');
    assert.is(a.low_space_claims, 1, 'one growth step asked of the control plane');
    assert.is(a.counters.capacity_sectors, 0, 'nothing grown without a step');
    assertImageExact(a, 'with the run in memory');
  } finally {
    a.close();
  }
});

root_suite.test('a fallocate that fails in a writer: the run takes the queue route, the grow actor meets the error and reports it', () => {
  const small = mountTmpfs(MiB);
  const a = makeArea(path.join(small.path, 'full.diff'), SEED + 2);
  try {
    a.counters.request(VOLUME_SECTORS);
    a.area.copyBeforeWrite(a.volume, 0, RUN_BYTES);
    assert.equal(statesOf(a, 0, RUN_CHUNKS), new Array(RUN_CHUNKS).fill(ChunkState.IN_MEMORY), 'the run went through the queue');
    assert.is(a.area.store_queue.count, RUN_CHUNKS);
    assert.is(a.counters.capacity_sectors, 0);
    assert.is(a.counters.overflow, false, 'a writer breaks nothing');
    assert.is(a.counters.tryLockGrowth(), true, 'the lock is free');
    a.counters.unlockGrowth();
    const result = grow({ storage_fd: a.descriptor.storage_fd, storage_counters: a.counters.buffer, target_sectors: VOLUME_SECTORS });
    assert.is(result.error?.code, 'ENOSPC', `the grow actor reports: ${JSON.stringify(result)}`);
    assert.is(a.counters.requested_sectors, a.counters.capacity_sectors, 'the failed step is withdrawn, a later one asks again');
    assertImageExact(a, 'with the run in memory');
  } finally {
    a.close();
    small.unmount();
  }
});

test.run();

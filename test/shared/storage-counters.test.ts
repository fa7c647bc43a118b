// Goal: the counters of a difference storage (storage-counters.ts) hand out
// sectors without overlap and never past the capacity; ask the grow actor
// for more only up to the limit and only when growable; let exactly one
// allocator claim each growth step; raise OVERFLOW once; and wake the
// allocators that wait on GENERATION after every growth or overflow.
// Method: single-thread checks of each operation and its bounds; a worker
// blocked in waitForChange must return long before its timeout when the
// grow actor extends the storage; two workers allocate from one block
// concurrently (from a barrier) until it is full, and their extents must tile it exactly.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NEED_MET, NO_ROOM, StorageCounters } from '../../src/shared/storage-counters';
import { runWorker } from '../lib/workers';

/** A waiter blocked this long was not woken; a woken one returns in far less. */
const WAIT_TIMEOUT_MS = 10_000;
const WOKEN_WITHIN_MS = WAIT_TIMEOUT_MS / 2;
const SETTLE_MS = 50;

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

test('create: capacity, limit and growable as given; nothing filled or flagged', () => {
  const counters = StorageCounters.create(1000, 5000, true);
  assert.equal(counters.snapshot(), {
    capacity_sectors: 1000, requested_sectors: 1000, filled_sectors: 0, limit_sectors: 5000,
    need_sectors: null, low_water_sectors: 0, low_space: false, overflow: false, growable: true, in_memory: false,
  });
  assert.is(counters.free_sectors(), 1000);
  assert.is(counters.growth_pending, false);
  assert.is(StorageCounters.create(0, 0, false).growable, false);
  assert.throws(() => StorageCounters.create(-1, 10, true), /bad capacity/);
  assert.throws(() => StorageCounters.create(100, 99, true), /limit 99 below capacity 100/);
  assert.throws(() => new StorageCounters(new SharedArrayBuffer(48)), /not a storage-counters block/);
});

test('another thread attaching to the buffer sees the same counters', () => {
  const counters = StorageCounters.create(64, 128, true);
  counters.allocate(8);
  const attached = new StorageCounters(counters.buffer);
  assert.equal(attached.snapshot(), counters.snapshot());
});

test('allocate hands out consecutive extents up to the capacity, exactly, then NO_ROOM', () => {
  const counters = StorageCounters.create(100, 100, false);
  assert.is(counters.allocate(30), 0);
  assert.is(counters.allocate(30), 30);
  assert.is(counters.allocate(41), NO_ROOM, 'one sector too many');
  assert.is(counters.filled_sectors, 60, 'a refused allocation takes nothing');
  assert.is(counters.allocate(40), 60, 'an exact fit');
  assert.is(counters.free_sectors(), 0);
  assert.is(counters.allocate(1), NO_ROOM);
  assert.throws(() => counters.allocate(0), /bad allocation size/);
  assert.throws(() => counters.allocate(1.5), /bad allocation size/);
});

test('allocations beyond 2^32 sectors stay exact (BigInt words)', () => {
  const big = 2 ** 40;
  const counters = StorageCounters.create(big + 10, big + 10, false);
  assert.is(counters.allocate(big), 0);
  assert.is(counters.allocate(10), big);
  assert.is(counters.allocate(1), NO_ROOM);
});

test('claimLowSpace: one claim per growth step, only at or below the threshold', () => {
  const counters = StorageCounters.create(100, 1000, true);
  assert.is(counters.claimLowSpace(50), false, 'plenty of room');
  counters.allocate(50);
  assert.ok(counters.claimLowSpace(50), 'at the threshold: claimed');
  assert.ok(counters.snapshot().low_space);
  assert.is(counters.claimLowSpace(50), false, 'claimed already');
  counters.growthDone();
  assert.is(counters.snapshot().low_space, false);
  assert.ok(counters.claimLowSpace(50), 'the next step may be claimed');
});

test('request asks for a step, clamped to the limit; nothing when full-grown or not growable', () => {
  const counters = StorageCounters.create(100, 250, true);
  assert.is(counters.request(100), 200);
  assert.ok(counters.growth_pending, 'requested more than the capacity');
  assert.is(counters.request(100), 250, 'clamped to the limit');
  assert.is(counters.request(100), 0, 'nothing left to ask');
  assert.is(counters.requested_sectors, 250);
  const fixed = StorageCounters.create(100, 1000, false);
  assert.is(fixed.request(100), 0, 'a device does not grow');
  assert.is(fixed.requested_sectors, 100);
});

test('the need caps growth below the limit, is no shortage, and ends low-space claims', () => {
  const counters = StorageCounters.create(100, 1000, true);
  counters.setNeed(260);
  assert.is(counters.need_sectors, 260);
  assert.is(counters.request(100), 200);
  assert.is(counters.request(100), 260, 'clamped to the need, below the limit');
  assert.is(counters.request(100), NEED_MET, 'room for every chunk: nothing to ask, and no limit reached');
  counters.grown(260);
  counters.allocate(260);
  assert.is(counters.claimLowSpace(1000), false, 'no free space, yet no growth step: none is needed');
  assert.throws(() => counters.setNeed(0), /bad need/);
});

test('spare room for clones ahead: none before take or when the limit is below the need; never the low-water reserve while growth may come', () => {
  const counters = StorageCounters.create(100, 1000, true);
  counters.setLowWater(40);
  assert.is(counters.spare_sectors(), 0, 'before take the need is unknown: nothing is spare');
  counters.setNeed(2000);
  assert.is(counters.spare_sectors(), 0, 'the limit (1000) is below the need: a chunk taken early could take a later one\'s room');
  const covered = StorageCounters.create(100, 1000, true);
  covered.setLowWater(40);
  covered.setNeed(500);
  assert.is(covered.spare_sectors(), 60, 'growth still to come: free (100) less the low-water reserve (40)');
  covered.allocate(70);
  assert.is(covered.spare_sectors(), 0, 'below the reserve: nothing spare, never negative');
  assert.is(covered.request(1000), 500, 'growth asks for the whole need');
  covered.grown(500);
  assert.is(covered.spare_sectors(), 430, 'every chunk has room now: all free room is spare');
});

test('claimLowSpace uses the low-water mark the control plane set', () => {
  const counters = StorageCounters.create(100, 1000, true);
  counters.setLowWater(40);
  counters.allocate(59);
  assert.is(counters.claimLowSpace(), false, '41 free, above the mark');
  counters.allocate(1);
  assert.ok(counters.claimLowSpace(), '40 free: at the mark');
});

test('extend and grown publish capacity within the limit and bump GENERATION', () => {
  const counters = StorageCounters.create(100, 300, true);
  counters.request(200);
  counters.claimLowSpace(1000);
  const generation = counters.generation;
  counters.extend(150);
  assert.is(counters.capacity_sectors, 150);
  assert.is(counters.generation, generation + 1);
  assert.ok(counters.snapshot().low_space, 'extend is part of a step: the claim stays');
  assert.ok(counters.growth_pending);
  counters.grown(300);
  assert.is(counters.capacity_sectors, 300);
  assert.is(counters.generation, generation + 2);
  assert.is(counters.snapshot().low_space, false, 'the step ended');
  assert.is(counters.growth_pending, false);
  assert.throws(() => counters.extend(200), /must grow/);
  assert.throws(() => counters.grown(301), /within the limit 300/);
});

test('growthFailed forgets the request so that a later step asks again', () => {
  const counters = StorageCounters.create(100, 1000, true);
  assert.is(counters.request(100), 200);
  counters.claimLowSpace(1000);
  counters.growthFailed();
  assert.is(counters.requested_sectors, 100);
  assert.is(counters.growth_pending, false);
  assert.is(counters.snapshot().low_space, false);
  assert.is(counters.request(100), 200, 'asks again');
});

test('OVERFLOW is raised once, and bumps GENERATION every time', () => {
  const counters = StorageCounters.create(10, 10, false);
  const generation = counters.generation;
  assert.ok(counters.setOverflow(), 'the first caller');
  assert.is(counters.setOverflow(), false, 'the second caller');
  assert.ok(counters.overflow);
  assert.ok(counters.snapshot().overflow);
  assert.is(counters.generation, generation + 2);
});

test('an allocator waiting for growth is woken when the storage grows', async () => {
  const counters = StorageCounters.create(10, 100, true);
  const ready = new SharedArrayBuffer(4);
  const report = runWorker<{ waited_ms: number; seen: number; now: number }>('shared-hammer', {
    role: 'wait-generation', counters: counters.buffer, ready, timeout_ms: WAIT_TIMEOUT_MS,
  });
  const ready_word = new Int32Array(ready);
  while (Atomics.load(ready_word, 0) === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  sleepMs(SETTLE_MS);
  counters.extend(20);
  const { waited_ms, seen, now } = await report;
  assert.ok(waited_ms < WOKEN_WITHIN_MS, `woken after ${waited_ms} ms (a timeout would be ${WAIT_TIMEOUT_MS})`);
  assert.is(now, seen + 1);
});

test('two workers allocating at once tile the storage exactly', async () => {
  const EXTENT_SECTORS = 8;
  const EXTENT_COUNT = 100_000;
  const counters = StorageCounters.create(EXTENT_SECTORS * EXTENT_COUNT, EXTENT_SECTORS * EXTENT_COUNT, false);
  const arrived = new SharedArrayBuffer(4);
  const workers = [0, 1].map(() => runWorker<number[]>('shared-hammer', {
    role: 'allocate', counters: counters.buffer, sectors: EXTENT_SECTORS, arrived, racers: 2,
  }));
  const starts = (await Promise.all(workers));
  console.log(`  extents per worker: ${starts.map((list) => list.length).join(', ')}`);
  const all = starts.flat().sort((a, b) => a - b);
  assert.is(all.length, EXTENT_COUNT, 'every extent handed out once');
  all.forEach((extent_start, index) => assert.is(extent_start, index * EXTENT_SECTORS, `extent ${index}`));
  assert.is(counters.filled_sectors, EXTENT_SECTORS * EXTENT_COUNT);
});

test.run();

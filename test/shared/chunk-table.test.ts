// Goal: chunk locks exclude, wake their waiters and lose no wake-up; state
// moves follow the chunk life cycle; the table costs ≤ 16 bytes a chunk.
// Method: 4 workers hammer 8 lock words with non-atomic increments under the
// lock (a lost update proves a broken lock), with a seeded random schedule.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CHUNK_TABLE_BYTES_PER_CHUNK, ChunkState, ChunkTable, NO_SLOT } from '../../src/shared/chunk-table';
import { runWorker, testSeed } from '../lib/workers';

test('lock, tryLock, unlock on one thread', () => {
  const table = ChunkTable.create(4);
  assert.ok(table.tryLock(2));
  assert.is(table.tryLock(2), false, 'second tryLock fails');
  assert.ok(table.isLocked(2));
  table.unlock(2);
  assert.is(table.isLocked(2), false);
  assert.throws(() => table.unlock(2), /not locked/);
  table.lock(1, 100);
  assert.throws(() => table.lock(1, 50), /stayed locked/);
  table.unlock(1);
});

test('state moves: legal ones pass, illegal ones assert, slot and offset kept', () => {
  const table = ChunkTable.create(2);
  assert.is(table.state(0), ChunkState.NEW);
  assert.is(table.slot(0), NO_SLOT);
  assert.throws(() => table.setState(0, ChunkState.IN_MEMORY, 5), /without its lock/);
  table.lock(0);
  assert.throws(() => table.setState(0, ChunkState.STORED, NO_SLOT), /stored without a storage slot/);
  table.setState(0, ChunkState.IN_MEMORY, 5);
  assert.is(table.slot(0), 5);
  assert.ok(table.isLocked(0), 'state change keeps the lock');
  table.setOffset(0, 4096);
  table.setState(0, ChunkState.STORED, NO_SLOT);
  table.setState(0, ChunkState.IN_MEMORY, 16_777_214);
  assert.is(table.slot(0), 16_777_214, 'largest slot survives the sign bit');
  table.setState(0, ChunkState.FAILED, NO_SLOT);
  assert.throws(() => table.setState(0, ChunkState.IN_MEMORY, 1), /FAILED → IN_MEMORY/);
  table.unlock(0);
  assert.is(table.offset(0), 4096);
  assert.ok(table.allPastNew(0, 0));
  assert.is(table.allPastNew(0, 1), false);
  assert.equal(table.census(), { NEW: 1, IN_MEMORY: 0, STORED: 0, FAILED: 1 });
  // A clone saves a NEW chunk straight into its slot.
  table.lock(1);
  table.setOffset(1, 128);
  table.setState(1, ChunkState.STORED, NO_SLOT);
  assert.is(table.state(1), ChunkState.STORED);
  table.unlock(1);
  table.reset();
  assert.is(table.state(0), ChunkState.NEW);
  assert.is(table.offset(0), -1);
});

test('memory per chunk within docs/design.md §10 (≤ 16 bytes)', () => {
  assert.ok(CHUNK_TABLE_BYTES_PER_CHUNK <= 16);
  const table = ChunkTable.create(1000);
  assert.is(table.buffers.words.byteLength + table.buffers.offsets.byteLength, 1000 * CHUNK_TABLE_BYTES_PER_CHUNK);
});

test('4 workers × 20 000 locked increments on 8 chunks: no lost update', async () => {
  const WORKERS = 4;
  const ITERATIONS = 20_000;
  const CHUNKS = 8;
  const seed = testSeed('lock hammer');
  const table = ChunkTable.create(CHUNKS);
  const counter = new SharedArrayBuffer(CHUNKS * 4);
  await Promise.all(Array.from({ length: WORKERS }, (_, i) => runWorker('shared-hammer', {
    role: 'lock', table: table.buffers, counter, chunk_count: CHUNKS, iterations: ITERATIONS, seed: seed + i,
  })));
  const total = new Int32Array(counter).reduce((a, b) => a + b, 0);
  assert.is(total, WORKERS * ITERATIONS, 'every increment survived');
  for (let chunk = 0; chunk < CHUNKS; chunk += 1) assert.is(table.isLocked(chunk), false, `chunk ${chunk} left locked`);
});

test('a waiter sleeps and is woken by unlock', async () => {
  const table = ChunkTable.create(1);
  table.lock(0);
  const counter = new SharedArrayBuffer(4);
  const waiter = runWorker('shared-hammer', { role: 'lock', table: table.buffers, counter, chunk_count: 1, iterations: 1, seed: 1 });
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.is(new Int32Array(counter)[0], 0, 'the waiter did not get in while we held the lock');
  table.unlock(0);
  await waiter;
  assert.is(new Int32Array(counter)[0], 1);
});

test.run();

// Goal: the MPMC ring delivers every record exactly once, keeps each
// producer's order, reports full and empty exactly, survives wrap-around of
// its cells and of its 32-bit positions, and wakes sleeping consumers.
// Method: single-thread edge cases, then 3 producer and 3 consumer workers
// pushing 20 000 records each through a 64-cell ring.

import { Worker } from 'node:worker_threads';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Ring, RING_LAYOUT, ringBytes } from '../../src/shared/ring';
import { runWorker } from '../lib/workers';

test('full and empty edges, FIFO order, wrap-around of cells', () => {
  const ring = Ring.create(4, 2);
  const record = new Int32Array(2);
  assert.is(ring.tryPop(record), false, 'new ring is empty');
  for (let round = 0; round < 10; round += 1) {
    for (let i = 0; i < 4; i += 1) {
      record[0] = round; record[1] = i;
      assert.ok(ring.tryPush(record), `push ${i} of round ${round}`);
    }
    record[0] = -1;
    assert.is(ring.tryPush(record), false, 'a full ring refuses');
    assert.is(ring.count, 4);
    for (let i = 0; i < 4; i += 1) {
      assert.ok(ring.tryPop(record));
      assert.equal([record[0], record[1]], [round, i]);
    }
    assert.is(ring.tryPop(record), false, 'drained ring is empty');
  }
});

test('32-bit position wrap keeps working', () => {
  const ring = Ring.create(8, 1);
  const words = new Int32Array(ring.buffer);
  // Move HEAD, TAIL and every cell's turn to just below 2^31 - 1.
  const start = 2 ** 31 - 5;
  words[RING_LAYOUT.HEAD] = start; words[RING_LAYOUT.TAIL] = start;
  for (let cell = 0; cell < 8; cell += 1) {
    let p = start; while ((p & 7) !== cell) p += 1;
    words[RING_LAYOUT.HEADER_WORDS + cell] = p | 0;
  }
  const record = new Int32Array(1);
  for (let i = 0; i < 100; i += 1) {
    record[0] = i;
    assert.ok(ring.tryPush(record), `push ${i}`);
    assert.ok(ring.tryPop(record), `pop ${i}`);
    assert.is(record[0], i);
  }
});

test('blocking pop times out on an empty ring, push on a full one', () => {
  const ring = Ring.create(2, 1);
  const record = new Int32Array(1);
  const started = Date.now();
  assert.is(ring.pop(record, 0, 30), false);
  assert.ok(Date.now() - started >= 25, 'waited about the timeout');
  assert.ok(ring.push(record, 0, 10) && ring.push(record, 0, 10));
  assert.is(ring.push(record, 0, 30), false);
});

test('a consumer preempted mid-pop: tryPush sees "full", pushCertain waits it out', async () => {
  // Stage the moment a consumer has advanced HEAD but not yet freed its
  // cell (ring.ts, RING_TRANSIENT_FULL_TIMEOUT_MS); a worker finishes that
  // pop 100 ms later, the way tryPop does: free the cell, ring the doorbell.
  const ring = Ring.create(2, 1);
  const record = new Int32Array([1]);
  assert.ok(ring.tryPush(record) && ring.tryPush(record));
  const words = new Int32Array(ring.buffer);
  words[RING_LAYOUT.HEAD] = 1; // HEAD advanced past position 0, cell 0 not yet freed
  assert.is(ring.count, 1, 'by the counters there is room');
  assert.is(ring.tryPush(record), false, 'but the cell is still taken');
  const finisher = new Worker(`
    const { workerData } = require('node:worker_threads');
    const { buffer, layout } = workerData;
    const words = new Int32Array(buffer);
    setTimeout(() => {
      Atomics.store(words, layout.HEADER_WORDS + 0, 0 + 2);   // cell 0 free for position 2
      Atomics.add(words, layout.PRODUCER_DOORBELL, 1); Atomics.notify(words, layout.PRODUCER_DOORBELL);
    }, 100);`, { eval: true, workerData: { buffer: ring.buffer, layout: RING_LAYOUT } });
  const started = Date.now();
  ring.pushCertain(record, 0, true, 'test');
  assert.ok(Date.now() - started >= 50, 'it waited for the consumer');
  assert.is(ring.count, 2);
  await finisher.terminate();
});

test('sizes and bad shapes', () => {
  assert.is(ringBytes(4, 2), (48 + 4 + 8) * 4, 'the drawing in ring.ts: SEQUENCE from word 48');
  assert.throws(() => Ring.create(3, 1), /power of two/);
  assert.throws(() => Ring.create(4, 0), /1\.\.64 words/);
  assert.throws(() => new Ring(new SharedArrayBuffer(64)), /not a ring/);
});

test('waitForRecords wakes an event-loop consumer', async () => {
  const ring = Ring.create(4, 1);
  const waiting = ring.waitForRecords(5_000);
  const record = new Int32Array([7]);
  setTimeout(() => ring.tryPush(record), 20);
  const started = Date.now();
  await waiting;
  assert.ok(Date.now() - started < 4_000, 'woken by the push, not the timeout');
  assert.ok(ring.tryPop(record));
  assert.is(record[0], 7);
});

test('3 producers × 3 consumers: exactly once, per-producer order', async () => {
  const PRODUCERS = 3;
  const CONSUMERS = 3;
  const PER_PRODUCER = 20_000;
  const ring = Ring.create(64, 2);
  const done = new SharedArrayBuffer(4);
  const total = PRODUCERS * PER_PRODUCER;
  const consumers = Array.from({ length: CONSUMERS }, () =>
    runWorker<number[]>('shared-hammer', { role: 'consume', ring: ring.buffer, done, total, timeout_ms: 10_000 }));
  const producers = Array.from({ length: PRODUCERS }, (_, producer) =>
    runWorker('shared-hammer', { role: 'produce', ring: ring.buffer, producer, count: PER_PRODUCER, timeout_ms: 10_000 }));
  await Promise.all(producers);
  const received = await Promise.all(consumers);
  const seen = Array.from({ length: PRODUCERS }, () => new Uint8Array(PER_PRODUCER));
  for (const list of received) {
    const last = new Array<number>(PRODUCERS).fill(-1);
    for (let i = 0; i < list.length; i += 2) {
      const producer = list[i]!;
      const sequence = list[i + 1]!;
      assert.ok(sequence > last[producer]!, `consumer saw producer ${producer} out of order: ${sequence} after ${last[producer]}`);
      last[producer] = sequence;
      seen[producer]![sequence]! += 1;
    }
  }
  for (let producer = 0; producer < PRODUCERS; producer += 1) {
    const counts = seen[producer]!;
    const wrong = counts.findIndex((count) => count !== 1);
    assert.is(wrong, -1, `producer ${producer} record ${wrong} delivered ${counts[wrong]} times`);
  }
  assert.is(ring.count, 0);
});

test.run();

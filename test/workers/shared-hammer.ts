// Worker for the shared-memory concurrency tests. One role per run, chosen
// by workerData; results go back through shared memory or one message.

import { parentPort, workerData } from 'node:worker_threads';
import { ChunkTable } from '../../src/shared/chunk-table';
import { Ring } from '../../src/shared/ring';
import { Slab } from '../../src/shared/slab';
import { corruptSnapshot } from '../../src/shared/snapshot-control';
import { NO_ROOM, StorageCounters } from '../../src/shared/storage-counters';
import { GROWTH_BUSY, growSlice } from '../../src/cow/growth-slice';
import { enterWriteGate, FROZEN, leaveWriteGate } from '../../src/shared/volume-control';
import { seededRandom } from '../lib/random';

type Job =
  | { role: 'lock'; table: ChunkTable['buffers']; counter: SharedArrayBuffer; chunk_count: number; iterations: number; seed: number }
  | { role: 'produce'; ring: SharedArrayBuffer; producer: number; count: number; timeout_ms: number }
  | { role: 'consume'; ring: SharedArrayBuffer; done: SharedArrayBuffer; total: number; timeout_ms: number }
  | { role: 'slab'; slab: Slab['buffers']; rounds: number; owners: SharedArrayBuffer; me: number }
  | { role: 'wait-word'; words: SharedArrayBuffer; index: number; until: number; ready: SharedArrayBuffer; timeout_ms: number }
  | { role: 'wait-generation'; counters: SharedArrayBuffer; ready: SharedArrayBuffer; timeout_ms: number }
  | { role: 'writer'; control: SharedArrayBuffer; inside: SharedArrayBuffer; stop: SharedArrayBuffer }
  | { role: 'corrupt'; controls: SharedArrayBuffer[]; arrived: SharedArrayBuffer; racers: number; winners: SharedArrayBuffer; me: number }
  | { role: 'allocate'; counters: SharedArrayBuffer; sectors: number; arrived: SharedArrayBuffer; racers: number }
  | { role: 'grow-slices'; counters: SharedArrayBuffer; storage_fd: number; slice_sectors: number; arrived: SharedArrayBuffer; racers: number };

/** READY protocol of the waiting roles: the worker stores 1 just before it blocks. */
function announceReady(ready: SharedArrayBuffer): void {
  const word = new Int32Array(ready);
  Atomics.store(word, 0, 1);
  Atomics.notify(word, 0);
}

/** grow-slices: a racer holding the growth lock fallocates one slice, far less than this. */
const GROWTH_LOCK_WAIT_MS = 1_000;

/** A barrier spins this often before it naps. */
const BARRIER_SPINS_MAX = 10_000;

/** Arrives at barrier word arrived[index] and returns once `racers` have arrived. */
function meetAtBarrier(arrived: Int32Array, index: number, racers: number): void {
  Atomics.add(arrived, index, 1);
  Atomics.notify(arrived, index);
  for (let spin = 0; ; spin += 1) {
    const here = Atomics.load(arrived, index);
    if (here >= racers) return;
    if (spin > BARRIER_SPINS_MAX) Atomics.wait(arrived, index, here, 1);
  }
}

const job = workerData as Job;
switch (job.role) {
  case 'lock': {
    // Each chunk guards a non-atomic read-modify-write of counters[chunk]:
    // a lost update would prove two holders at once.
    const table = new ChunkTable(job.table);
    const counters = new Int32Array(job.counter);
    const next = seededRandom(job.seed);
    for (let i = 0; i < job.iterations; i += 1) {
      const chunk = Math.floor(next() * job.chunk_count);
      table.lock(chunk, 10_000);
      const value = counters[chunk]!;
      if (next() < 0.05) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
      counters[chunk] = value + 1;
      table.unlock(chunk);
    }
    parentPort!.postMessage('done');
    break;
  }
  case 'produce': {
    const ring = new Ring(job.ring);
    const record = new Int32Array(ring.record_words);
    for (let i = 0; i < job.count; i += 1) {
      record[0] = job.producer;
      record[1] = i;
      if (!ring.push(record, 0, job.timeout_ms)) throw new Error(`producer ${job.producer} timed out at ${i}`);
    }
    parentPort!.postMessage('done');
    break;
  }
  case 'consume': {
    const ring = new Ring(job.ring);
    const done = new Int32Array(job.done);
    const record = new Int32Array(ring.record_words);
    const received: number[] = [];
    while (Atomics.load(done, 0) < job.total) {
      if (ring.pop(record, 0, 50)) {
        Atomics.add(done, 0, 1);
        received.push(record[0]!, record[1]!);
      }
    }
    ring.wakeAll();
    parentPort!.postMessage(received);
    break;
  }
  case 'slab': {
    // Allocate, stamp the slot with our id, check nobody else holds it, free.
    const slab = new Slab(job.slab);
    const owners = new Int32Array(job.owners);
    for (let i = 0; i < job.rounds; i += 1) {
      const slot = slab.alloc(10_000);
      if (slot < 0) throw new Error('slab alloc timed out');
      if (Atomics.compareExchange(owners, slot, 0, job.me) !== 0) throw new Error(`slot ${slot} handed out twice`);
      slab.view(slot)[0] = job.me;
      Atomics.store(owners, slot, 0);
      slab.release(slot);
    }
    parentPort!.postMessage('done');
    break;
  }
  case 'wait-word': {
    // Blocks on words[index] until it reads `until`; reports how each wait
    // ended ('ok' = notified, 'not-equal' = changed before we slept,
    // 'timed-out' = nobody notified).
    const words = new Int32Array(job.words);
    const outcomes: string[] = [];
    for (;;) {
      const value = Atomics.load(words, job.index);
      if (value === job.until) break;
      announceReady(job.ready);
      const outcome = Atomics.wait(words, job.index, value, job.timeout_ms);
      outcomes.push(outcome);
      if (outcome === 'timed-out') break;
    }
    parentPort!.postMessage(outcomes);
    break;
  }
  case 'wait-generation': {
    const counters = new StorageCounters(job.counters);
    const seen = counters.generation;
    announceReady(job.ready);
    const started = Date.now();
    counters.waitForChange(seen, job.timeout_ms);
    parentPort!.postMessage({ waited_ms: Date.now() - started, seen, now: counters.generation });
    break;
  }
  case 'writer': {
    // Enters and leaves the write gate until told to stop; inside[0] counts
    // writers past the gate, inside[1] counts entries seen while FROZEN was
    // already 1 and the control side had found no writer in flight (a
    // violation), inside[2] counts parked attempts, inside[3] started writers.
    const control = new Int32Array(job.control);
    const inside = new Int32Array(job.inside);
    const stop = new Int32Array(job.stop);
    let entries = 0;
    Atomics.add(inside, 3, 1);
    while (Atomics.load(stop, 0) === 0) {
      if (!enterWriteGate(control)) {
        Atomics.add(inside, 2, 1);
        continue;
      }
      entries += 1;
      Atomics.add(inside, 0, 1);
      if (Atomics.load(control, FROZEN) === 1 && Atomics.load(stop, 1) === 1) Atomics.add(inside, 1, 1);
      Atomics.sub(inside, 0, 1);
      leaveWriteGate(control);
    }
    parentPort!.postMessage(entries);
    break;
  }
  case 'corrupt': {
    // One corruptSnapshot per round, racing the other workers: every
    // round starts at a barrier (arrived[round] counts the racers there;
    // spin, then nap, so a descheduled racer costs little). The winner of
    // each round writes its id into winners[round] (0 = nobody yet, -1 = two).
    const winners = new Int32Array(job.winners);
    const arrived = new Int32Array(job.arrived);
    const controls = job.controls.map((buffer) => new Int32Array(buffer));
    for (let round = 0; round < controls.length; round += 1) {
      meetAtBarrier(arrived, round, job.racers);
      if (corruptSnapshot(controls[round]!, job.me)) {
        if (Atomics.compareExchange(winners, round, 0, job.me) !== 0) Atomics.store(winners, round, -1);
      }
    }
    parentPort!.postMessage('done');
    break;
  }
  case 'allocate': {
    // Allocates `sectors` at a time until there is no room; reports the starts.
    const counters = new StorageCounters(job.counters);
    meetAtBarrier(new Int32Array(job.arrived), 0, job.racers);
    const starts: number[] = [];
    for (;;) {
      const start = counters.allocate(job.sectors);
      if (start === NO_ROOM) break;
      starts.push(start);
    }
    parentPort!.postMessage(starts);
    break;
  }
  case 'grow-slices': {
    // Grows slices until nothing is pending; reports the sectors this thread grew.
    const counters = new StorageCounters(job.counters);
    meetAtBarrier(new Int32Array(job.arrived), 0, job.racers);
    let grown_sectors = 0;
    for (;;) {
      const grown = growSlice(counters, job.storage_fd, job.slice_sectors, Number.MAX_SAFE_INTEGER);
      if (grown === 0) break;
      if (grown === GROWTH_BUSY) counters.waitForGrowthLock(GROWTH_LOCK_WAIT_MS);
      else grown_sectors += grown;
    }
    parentPort!.postMessage(grown_sectors);
    break;
  }
}

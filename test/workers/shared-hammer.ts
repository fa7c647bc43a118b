// Worker for the shared-memory concurrency tests. One role per run, chosen
// by workerData; results go back through shared memory or one message.

import { parentPort, workerData } from 'node:worker_threads';
import { ChunkTable } from '../../src/shared/chunk-table';
import { Ring } from '../../src/shared/ring';
import { Slab } from '../../src/shared/slab';
import { seededRandom } from '../lib/random';

type Job =
  | { role: 'lock'; table: ChunkTable['buffers']; counter: SharedArrayBuffer; chunk_count: number; iterations: number; seed: number }
  | { role: 'produce'; ring: SharedArrayBuffer; producer: number; count: number; timeout_ms: number }
  | { role: 'consume'; ring: SharedArrayBuffer; done: SharedArrayBuffer; total: number; timeout_ms: number }
  | { role: 'slab'; slab: Slab['buffers']; rounds: number; owners: SharedArrayBuffer; me: number };


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
}

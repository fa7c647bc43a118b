// Micro-benchmarks of the shared-memory core (issue 2): chunk lock/unlock,
// ring records per second between two threads, CBT marks per second.
// Each figure is the median of several runs.

import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { CbtMap } from '../src/shared/cbt-map';
import { ChunkTable } from '../src/shared/chunk-table';
import { trackingGeometry } from '../src/shared/geometry';
import { DEFAULT_PARAMS } from '../src/shared/params';
import { REQUEST_WORDS } from '../src/shared/request-record';
import { Ring } from '../src/shared/ring';
import { formatRate, medianOf, table } from './lib';

function seconds(since: bigint): number {
  return Number(process.hrtime.bigint() - since) / 1e9;
}

function lockUnlock(operations: number): number {
  const table_ = ChunkTable.create(1024);
  const started = process.hrtime.bigint();
  for (let i = 0; i < operations; i += 1) {
    const chunk = i & 1023;
    table_.lock(chunk);
    table_.unlock(chunk);
  }
  return operations / seconds(started);
}

function runPeer(role: 'push' | 'pop', ring: Ring, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(path.join(__dirname, 'workers', 'ring-peer.js'), { workerData: { role, ring: ring.buffer, count } });
    worker.once('message', () => { resolve(); void worker.terminate(); });
    worker.once('error', reject);
  });
}

async function ringThroughput(count: number): Promise<number> {
  const ring = Ring.create(1024, REQUEST_WORDS);
  const started = process.hrtime.bigint();
  await Promise.all([runPeer('push', ring, count), runPeer('pop', ring, count)]);
  return count / seconds(started);
}

function cbtMarks(operations: number): number {
  const capacity = 2 * 1024 * 1024 * 2; // 2 GiB in sectors
  const map = CbtMap.create(capacity, trackingGeometry(capacity, DEFAULT_PARAMS));
  const started = process.hrtime.bigint();
  for (let i = 0; i < operations; i += 1) map.mark((i * 2048) % (capacity - 256), 256);
  return operations / seconds(started);
}

export async function runMicro(quick: boolean): Promise<string> {
  const rounds = quick ? 3 : 5;
  const lock = await medianOf(rounds, () => lockUnlock(quick ? 2_000_000 : 5_000_000));
  const ring = await medianOf(rounds, () => ringThroughput(quick ? 200_000 : 1_000_000));
  const cbt = await medianOf(rounds, () => cbtMarks(quick ? 2_000_000 : 5_000_000));
  return table(['micro-benchmark', `median of ${rounds}`, 'per operation'], [
    ['chunk lock + unlock (uncontended)', formatRate(lock.median, 'ops/s'), `${(1e9 / lock.median).toFixed(1)} ns`],
    ['ring records, 1 producer → 1 consumer thread', formatRate(ring.median, 'rec/s'), `${(1e9 / ring.median).toFixed(1)} ns`],
    ['CBT mark (128 KiB write)', formatRate(cbt.median, 'marks/s'), `${(1e9 / cbt.median).toFixed(1)} ns`],
  ]);
}

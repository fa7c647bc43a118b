// Benchmark peer: pushes or pops `count` records through a shared ring.

import { parentPort, workerData } from 'node:worker_threads';
import { Ring } from '../../src/shared/ring';

const { role, ring: buffer, count } = workerData as { role: 'push' | 'pop'; ring: SharedArrayBuffer; count: number };
const ring = new Ring(buffer);
const record = new Int32Array(ring.record_words);
const PEER_TIMEOUT_MS = 30_000;
for (let i = 0; i < count; i += 1) {
  record[0] = i;
  const ok = role === 'push' ? ring.push(record, 0, PEER_TIMEOUT_MS) : ring.pop(record, 0, PEER_TIMEOUT_MS);
  if (!ok) throw new Error(`ring ${role} timed out at ${i}`);
}
parentPort!.postMessage('done');

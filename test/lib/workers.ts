// Starting test workers from their compiled file and waiting for them, with
// a hard timeout so a deadlock fails the test instead of hanging CI.

import path from 'node:path';
import { Worker } from 'node:worker_threads';

export const WORKER_TIMEOUT_MS = 60_000;

export function workerPath(name: string): string {
  return path.join(__dirname, '..', 'workers', `${name}.js`);
}

/** Runs a worker to its first message and returns it. */
export function runWorker<T>(name: string, data: unknown, timeout_ms = WORKER_TIMEOUT_MS): Promise<T> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerPath(name), { workerData: data });
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`worker ${name} did not finish in ${timeout_ms} ms`));
    }, timeout_ms);
    worker.once('message', (message: T) => {
      clearTimeout(timer);
      resolve(message);
      void worker.terminate();
    });
    worker.once('error', (error) => { clearTimeout(timer); reject(error); });
    worker.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`worker ${name} exited with code ${code} before answering`));
    });
  });
}

/** A seed from SEED=… or the clock, printed so a failure can be replayed. */
export function testSeed(label: string): number {
  const seed = process.env.SEED ? Number(process.env.SEED) : (Date.now() % 2_147_483_647) || 1;
  console.log(`  ${label}: seed ${seed} (replay with SEED=${seed})`);
  return seed;
}

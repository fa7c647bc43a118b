// Goal: the addon works where the engine calls it — inside worker
// threads, several at once, loaded and unloaded repeatedly — and sees the
// same shared memory as the main thread (one address for one
// SharedArrayBuffer), with the same constants and error codes.
// Method: Worker threads run a short script that loads the compiled module,
// reports bufferAddress of the SharedArrayBuffer it was given, a constant
// and the code of a failing call; every worker is awaited under a timeout.

import { Worker } from 'node:worker_threads';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FALLOC_FL_PUNCH_HOLE, bufferAddress } from '../../src/native/index';

const NATIVE_MODULE = path.join(__dirname, '../../src/native/index.js');
const WORKER_TIMEOUT_MS = 30_000;
const CONCURRENT_WORKER_COUNT = 4;
const SEQUENTIAL_WORKER_COUNT = 8;
const SHARED_BYTES = 64 << 10;

interface Report {
  address: bigint;
  punch_hole: number;
  error_code: string;
}

const WORKER_SCRIPT = `
  const { parentPort, workerData } = require('node:worker_threads');
  const native = require(workerData.module);
  let error_code = 'none';
  try { native.fileInfo(1_000_000); } catch (error) { error_code = error.code; }
  parentPort.postMessage({
    address: native.bufferAddress(workerData.shared),
    punch_hole: native.FALLOC_FL_PUNCH_HOLE,
    error_code,
  });
`;

/** Runs one worker to completion; rejects on error, non-zero exit or timeout. */
function runWorker(shared: SharedArrayBuffer): Promise<Report> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_SCRIPT, { eval: true, workerData: { module: NATIVE_MODULE, shared } });
    let report: Report | undefined;
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`worker did not finish within ${WORKER_TIMEOUT_MS} ms`));
    }, WORKER_TIMEOUT_MS);
    worker.on('message', (message: Report) => { report = message; });
    worker.on('error', (error) => { clearTimeout(timer); reject(error); });
    worker.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0 || report === undefined) reject(new Error(`worker exited with code ${code} and ${report ? 'a' : 'no'} report`));
      else resolve(report);
    });
  });
}

function checkReport(report: Report, shared: SharedArrayBuffer): void {
  assert.is(report.address, bufferAddress(shared));
  assert.is(report.punch_hole, FALLOC_FL_PUNCH_HOLE);
  assert.is(report.error_code, 'EBADF');
}

const workers = suite('the addon in worker threads');

workers('workers at once see the main thread\'s shared memory', async () => {
  const shared = new SharedArrayBuffer(SHARED_BYTES);
  const reports = await Promise.all(Array.from({ length: CONCURRENT_WORKER_COUNT }, () => runWorker(shared)));
  for (const report of reports) checkReport(report, shared);
});

workers('loading and unloading in one worker after another', async () => {
  const shared = new SharedArrayBuffer(SHARED_BYTES);
  for (let index = 0; index < SEQUENTIAL_WORKER_COUNT; index += 1) checkReport(await runWorker(shared), shared);
});

workers.run();

// Goal: duplicateFd gives a second descriptor of the same open file that
// outlives the original (how an NBD socket moves to the actor that serves
// it), close-on-exec; setThreadNice changes the calling thread only, in
// [0, 19]; both refuse bad arguments with TypeErrors and report system
// errors with their errno name.
// Method: a file written through the duplicate after the original is
// closed; F_GETFD read back through /proc/self/fdinfo; a worker that
// raises its own nice value, and one that names itself, while the main
// thread's nice value and name stay.

import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { getPriority } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { duplicateFd, setThreadName, setThreadNice } from '../../src/native/index';
import { SCRATCH_ROOT } from '../lib/engine-fixture';

const NATIVE_MODULE = path.join(__dirname, '../../src/native/index.js');
const dir = mkdtempSync(path.join(SCRATCH_ROOT, 'ublksnap-dupfd-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

/** O_CLOEXEC as /proc/self/fdinfo prints it in "flags:" (octal). */
const O_CLOEXEC_OCTAL = 0o2000000;

test('duplicateFd: same open file, survives the original, close-on-exec', () => {
  const file = path.join(dir, 'same-file');
  const original = openSync(file, 'w+');
  writeSync(original, 'abc', 0);
  const copy = duplicateFd(original);
  assert.ok(copy !== original && copy >= 0);
  closeSync(original);
  writeSync(copy, 'def', 3);
  const back = Buffer.alloc(6);
  assert.is(readSync(copy, back, 0, 6, 0), 6);
  assert.is(back.toString(), 'abcdef');
  const flags = Number.parseInt(/^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${copy}`, 'utf8'))![1]!, 8);
  assert.ok((flags & O_CLOEXEC_OCTAL) !== 0, 'the copy is close-on-exec');
  closeSync(copy);
});

test('duplicateFd: a closed descriptor is EBADF; bad arguments are TypeErrors', () => {
  const file = path.join(dir, 'closed');
  const fd = openSync(file, 'w');
  closeSync(fd);
  assert.throws(() => duplicateFd(fd), (error: NodeJS.ErrnoException) => error.code === 'EBADF');
  for (const bad of [-1, 1.5, '3', undefined, 2 ** 31]) {
    assert.throws(() => (duplicateFd as (x: unknown) => number)(bad), (error: Error) => error instanceof TypeError && /duplicateFd\(fd\)/.test(error.message));
  }
});

test('setThreadNice: only the calling thread; range and types checked', async () => {
  const main_before = getPriority();
  const script = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { getPriority } = require('node:os');
    const native = require(workerData.module);
    native.setThreadNice(7);
    parentPort.postMessage(getPriority());`;
  const worker = new Worker(script, { eval: true, workerData: { module: NATIVE_MODULE } });
  const seen = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await worker.terminate();
  assert.is(seen, 7, 'the worker runs at nice 7');
  assert.is(getPriority(), main_before, 'the main thread is untouched');
  for (const bad of [20, -1, 0.5, 'x', undefined]) {
    assert.throws(() => (setThreadNice as (x: unknown) => void)(bad), (error: Error) => error instanceof TypeError && /setThreadNice/.test(error.message));
  }
});

test('setThreadName: only the calling thread; length and types checked', async () => {
  const main_before = readFileSync('/proc/thread-self/comm', 'utf8');
  const script = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { readFileSync } = require('node:fs');
    const native = require(workerData.module);
    native.setThreadName('ublksnap-test');
    parentPort.postMessage(readFileSync('/proc/thread-self/comm', 'utf8'));`;
  const worker = new Worker(script, { eval: true, workerData: { module: NATIVE_MODULE } });
  const seen = await new Promise<string>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await worker.terminate();
  assert.is(seen, 'ublksnap-test\n', 'the worker carries its name');
  assert.is(readFileSync('/proc/thread-self/comm', 'utf8'), main_before, 'the main thread keeps its name');
  for (const bad of ['', 'sixteen-bytes-xx', 'a\0b', 7, undefined]) {
    assert.throws(() => (setThreadName as (x: unknown) => void)(bad), (error: Error) => error instanceof TypeError && /setThreadName/.test(error.message));
  }
});

test.run();

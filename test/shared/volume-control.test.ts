// Goal: the volume control block keeps its gate protocols (volume-control.ts):
// a writer parks while FROZEN and leaves WRITES_IN_FLIGHT as it found it; the
// count of writers past the gate is exact; the last writer out of a frozen
// gate notifies the control side waiting for 0; image requests pass only for
// the serial being served (never serial 0) and the last one out notifies;
// targetIsLive follows the served serial.
// Method: single-thread checks of every transition; a worker thread blocked
// in Atomics.wait on the count must be woken by a notify, not by its
// timeout; then two writer workers hammer the gate while the main thread
// freezes and thaws it 2000 times, and no writer may be past the gate while
// the main thread holds it frozen at 0. waitForZero (the take's drain) must
// also see a count that reached 0 without any notify, as a native writer
// leaves it (direct serving), within a few polls and not at its timeout.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { packHandle } from '../../src/shared/request-record';
import {
  ARMED_AREA, createVolumeControl, enterImageGate, enterWriteGate, FROZEN, IMAGE_AREA, IMAGE_IN_FLIGHT, IMAGE_SERIAL,
  leaveImageGate, leaveWriteGate, NO_AREA, targetIsLive, waitForZero, WRITES_IN_FLIGHT, ZERO_POLL_MS,
} from '../../src/shared/volume-control';
import { runWorker } from '../lib/workers';

/** A waiter worker must be woken well before this; reaching it means nobody notified. */
const WAKE_TIMEOUT_MS = 10_000;
/** How long the main thread lets a ready waiter settle into Atomics.wait. */
const SETTLE_MS = 50;
/** Upper bound on one freeze of the hammer test waiting for writers to drain. */
const DRAIN_TIMEOUT_MS = 10_000;
const FREEZE_ROUNDS = 2000;
/** Every this many rounds the gate stays open a millisecond, so writers surely get through. */
const THAW_LONG_EVERY_ROUNDS = 50;

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Starts a 'wait-word' worker on control[index] and returns once it is about
 * to block. (The outcomes come wrapped: an async function returning a bare
 * promise would wait for it.)
 */
async function startWaiter(control: Int32Array, index: number): Promise<{ outcomes: Promise<string[]> }> {
  const ready = new SharedArrayBuffer(4);
  const outcomes = runWorker<string[]>('shared-hammer', {
    role: 'wait-word', words: control.buffer, index, until: 0, ready, timeout_ms: WAKE_TIMEOUT_MS,
  });
  const ready_word = new Int32Array(ready);
  const deadline = Date.now() + WAKE_TIMEOUT_MS;
  while (Atomics.load(ready_word, 0) === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.is(Atomics.load(ready_word, 0), 1, 'the waiter started');
  sleepMs(SETTLE_MS);
  return { outcomes };
}

test('a new control block: open gate, nothing armed, no image', () => {
  const control = createVolumeControl();
  assert.is(control[FROZEN], 0);
  assert.is(control[WRITES_IN_FLIGHT], 0);
  assert.is(control[ARMED_AREA], NO_AREA);
  assert.is(control[IMAGE_SERIAL], 0);
  assert.is(control[IMAGE_AREA], NO_AREA);
  assert.is(control[IMAGE_IN_FLIGHT], 0);
  assert.ok(control.buffer instanceof SharedArrayBuffer);
});

test('writers are counted past the open gate and uncounted on leaving', () => {
  const control = createVolumeControl();
  for (let i = 1; i <= 3; i += 1) {
    assert.ok(enterWriteGate(control));
    assert.is(control[WRITES_IN_FLIGHT], i);
  }
  for (let i = 2; i >= 0; i -= 1) {
    leaveWriteGate(control);
    assert.is(control[WRITES_IN_FLIGHT], i);
  }
});

test('a writer parks while FROZEN and leaves the count as it found it', () => {
  const control = createVolumeControl();
  assert.ok(enterWriteGate(control), 'one writer already past the gate');
  Atomics.store(control, FROZEN, 1);
  for (let i = 0; i < 3; i += 1) {
    assert.is(enterWriteGate(control), false, 'parked');
    assert.is(control[WRITES_IN_FLIGHT], 1, 'the parked writer is not counted');
  }
  leaveWriteGate(control);
  assert.is(control[WRITES_IN_FLIGHT], 0);
  Atomics.store(control, FROZEN, 0);
  assert.ok(enterWriteGate(control), 'passes after the thaw');
  assert.is(control[WRITES_IN_FLIGHT], 1);
});

test('the last writer out of a frozen gate wakes the control side waiting for 0', async () => {
  const control = createVolumeControl();
  assert.ok(enterWriteGate(control) && enterWriteGate(control));
  Atomics.store(control, FROZEN, 1);
  const { outcomes } = await startWaiter(control, WRITES_IN_FLIGHT);
  leaveWriteGate(control);
  sleepMs(SETTLE_MS);
  leaveWriteGate(control);
  const seen = await outcomes;
  assert.not.ok(seen.includes('timed-out'), `the waiter was woken, not timed out: ${seen.join(', ')}`);
  assert.is(control[WRITES_IN_FLIGHT], 0);
});

test('image requests pass only for the served serial, never serial 0', () => {
  const control = createVolumeControl();
  assert.is(enterImageGate(control, 0), false, 'no image served, serial 0');
  assert.is(enterImageGate(control, 5), false, 'no image served');
  assert.is(control[IMAGE_IN_FLIGHT], 0, 'refused requests are not counted');
  Atomics.store(control, IMAGE_SERIAL, 5);
  assert.ok(enterImageGate(control, 5));
  assert.ok(enterImageGate(control, 5));
  assert.is(control[IMAGE_IN_FLIGHT], 2);
  assert.is(enterImageGate(control, 4), false, 'an older snapshot\'s request');
  assert.is(enterImageGate(control, 0), false, 'serial 0 is never an image');
  assert.is(control[IMAGE_IN_FLIGHT], 2);
  leaveImageGate(control);
  leaveImageGate(control);
  assert.is(control[IMAGE_IN_FLIGHT], 0);
  Atomics.store(control, IMAGE_SERIAL, 6);
  assert.is(enterImageGate(control, 5), false, 'the image moved on to serial 6');
});

test('the last image request out wakes whoever waits for 0', async () => {
  const control = createVolumeControl();
  Atomics.store(control, IMAGE_SERIAL, 9);
  assert.ok(enterImageGate(control, 9));
  const { outcomes } = await startWaiter(control, IMAGE_IN_FLIGHT);
  leaveImageGate(control);
  const seen = await outcomes;
  assert.not.ok(seen.includes('timed-out'), `the waiter was woken, not timed out: ${seen.join(', ')}`);
});

test('targetIsLive: attached volumes; images only while their serial is served', () => {
  const control = createVolumeControl();
  assert.is(targetIsLive(undefined, packHandle(3, 0)), false, 'no control: detached');
  assert.ok(targetIsLive(control, packHandle(3, 0)), 'a volume handle lives with its volume');
  assert.is(targetIsLive(control, packHandle(3, 7)), false, 'no image served');
  Atomics.store(control, IMAGE_SERIAL, 7);
  assert.ok(targetIsLive(control, packHandle(3, 7)));
  assert.ok(targetIsLive(control, packHandle(3, 0)), 'the volume still lives');
  assert.is(targetIsLive(control, packHandle(3, 6)), false, 'an older snapshot');
  Atomics.store(control, IMAGE_SERIAL, 8);
  assert.is(targetIsLive(control, packHandle(3, 7)), false, 'the image of 7 is gone');
  assert.ok(targetIsLive(control, packHandle(65_535, 8)), 'the largest volume index');
});

test('writers hammering the gate are never past it while the control side holds it frozen at 0', async () => {
  const control = createVolumeControl();
  // inside: [0] writers past the gate, [1] violations, [2] parked attempts, [3] writers started.
  const inside = new Int32Array(new SharedArrayBuffer(4 * 4));
  // stop[0]: writers stop; stop[1]: 1 while the main thread holds the frozen, drained gate.
  const stop = new Int32Array(new SharedArrayBuffer(2 * 4));
  const writers = [0, 1].map(() => runWorker<number>('shared-hammer', {
    role: 'writer', control: control.buffer, inside: inside.buffer, stop: stop.buffer,
  }));
  const started_deadline = Date.now() + DRAIN_TIMEOUT_MS;
  while (Atomics.load(inside, 3) < 2 && Date.now() < started_deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  try {
    for (let round = 0; round < FREEZE_ROUNDS; round += 1) {
      Atomics.store(control, FROZEN, 1);
      const deadline = Date.now() + DRAIN_TIMEOUT_MS;
      for (;;) {
        const in_flight = Atomics.load(control, WRITES_IN_FLIGHT);
        if (in_flight === 0) break;
        assert.ok(Date.now() < deadline, `round ${round}: ${in_flight} writers still in flight after ${DRAIN_TIMEOUT_MS} ms`);
        Atomics.wait(control, WRITES_IN_FLIGHT, in_flight, DRAIN_TIMEOUT_MS);
      }
      Atomics.store(stop, 1, 1);
      for (let spin = 0; spin < 200; spin += 1) {
        assert.is(Atomics.load(inside, 0), 0, `round ${round}: a writer is past the frozen gate`);
      }
      Atomics.store(stop, 1, 0);
      Atomics.store(control, FROZEN, 0);
      if (round % THAW_LONG_EVERY_ROUNDS === 0) sleepMs(1);
    }
  } finally {
    Atomics.store(stop, 0, 1);
  }
  const entries = await Promise.all(writers);
  assert.is(Atomics.load(inside, 1), 0, 'no writer entered while the gate was held frozen');
  assert.ok(entries.every((count) => count > 0), `both writers got through: ${entries.join(', ')}`);
  assert.ok(Atomics.load(inside, 2) > 0, 'some writers parked');
  assert.is(control[WRITES_IN_FLIGHT], 0);
});


test('waitForZero sees a writer leave without notifying (native code cannot) within a few polls', async () => {
  const control = createVolumeControl();
  Atomics.store(control, WRITES_IN_FLIGHT, 1);
  // As native/src/direct-volume.cc leaves the gate: a plain atomic store, no notify.
  setTimeout(() => Atomics.store(control, WRITES_IN_FLIGHT, 0), 50);
  const started = Date.now();
  await waitForZero(control, WRITES_IN_FLIGHT, WAKE_TIMEOUT_MS, 'the test writer');
  const waited_ms = Date.now() - started;
  assert.ok(waited_ms < 50 + 100 * ZERO_POLL_MS, `waited ${waited_ms} ms for a count that was 0 after 50 ms`);
});

test('waitForZero gives up with ETIMEDOUT naming what did not drain', async () => {
  const control = createVolumeControl();
  Atomics.store(control, WRITES_IN_FLIGHT, 1);
  try {
    await waitForZero(control, WRITES_IN_FLIGHT, 30, 'writes to vol');
    assert.unreachable('a count that stays 1 drained');
  } catch (error) {
    assert.is((error as { code?: string }).code, 'ETIMEDOUT');
    assert.match((error as Error).message, /writes to vol did not drain within 30 ms/);
  }
});

test.run();

// Goal: a snapshot's control words (snapshot-control.ts) break only a taken
// snapshot, exactly once, keeping the errno of the first breaker however
// many actors race to break it; snapshotIsHealthy is true only while TAKEN.
// Method: single-thread checks of each state; then two workers (one per
// core) race corruptSnapshot over 3000 fresh TAKEN blocks, meeting at a
// barrier before each, each with its own errno; every block must have
// exactly one winner, whose errno is the one stored.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  corruptSnapshot, createSnapshotControl, SnapshotStateCode, SnapshotWord, snapshotIsHealthy,
} from '../../src/shared/snapshot-control';
import { runWorker } from '../lib/workers';

const RACE_ROUNDS = 3000;
const RACERS = [1, 2];
const EIO = 5;
const ENOSPC = 28;

function controlIn(state: SnapshotStateCode): Int32Array {
  const control = createSnapshotControl();
  Atomics.store(control, SnapshotWord.STATE, state);
  return control;
}

test('a new control block is CREATED, no errno, not healthy', () => {
  const control = createSnapshotControl();
  assert.ok(control.buffer instanceof SharedArrayBuffer);
  assert.is(control[SnapshotWord.STATE], SnapshotStateCode.CREATED);
  assert.is(control[SnapshotWord.ERRNO], 0);
  assert.is(snapshotIsHealthy(control), false, 'not taken yet');
});

test('only a TAKEN snapshot can be broken', () => {
  for (const state of [SnapshotStateCode.CREATED, SnapshotStateCode.DESTROYING]) {
    const control = controlIn(state);
    assert.is(corruptSnapshot(control, EIO), false, `state ${state}`);
    assert.is(control[SnapshotWord.STATE], state, 'state unchanged');
    assert.is(control[SnapshotWord.ERRNO], 0, 'errno untouched');
  }
});

test('the first errno wins; later breakers change nothing', () => {
  const control = controlIn(SnapshotStateCode.TAKEN);
  assert.ok(snapshotIsHealthy(control));
  assert.ok(corruptSnapshot(control, ENOSPC), 'the first breaker');
  assert.is(control[SnapshotWord.STATE], SnapshotStateCode.CORRUPTED);
  assert.is(control[SnapshotWord.ERRNO], ENOSPC);
  assert.is(snapshotIsHealthy(control), false);
  assert.is(corruptSnapshot(control, EIO), false, 'a second breaker');
  assert.is(control[SnapshotWord.ERRNO], ENOSPC, 'still the first errno');
  Atomics.store(control, SnapshotWord.STATE, SnapshotStateCode.DESTROYING);
  assert.is(snapshotIsHealthy(control), false, 'destroying');
  assert.is(corruptSnapshot(control, EIO), false);
  assert.is(control[SnapshotWord.ERRNO], ENOSPC);
});

test(`${RACERS.length} workers race to break ${RACE_ROUNDS} snapshots: one winner each, its errno kept`, async () => {
  const controls = Array.from({ length: RACE_ROUNDS }, () => controlIn(SnapshotStateCode.TAKEN));
  const arrived = new SharedArrayBuffer(RACE_ROUNDS * 4);
  // winners[round]: the id (= errno) of the racer whose corruptSnapshot returned true; -1 when two did.
  const winners = new Int32Array(new SharedArrayBuffer(RACE_ROUNDS * 4));
  const racers = RACERS.map((me) => runWorker('shared-hammer', {
    role: 'corrupt', controls: controls.map((control) => control.buffer), arrived, racers: RACERS.length, winners: winners.buffer, me,
  }));
  await Promise.all(racers);
  const by_racer = new Map<number, number>();
  controls.forEach((control, round) => {
    const winner = winners[round]!;
    assert.ok(RACERS.includes(winner), `round ${round}: winner ${winner} (0 = nobody, -1 = two)`);
    assert.is(control[SnapshotWord.STATE], SnapshotStateCode.CORRUPTED, `round ${round}: state`);
    assert.is(control[SnapshotWord.ERRNO], winner, `round ${round}: the winner's errno`);
    by_racer.set(winner, (by_racer.get(winner) ?? 0) + 1);
  });
  console.log(`  rounds won per racer: ${[...by_racer].map(([racer, won]) => `${racer}: ${won}`).join(', ')}`);
});

test.run();

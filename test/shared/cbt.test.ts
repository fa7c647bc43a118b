// Goal: the CBT map marks written ranges, freezes its snapshot copy at
// take, numbers takes as documented, resets with a new generation on the
// 256th take and on a capacity change, honours markDirty in both copies,
// and serves slices at the edges. Method: a small map (64 KiB blocks over
// 1 MiB + 3 sectors → 17 blocks, the last one short) driven by hand.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CbtMap } from '../../src/shared/cbt-map';
import { trackingGeometry } from '../../src/shared/geometry';
import { DEFAULT_PARAMS } from '../../src/shared/params';
import { Tracker } from '../../src/engine/tracker';

const CAPACITY = 2048 + 3; // sectors: 16 full blocks of 128 sectors, and 3 more
const BLOCK_SECTORS = 128;

function freshMap(): CbtMap {
  return CbtMap.create(CAPACITY, trackingGeometry(CAPACITY, DEFAULT_PARAMS));
}

function snapshotBytes(map: CbtMap): number[] {
  const bytes = new Uint8Array(map.block_count);
  map.readSnapshot(0, bytes);
  return [...bytes];
}

test('geometry and info of a fresh map', () => {
  const map = freshMap();
  assert.is(map.block_count, 17);
  const info = map.info();
  assert.equal({ ...info, generation_id: 'x' }, { block_size: 65536, device_capacity: CAPACITY, block_count: 17, generation_id: 'x', changes_number: 0 });
  assert.match(info.generation_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(snapshotBytes(map), new Array(17).fill(0));
});

test('marks map sector ranges to blocks; take freezes the snapshot copy', () => {
  const map = freshMap();
  map.switchForTake();                       // take 1: changes_number 0, writes now carry 1
  map.mark(0, 1);                            // block 0
  map.mark(BLOCK_SECTORS - 1, 2);            // straddles blocks 0 and 1
  map.mark(CAPACITY - 1, 1);                 // the short last block
  map.mark(5 * BLOCK_SECTORS, 0);            // empty range marks nothing
  assert.equal(snapshotBytes(map), new Array(17).fill(0), 'snapshot copy unchanged until the next take');
  map.switchForTake();                       // take 2
  assert.is(map.changes_number, 1);
  const after2 = snapshotBytes(map);
  assert.equal(after2.map((v, i) => (v ? i : -1)).filter((i) => i >= 0), [0, 1, 16]);
  map.mark(3 * BLOCK_SECTORS, 10 * BLOCK_SECTORS); // blocks 3..12 carry 2 now
  assert.equal(snapshotBytes(map), after2, 'frozen while writes go on');
  map.switchForTake();                       // take 3
  const after3 = snapshotBytes(map);
  assert.equal(after3.slice(0, 4), [1, 1, 0, 2], 'unwritten blocks keep the older number');
  assert.is(after3[12], 2);
  assert.is(after3[13], 0);
  const changedSinceTake2 = after3.map((v, i) => (v > 1 ? i : -1)).filter((i) => i >= 0);
  assert.equal(changedSinceTake2, [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
});

test('the 256th take resets the map with a new generation', () => {
  const map = freshMap();
  const generation = map.generation_id;
  for (let take = 1; take <= 255; take += 1) {
    map.mark(0, 1);
    assert.is(map.switchForTake(), false, `take ${take} does not reset`);
    assert.is(map.changes_number, take - 1);
  }
  assert.is(map.generation_id, generation, 'generation stays for 255 takes');
  map.mark(BLOCK_SECTORS, 1);
  assert.is(snapshotBytes(map)[0], 254);
  assert.is(map.switchForTake(), true, 'take 256 resets');
  assert.is.not(map.generation_id, generation);
  assert.is(map.changes_number, 0);
  assert.is(map.active_number, 1);
  assert.equal(snapshotBytes(map), new Array(17).fill(0));
});

test('markDirty reaches both copies', () => {
  const map = freshMap();
  map.switchForTake();
  map.switchForTake(); // changes_number 1, active 2
  map.markDirty(2 * BLOCK_SECTORS, 1);
  assert.is(snapshotBytes(map)[2], 1, 'the current snapshot copy shows it');
  map.switchForTake();
  assert.is(snapshotBytes(map)[2], 2, 'the next take shows it too');
});

test('slices at the edges', () => {
  const map = freshMap();
  map.switchForTake();
  map.mark(CAPACITY - 1, 1);
  map.switchForTake();
  const tail = new Uint8Array(4);
  assert.is(map.readSnapshot(15, tail), 2, 'a slice past the end is clipped');
  assert.equal([...tail], [0, 1, 0, 0]);
  assert.is(map.readSnapshot(17, tail), 0, 'an empty slice at the end');
  assert.throws(() => map.readSnapshot(18, tail), /past/);
});

test('a capacity change resets the tracker with a new generation', () => {
  const tracker = new Tracker(CAPACITY, DEFAULT_PARAMS);
  const first = tracker.info().generation_id;
  assert.is(tracker.resize(CAPACITY), false);
  assert.is(tracker.resize(CAPACITY * 2), true);
  assert.is.not(tracker.info().generation_id, first);
  assert.is(tracker.info().device_capacity, CAPACITY * 2);
  assert.is(tracker.map.block_count, 33);
});

test('memory: 2 bytes per tracking block plus a fixed header', () => {
  const map = freshMap();
  assert.is(map.buffer.byteLength, 64 + 2 * 17);
});

test.run();

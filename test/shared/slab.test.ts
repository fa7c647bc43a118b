// Goal: the slab hands each slot to one owner at a time, reports
// exhaustion, recycles released slots, and keeps slots aligned.
// Method: exhaust and refill on one thread; then 3 workers allocate and
// free 5 000 times over 4 slots, checking ownership through a shared word.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Slab } from '../../src/shared/slab';
import { runWorker } from '../lib/workers';

test('exhaustion, release, recycle', () => {
  const slab = Slab.create(4096, 3);
  const slots = [slab.tryAlloc(), slab.tryAlloc(), slab.tryAlloc()];
  assert.equal([...slots].sort(), [0, 1, 2]);
  assert.is(slab.tryAlloc(), -1, 'exhausted');
  assert.is(slab.alloc(20), -1, 'bounded wait times out');
  slab.release(1);
  assert.is(slab.tryAlloc(), 1, 'recycled');
  assert.throws(() => slab.release(7), /outside/);
});

test('double release asserts', () => {
  const slab = Slab.create(4096, 2);
  assert.throws(() => slab.release(0), /released twice/);
});

test('views are distinct, slot-sized and aligned to the given offset', () => {
  const slab = Slab.create(8192, 4, () => 512);
  assert.is(slab.view(2).byteLength, 8192);
  assert.is(slab.view(2).byteOffset, 512 + 2 * 8192);
  assert.is(slab.byteOffset(3), 512 + 3 * 8192);
  slab.view(1).fill(0xaa);
  assert.is(slab.view(0)[8191], 0);
  assert.is(slab.view(2)[0], 0);
});

test('3 workers share 4 slots: never two owners', async () => {
  const slab = Slab.create(4096, 4);
  const owners = new SharedArrayBuffer(4 * 4);
  await Promise.all([1, 2, 3].map((me) => runWorker('shared-hammer', { role: 'slab', slab: slab.buffers, rounds: 5000, owners, me })));
  assert.is(slab.free_count, 4, 'every slot came back');
});

test.run();

// Goal: BLOCK_STATUS extents are right: base:allocation one data extent of
// exactly the request; the change context reports runs of tracking blocks
// whose frozen CBT byte is > K, clipped to the request, with REQ_ONE a
// single extent no longer than the request, bounded by the descriptor
// limit and the scratch size, never zero-length; the whole reply has one
// chunk per context with DONE on the last.
// Method: a hand-made map (block 64 KiB, bytes chosen per block) and a
// seeded random map checked against a per-byte model; reply bytes decoded.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { descriptorsPerContext, writeBlockStatusReply } from '../../src/frontends/nbd/block-status';
import {
  ChangeMap, changedExtents, changedSinceName, qemuBitmapName, resolveContextName,
} from '../../src/frontends/nbd/meta-context';
import { testSeed } from '../lib/workers';

const BLOCK = 65536;

function mapOf(bytes: number[], block_bytes = BLOCK): ChangeMap & { reads: number } {
  const data = Uint8Array.from(bytes);
  const map = {
    block_bytes, block_count: data.length, changes_number: 5, reads: 0,
    read(first_block: number, target: Uint8Array): number {
      map.reads += 1;
      const count = Math.max(0, Math.min(target.length, data.length - first_block));
      target.set(data.subarray(first_block, first_block + count));
      return count;
    },
  };
  return map;
}

function extents(map: ChangeMap, since: number, offset: number, length: number, req_one = false, max = 1000, scratch_blocks = 1024): [number, number][] {
  const out = Buffer.alloc(8 * max);
  const count = changedExtents(map, since, offset, length, req_one, max, new Uint8Array(scratch_blocks), out, 0);
  const found: [number, number][] = [];
  for (let i = 0; i < count; i += 1) found.push([out.readUInt32BE(8 * i), out.readUInt32BE(8 * i + 4)]);
  return found;
}

test('names: changed-since K and the QEMU bitmap name resolve only for K < changes_number', () => {
  const offer = { changes_number: 3 };
  assert.equal(resolveContextName(changedSinceName(2), offer), { name: 'ublksnap:changed-since:2', kind: 'changed', since: 2 });
  assert.equal(resolveContextName(qemuBitmapName(0), offer), { name: 'qemu:dirty-bitmap:changed-since-0', kind: 'changed', since: 0 });
  for (const bad of ['ublksnap:changed-since:3', 'ublksnap:changed-since:-1', 'ublksnap:changed-since:01',
    'ublksnap:changed-since:', 'ublksnap:changed-since:1 ', 'qemu:dirty-bitmap:other', 'base:other']) {
    assert.is(resolveContextName(bad, offer), null, bad);
  }
  assert.is(resolveContextName('ublksnap:changed-since:0', { changes_number: null }), null);
  assert.equal(resolveContextName('base:allocation', { changes_number: null })?.kind, 'allocation');
});

test('runs of changed and unchanged blocks, clipped to an unaligned request', () => {
  const map = mapOf([0, 2, 2, 1, 0, 3, 3, 3]);
  // K = 1: changed blocks 1, 2, 5, 6, 7.
  assert.equal(extents(map, 1, 0, 8 * BLOCK), [[BLOCK, 0], [2 * BLOCK, 1], [2 * BLOCK, 0], [3 * BLOCK, 1]]);
  assert.equal(extents(map, 0, 0, 8 * BLOCK), [[BLOCK, 0], [3 * BLOCK, 1], [BLOCK, 0], [3 * BLOCK, 1]]);
  assert.equal(extents(map, 3, 0, 8 * BLOCK), [[8 * BLOCK, 0]]);
  assert.equal(extents(map, 1, BLOCK + 100, 3 * BLOCK), [[2 * BLOCK - 100, 1], [BLOCK + 100, 0]]);
  assert.equal(extents(map, 1, 5 * BLOCK + 7, 10), [[10, 1]]);
});

test('REQ_ONE: one extent, never past the request', () => {
  const map = mapOf([2, 2, 0, 0]);
  assert.equal(extents(map, 1, 100, 4 * BLOCK - 100, true), [[2 * BLOCK - 100, 1]]);
  assert.equal(extents(map, 1, 100, 1000, true), [[1000, 1]]);
  assert.equal(extents(map, 1, 2 * BLOCK, 2 * BLOCK, true), [[2 * BLOCK, 0]]);
});

test('descriptor and scratch bounds shorten the answer but never break it', () => {
  const alternating = mapOf(Array.from({ length: 64 }, (_, i) => i % 2 === 0 ? 5 : 0));
  const limited = extents(alternating, 0, 0, 64 * BLOCK, false, 3);
  assert.equal(limited, [[BLOCK, 1], [BLOCK, 0], [BLOCK, 1]]);
  const all_changed = mapOf(Array.from({ length: 64 }, () => 5));
  const scratch_bound = extents(all_changed, 0, 0, 64 * BLOCK, false, 100, 8);
  assert.equal(scratch_bound, [[8 * BLOCK, 1]], 'only as far as the scratch reached');
  assert.equal(extents(all_changed, 0, 0, 64 * BLOCK, false, 100, 64), [[64 * BLOCK, 1]]);
});

test('a short last block and the map end', () => {
  const map = mapOf([0, 4], BLOCK);
  // Export of 1.5 blocks: the request ends inside the last block.
  assert.equal(extents(map, 0, 0, BLOCK + BLOCK / 2), [[BLOCK, 0], [BLOCK / 2, 1]]);
});

test('random maps against a per-byte model', () => {
  const seed = testSeed('meta-context random maps');
  let state = seed;
  const random = (n: number): number => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state % n;
  };
  const block = 4096;
  for (let round = 0; round < 300; round += 1) {
    const count = 1 + random(200);
    const bytes = Array.from({ length: count }, () => random(4));
    const map = mapOf(bytes, block);
    const since = random(4);
    const offset = random(count * block);
    const length = 1 + random(count * block - offset);
    const found = extents(map, since, offset, length, false, 10_000, 4096);
    let cursor = offset;
    for (const [extent_length, status] of found) {
      assert.ok(extent_length > 0, 'no empty extent');
      for (let byte = cursor; byte < cursor + extent_length; byte += Math.max(1, Math.floor(extent_length / 7))) {
        assert.is(status, bytes[Math.floor(byte / block)]! > since ? 1 : 0, `round ${round} byte ${byte}`);
      }
      cursor += extent_length;
    }
    assert.is(cursor, offset + length, `round ${round}: extents cover the request exactly`);
    for (let i = 1; i < found.length; i += 1) assert.is.not(found[i]![1], found[i - 1]![1], 'neighbours differ');
  }
});

test('a whole reply: one chunk per context in order, DONE on the last only', () => {
  const map = mapOf([0, 3, 0, 0]);
  const handles = Buffer.from('ABCDEFGH');
  const out = Buffer.alloc(4096);
  const contexts = [
    { id: 1, name: 'base:allocation', kind: 'allocation' as const, since: 0 },
    { id: 2, name: 'ublksnap:changed-since:1', kind: 'changed' as const, since: 1 },
  ];
  const bytes = writeBlockStatusReply(out, contexts, { offset: 0, length: 4 * BLOCK, req_one: false }, map, new Uint8Array(16), handles, 0);
  let at = 0;
  const chunks: { flags: number; id: number; descriptors: [number, number][] }[] = [];
  while (at < bytes) {
    assert.is(out.readUInt32BE(at), 0x668e33ef);
    assert.is(out.readUInt16BE(at + 6), 5);
    assert.equal(out.subarray(at + 8, at + 16), handles);
    const length = out.readUInt32BE(at + 16);
    const descriptors: [number, number][] = [];
    for (let d = at + 24; d < at + 20 + length; d += 8) descriptors.push([out.readUInt32BE(d), out.readUInt32BE(d + 4)]);
    chunks.push({ flags: out.readUInt16BE(at + 4), id: out.readUInt32BE(at + 20), descriptors });
    at += 20 + length;
  }
  assert.is(at, bytes);
  assert.equal(chunks, [
    { flags: 0, id: 1, descriptors: [[4 * BLOCK, 0]] },
    { flags: 1, id: 2, descriptors: [[BLOCK, 0], [BLOCK, 1], [2 * BLOCK, 0]] },
  ]);
  assert.is(descriptorsPerContext(1 << 20, 8), 4096);
  assert.is(descriptorsPerContext(1024, 2), Math.floor((512 - 24) / 8));
  assert.throws(() => descriptorsPerContext(40, 2), /cannot hold/);
});

test.run();

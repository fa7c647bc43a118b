// Goal: the store task writes a batch of queued chunks with as few writes
// as their storage slots allow — a batch's first copies get one extent and
// leave in one pwritev whatever volume chunks they are; chunks stored again
// (after an image write) keep their slots and join a write only where their
// slots are adjacent — and the image stays exact: when a batch mixes
// adjacent and scattered chunks, first stores and re-stores; when the
// storage has room for only part of a batch (the rest waits, is stored
// after growth); and when a write fails in the middle of a batch (that
// run's chunks fail, the batch's earlier runs stay stored, its later chunks
// go back to the queue).
// Method: a real DiffArea over a volume file and a storage file (the layout
// the engine builds at take), chunks brought into memory and queued by
// image writes (DiffArea.imageWrite, as the image actor does), and the real
// store task (actors/store.ts) and grow task (actors/grow.ts) run on this
// thread. Every image read is compared with a model: the volume's bytes at
// take with the image writes applied. The failing write is real: the
// storage lives on a tmpfs mounted too small for the slots handed out.

import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import grow from '../../src/actors/grow';
import store from '../../src/actors/store';
import { DiffArea, type AreaNotifier } from '../../src/cow/diff-area';
import { VolumeReader } from '../../src/cow/volume-io';
import { ERRNO_BY_CODE } from '../../src/shared/errors';
import { StorageCounters } from '../../src/shared/storage-counters';
import { SECTOR_BYTES } from '../../src/shared/units';
import { gate, mountTmpfs } from '../lib/system';
import { takenAreaDescriptor, type TestArea } from '../lib/diff-area-fixture';
import { seededRandom } from '../lib/random';

const KiB = 1024;
const CHUNK_SHIFT = 16;
const CHUNK_BYTES = 1 << CHUNK_SHIFT;
const CHUNK_SECTORS = CHUNK_BYTES / SECTOR_BYTES;
const CHUNK_COUNT = 64;
const VOLUME_BYTES = CHUNK_COUNT * CHUNK_BYTES;
/** Enough buffers for every chunk: the flush threshold is never what the tests see. */
const BUFFER_COUNT = CHUNK_COUNT;

/** The notices an area raises; the store task answers none of them (the control plane does). */
const quiet: AreaNotifier = { flush: () => undefined, corrupted: () => undefined, lowSpace: () => undefined };

type Area = TestArea;

/** A volume of random bytes and an area over it, the storage at storage_path with capacity_chunks of room now. */
function makeArea(dir: string, storage_path: string, capacity_chunks: number, limit_chunks: number, seed: number): Area {
  const volume_path = path.join(dir, `volume-${seed}.img`);
  const model = Buffer.alloc(VOLUME_BYTES);
  const random = seededRandom(seed);
  for (let i = 0; i < VOLUME_BYTES; i += 1) model[i] = random() & 0xff;
  const volume_fd = openSync(volume_path, 'w+');
  writeSync(volume_fd, model, 0, VOLUME_BYTES, 0);
  const storage_fd = openSync(storage_path, 'w+');
  const counters = StorageCounters.create(capacity_chunks * CHUNK_SECTORS, limit_chunks * CHUNK_SECTORS, limit_chunks > capacity_chunks);
  const descriptor = takenAreaDescriptor({
    area_id: seed, chunk_shift: CHUNK_SHIFT, chunk_count: CHUNK_COUNT, buffer_count: BUFFER_COUNT, storage_fd, counters,
  });
  return {
    area: new DiffArea(descriptor, quiet),
    descriptor,
    counters,
    volume: new VolumeReader(volume_fd, undefined),
    model,
    close: () => {
      closeSync(volume_fd);
      closeSync(storage_fd);
    },
  };
}

/** An image write of a few bytes into each chunk: the chunk comes into memory and joins the store queue. */
function touch(a: Area, chunks: number[], byte: number): void {
  for (const chunk of chunks) {
    const offset = chunk * CHUNK_BYTES + (chunk * 97) % (CHUNK_BYTES - 16);
    const bytes = Buffer.alloc(16, byte + chunk);
    assert.is(a.area.imageWrite(a.volume, bytes, offset, bytes.length), 0, `image write into chunk ${chunk}`);
    bytes.copy(a.model, offset);
  }
}

function runStore(a: Area) {
  return store({ mode: 'store', area: a.descriptor, volume_fd: a.volume.fd });
}

/** Reads the whole image and compares it with the model, naming the first chunk that differs. */
function assertImageExact(a: Area, what: string): void {
  const image = Buffer.alloc(VOLUME_BYTES);
  assert.is(a.area.imageRead(a.volume, image, 0, VOLUME_BYTES), 0, `${what}: image read`);
  if (image.equals(a.model)) return;
  for (let chunk = 0; chunk < CHUNK_COUNT; chunk += 1) {
    const range = [chunk * CHUNK_BYTES, (chunk + 1) * CHUNK_BYTES] as const;
    if (!image.subarray(...range).equals(a.model.subarray(...range))) assert.unreachable(`${what}: chunk ${chunk} of the image differs`);
  }
}

/** The chunk's bytes as the storage holds them at its slot. */
function storedBytes(a: Area, chunk: number): Buffer {
  const bytes = Buffer.alloc(CHUNK_BYTES);
  readSync(a.descriptor.storage_fd, bytes, 0, CHUNK_BYTES, a.area.table.offset(chunk) * SECTOR_BYTES);
  return bytes;
}

function states(a: Area, chunks: number[]): string[] {
  const names = ['NEW', 'IN_MEMORY', 'STORED', 'FAILED'];
  return chunks.map((chunk) => names[a.area.table.state(chunk)]!);
}

let dir = '';

test.before(() => {
  dir = mkdtempSync('/dev/shm/ublksnap-store-batch-');
});

test.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('adjacent queued chunks leave in one vectored write', () => {
  const a = makeArea(dir, path.join(dir, 'adjacent.diff'), CHUNK_COUNT, CHUNK_COUNT, 1);
  try {
    const chunks = [8, 9, 10, 11, 12, 13, 14, 15];
    touch(a, chunks, 0x10);
    assert.equal(states(a, chunks), chunks.map(() => 'IN_MEMORY'));
    const result = runStore(a);
    assert.equal({ stored: result.stored, writes: result.writes, error: result.error, no_room: result.no_room },
      { stored: 8, writes: 1, error: undefined, no_room: false });
    assert.equal(states(a, chunks), chunks.map(() => 'STORED'));
    for (const chunk of chunks) {
      assert.ok(storedBytes(a, chunk).equals(a.model.subarray(chunk * CHUNK_BYTES, (chunk + 1) * CHUNK_BYTES)), `chunk ${chunk} stored whole`);
    }
    assert.is(a.area.slab.free_count, BUFFER_COUNT, 'every buffer came back');
    assertImageExact(a, 'after the store');
  } finally {
    a.close();
  }
});

test('a batch mixing adjacent and scattered chunks, first stores and re-stores: fewest writes, exact image', () => {
  const a = makeArea(dir, path.join(dir, 'mixed.diff'), CHUNK_COUNT, CHUNK_COUNT, 2);
  try {
    // Queued out of order and scattered over the volume: the first stores get one extent, one write.
    touch(a, [40, 3, 4, 5, 20, 21, 7], 0x20);
    let result = runStore(a);
    assert.equal([result.stored, result.writes], [7, 1], 'seven first stores, one write');
    // Slots follow the sorted batch: 3 4 5 7 20 21 40 → 0 1 2 3 4 5 6.
    assert.equal([3, 4, 5, 7, 20, 21, 40].map((chunk) => a.area.table.offset(chunk) / CHUNK_SECTORS), [0, 1, 2, 3, 4, 5, 6]);
    assertImageExact(a, 'after the first batch');
    // Re-stores keep their slots (4, 5 adjacent; 21 alone), a first store (0) gets the next slot (7).
    touch(a, [21, 5, 0, 4], 0x40);
    result = runStore(a);
    assert.equal([result.stored, result.writes], [4, 3], 'slot 7 | slots 1-2 | slot 5: three writes');
    assert.is(a.area.table.offset(0) / CHUNK_SECTORS, 7);
    assert.equal(states(a, [0, 3, 4, 5, 7, 20, 21, 40]), Array(8).fill('STORED'));
    assertImageExact(a, 'after the second batch');
    assert.is(a.counters.filled_sectors, 8 * CHUNK_SECTORS, 'one slot per chunk, once');
  } finally {
    a.close();
  }
});

test('room for part of a batch: the rest waits in the queue and is stored after growth', () => {
  // Growable: 3 chunks of room now, 16 at the limit; no growth step under way, so nothing waits.
  const a = makeArea(dir, path.join(dir, 'partial.diff'), 3, 16, 3);
  try {
    const chunks = [1, 2, 6, 9, 10];
    touch(a, chunks, 0x30);
    let result = runStore(a);
    assert.equal({ stored: result.stored, no_room: result.no_room }, { stored: 3, no_room: true });
    assert.equal(states(a, chunks), ['STORED', 'STORED', 'STORED', 'IN_MEMORY', 'IN_MEMORY']);
    assert.is(a.area.store_queue.count, 2, 'the two without room are queued again');
    assertImageExact(a, 'while two chunks wait for room');
    // The grow actor's step, as the control plane starts it: asked for first, then grown.
    assert.is(a.counters.request(13 * CHUNK_SECTORS), 16 * CHUNK_SECTORS);
    const grown = grow({ storage_fd: a.descriptor.storage_fd, storage_counters: a.counters.buffer, target_sectors: 16 * CHUNK_SECTORS });
    assert.is(grown.error, undefined);
    result = runStore(a);
    assert.equal({ stored: result.stored, writes: result.writes, no_room: result.no_room }, { stored: 2, writes: 1, no_room: false });
    assert.equal(states(a, chunks), chunks.map(() => 'STORED'));
    assertImageExact(a, 'after growth');
  } finally {
    a.close();
  }
});

const root_suite = gate(test, 'store batch on a full filesystem', { root: true, tools: ['mount'] });

root_suite.test('a write failing mid-batch fails its run only: earlier runs stay stored, later chunks go back to the queue', () => {
  // The storage's filesystem has pages for three slots; the counters (as if
  // fallocate had reserved more) hand out six, so the writes past the
  // third slot meet a full filesystem.
  const fs = mountTmpfs(3 * CHUNK_BYTES + 4 * KiB);
  const a = makeArea(dir, path.join(fs.path, 'full.diff'), 6, 6, 4);
  try {
    touch(a, [1, 2, 30], 0x50);
    let result = runStore(a);
    assert.equal([result.stored, result.writes], [3, 1]);
    assert.equal([1, 2, 30].map((chunk) => a.area.table.offset(chunk) / CHUNK_SECTORS), [0, 1, 2]);
    // Re-stores of 1, 2 (slots 0-1) and 30 (slot 2) around first stores of 10, 11 (slots 3-4, no pages left).
    touch(a, [30, 11, 2, 10, 1], 0x60);
    result = runStore(a);
    assert.is(result.error?.errno, ERRNO_BY_CODE.ENOSPC, `the failing write reports ENOSPC: ${JSON.stringify(result.error)}`);
    assert.equal([result.stored, result.writes], [2, 2], 'slots 0-1 written, slots 3-4 failed, slot 2 not tried');
    assert.equal(states(a, [1, 2, 10, 11, 30]), ['STORED', 'STORED', 'FAILED', 'FAILED', 'IN_MEMORY']);
    assert.is(a.area.store_queue.count, 1, 'chunk 30 is queued again');
    for (const chunk of [1, 2]) {
      assert.ok(storedBytes(a, chunk).equals(a.model.subarray(chunk * CHUNK_BYTES, (chunk + 1) * CHUNK_BYTES)), `chunk ${chunk} stored with its image write`);
    }
    // The control plane now breaks the snapshot; a drop task frees what is left.
    a.area.corrupt(ERRNO_BY_CODE.ENOSPC, 'test: storage write failed');
    result = store({ mode: 'drop', area: a.descriptor, volume_fd: a.volume.fd });
    assert.is(result.dropped, 1);
    assert.is(a.area.slab.free_count, BUFFER_COUNT, 'every buffer came back');
  } finally {
    a.close();
    fs.unmount();
  }
});

test.run();

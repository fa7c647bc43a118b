// Goal: the warm actor (actors/warm.ts) makes the pages growth reserved in
// a storage on tmpfs real memory without changing a byte: every page of
// the range is data afterwards (lseek SEEK_DATA; a page fallocated and
// never written is a hole), a chunk already stored in the range keeps its
// bytes, warming starts at the writers' fill cursor, stops at once for a
// destroyed or broken snapshot, and a descriptor it cannot map is an error
// in the result, never an exception. Then through the engine: a snapshot
// whose storage is on tmpfs has its first step warmed after take
// (warmed_sectors in the status reaches the capacity), one on another
// filesystem never. Where the memory is backed already, warming samples
// pieces instead of warming each (nextStride), deterministic here with
// every piece taken for backed.
// Method: real files on /dev/shm, the warm task on this thread; the engine
// fixture on /dev/shm and a storage in the OS temp dir (not tmpfs here).

import { closeSync, mkdtempSync, openSync, readSync, rmSync, statfsSync, truncateSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import warm, { nextStride } from '../../src/actors/warm';
import type { WarmTask } from '../../src/actors/messages';
import { fallocate, seekData } from '../../src/native/index';
import { createSnapshotControl, SnapshotStateCode, SnapshotWord } from '../../src/shared/snapshot-control';
import { StorageCounters } from '../../src/shared/storage-counters';
import { SECTOR_BYTES } from '../../src/shared/units';
import { startFixture } from '../lib/engine-fixture';

const MiB = 1 << 20;
const PAGE = 4096;
/** The warm actor's piece: 4 MiB. */
const PIECE_BYTES = 4 * MiB;
/** Three pieces of 4 MiB and a page. */
const STORAGE_BYTES = 12 * MiB + PAGE;
const STORAGE_SECTORS = STORAGE_BYTES / SECTOR_BYTES;
const TMPFS_MAGIC = 0x01021994;

let dir: string;

test.before(() => {
  dir = mkdtempSync('/dev/shm/ublksnap-warm-');
});

test.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A storage file fallocated whole (as growth leaves it) and counters that say so. */
function reservedStorage(name: string): { fd: number; counters: StorageCounters } {
  const fd = openSync(path.join(dir, name), 'w+');
  fallocate(fd, 0, STORAGE_BYTES, 0);
  const counters = StorageCounters.create(STORAGE_SECTORS, STORAGE_SECTORS, true, true);
  return { fd, counters };
}

/** A task over the whole storage; backed_ns_per_mib 0: no piece counts as backed, every one is warmed. */
function task(fd: number, counters: StorageCounters, control = createSnapshotControl(), backed_ns_per_mib = 0): WarmTask {
  return {
    storage_fd: fd, storage_counters: counters.buffer, snapshot_control: control.buffer as SharedArrayBuffer,
    from_sectors: 0, to_sectors: counters.capacity_sectors, background: true, backed_ns_per_mib,
  };
}

/** The pages of [from, to) that read as a hole (never written). */
function holePages(fd: number, from: number, to: number): number {
  let holes = 0;
  for (let offset = from; offset < to; offset += PAGE) {
    if (seekData(fd, offset) !== offset) holes += 1;
  }
  return holes;
}

test('every page of the range becomes data; a chunk already in it keeps its bytes', () => {
  const { fd, counters } = reservedStorage('whole.diff');
  try {
    const stamp = Buffer.alloc(64 * 1024, 0x5a);
    writeSync(fd, stamp, 0, stamp.length, 5 * MiB);
    assert.is(holePages(fd, 0, STORAGE_BYTES), STORAGE_BYTES / PAGE - stamp.length / PAGE, 'before: only the stamped chunk is data');
    const result = warm(task(fd, counters));
    assert.equal(result, { warmed_sectors: STORAGE_SECTORS, skipped_sectors: 0 });
    assert.is(holePages(fd, 0, STORAGE_BYTES), 0, 'after: no hole left');
    const back = Buffer.alloc(stamp.length + 2 * PAGE);
    readSync(fd, back, 0, back.length, 5 * MiB - PAGE);
    assert.ok(back.subarray(0, PAGE).every((b) => b === 0), 'the page before the chunk reads zeros');
    assert.ok(back.subarray(PAGE, PAGE + stamp.length).equals(stamp), 'the chunk is unchanged');
    assert.ok(back.subarray(PAGE + stamp.length).every((b) => b === 0), 'the page after the chunk reads zeros');
  } finally {
    closeSync(fd);
  }
});

test('warming starts at the fill cursor: the writers made the pages behind it real', () => {
  const { fd, counters } = reservedStorage('filled.diff');
  try {
    const filled_sectors = (8 * MiB) / SECTOR_BYTES;
    assert.is(counters.allocate(filled_sectors), 0);
    assert.equal(warm(task(fd, counters)), { warmed_sectors: STORAGE_SECTORS, skipped_sectors: 0 });
    assert.is(holePages(fd, 0, 8 * MiB), 8 * MiB / PAGE, 'behind the cursor: untouched');
    assert.is(holePages(fd, 8 * MiB, STORAGE_BYTES), 0, 'ahead of it: warmed');
  } finally {
    closeSync(fd);
  }
});

test('after backed pieces warming samples: 1, 2, 4 … 16 pieces stepped over, every piece again after one that was not', () => {
  const strides: number[] = [];
  let stride = 0;
  for (const backed of [true, true, true, true, true, true, false, true]) {
    stride = nextStride(stride, backed);
    strides.push(stride);
  }
  assert.equal(strides, [1, 2, 4, 8, 16, 16, 0, 1]);
});

test('memory that is all backed is sampled, not warmed piece by piece', () => {
  const fd = openSync(path.join(dir, 'backed.diff'), 'w+');
  const pieces = 16;
  try {
    fallocate(fd, 0, pieces * PIECE_BYTES, 0);
    const counters = StorageCounters.create(pieces * PIECE_BYTES / SECTOR_BYTES, pieces * PIECE_BYTES / SECTOR_BYTES, true, true);
    // Every piece "backed": warm 0, over 1, warm 2, over 3-4, warm 5, over 6-9, warm 10, over the 5 left.
    const result = warm(task(fd, counters, createSnapshotControl(), Number.POSITIVE_INFINITY));
    assert.equal(result, { warmed_sectors: counters.capacity_sectors, skipped_sectors: 12 * PIECE_BYTES / SECTOR_BYTES });
    const warmed: number[] = [];
    for (let piece = 0; piece < pieces; piece += 1) {
      if (holePages(fd, piece * PIECE_BYTES, (piece + 1) * PIECE_BYTES) === 0) warmed.push(piece);
    }
    assert.equal(warmed, [0, 2, 5, 10]);
  } finally {
    closeSync(fd);
  }
});

test('a destroyed or broken snapshot is not warmed', () => {
  for (const state of [SnapshotStateCode.DESTROYING, SnapshotStateCode.CORRUPTED]) {
    const { fd, counters } = reservedStorage(`state-${state}.diff`);
    try {
      const control = createSnapshotControl();
      Atomics.store(control, SnapshotWord.STATE, state);
      assert.equal(warm(task(fd, counters, control)), { warmed_sectors: 0, skipped_sectors: 0 });
      assert.is(holePages(fd, 0, STORAGE_BYTES), STORAGE_BYTES / PAGE, `state ${state}: nothing warmed`);
    } finally {
      closeSync(fd);
    }
  }
});

test('a descriptor that cannot be mapped writable is an error in the result', () => {
  const file = path.join(dir, 'read-only.diff');
  closeSync(openSync(file, 'w'));
  truncateSync(file, STORAGE_BYTES);
  const fd = openSync(file, 'r');
  try {
    const counters = StorageCounters.create(STORAGE_SECTORS, STORAGE_SECTORS, true, true);
    const result = warm(task(fd, counters));
    assert.is(result.warmed_sectors, 0);
    assert.is(result.error?.code, 'EACCES', JSON.stringify(result));
  } finally {
    closeSync(fd);
  }
});

test('through the engine: a tmpfs storage is warmed after take, a storage elsewhere never', async () => {
  const elsewhere = mkdtempSync(path.join(os.tmpdir(), 'ublksnap-warm-'));
  assert.is.not(statfsSync(elsewhere).type, TMPFS_MAGIC, `${os.tmpdir()} is not tmpfs on the machines the tests run on`);
  const fixture = await startFixture();
  try {
    const { engine } = fixture;
    await engine.attach(fixture.file('a.img', 64 * MiB), { name: 'a' });
    await engine.attach(fixture.file('b.img', 64 * MiB), { name: 'b' });
    const in_memory = await engine.snapshotCreate({ volumes: ['a'], storage: `${fixture.dir}/a.diff`, limit_bytes: 256 * MiB });
    await engine.snapshotTake(in_memory);
    const deadline = Date.now() + 10_000;
    let storage = engine.snapshotInfo(in_memory).storage;
    while (storage.warmed_sectors < storage.capacity_sectors && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      storage = engine.snapshotInfo(in_memory).storage;
    }
    assert.is(storage.in_memory, true);
    assert.ok(storage.capacity_sectors > 0, 'the first step was reserved');
    assert.is(storage.warmed_sectors, storage.capacity_sectors, 'the first step was warmed');
    assert.ok(storage.warm_skipped_sectors <= storage.warmed_sectors);

    const on_disk = await engine.snapshotCreate({ volumes: ['b'], storage: `${elsewhere}/b.diff`, limit_bytes: 256 * MiB });
    await engine.snapshotTake(on_disk);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const other = engine.snapshotInfo(on_disk).storage;
    assert.is(other.in_memory, false);
    assert.is(other.warmed_sectors, 0, 'nothing to warm off tmpfs');
    await engine.snapshotDestroy(in_memory);
    await engine.snapshotDestroy(on_disk);
  } finally {
    await fixture.close();
    rmSync(elsewhere, { recursive: true, force: true });
  }
});

test.run();

// Goal: clone ahead (cow/diff-area.ts) — a first touch that continues a
// sequential stream clones the NEW chunks after its own in the same ioctl —
// keeps every promise of the clone path: the image is the pre-take data for
// chunks cloned ahead and written afterwards (whole, partly, through the
// image), every chunk takes exactly one slot (filled = saved chunks × slot,
// however growth and fallbacks interleave), random first touches and a
// stride of small writes (one per chunk: sequential chunks, not contiguous
// bytes) clone nothing ahead and copy the chunks they cover only in part
// (so the volume's extents stay whole: fiemap before and after), and a snapshot
// whose limit is below what its chunks need clones nothing ahead, so it
// overflows exactly where copying puts it.
// Method: an in-process engine beside a loop-mounted XFS (reflink=1), 64 KiB
// chunks; counts from snapshotInfo (cloned, cloned_ahead, filled); data
// compared byte for byte.

import path from 'node:path';
import { closeSync, fsyncSync, openSync, truncateSync, writeFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fileExtents } from '../../src/native/index';
import { gate } from '../lib/system';
import { startXfsEngine, type XfsEngine } from '../lib/xfs-engine';

const KiB = 1024;
const MiB = 1024 * KiB;
const SECTOR_BYTES = 512;
const XFS_IMAGE_BYTES = 512 * MiB;
const CHUNK_BYTES = 64 * KiB;
/** A stream clones 16 MiB ahead in any chunk size (docs/design.md, "Clone ahead"): 256 chunks of 64 KiB. */
const CLONE_AHEAD_CHUNKS = (16 * MiB) / CHUNK_BYTES;
const SLOT_SECTORS = CHUNK_BYTES / SECTOR_BYTES;
/** Two ahead runs' worth of chunks. */
const CHUNK_COUNT = 2 * CLONE_AHEAD_CHUNKS;
const VOLUME_BYTES = CHUNK_COUNT * CHUNK_BYTES;
const SMALL_WRITE_BYTES = 4 * KiB;
const ENOSPC = 28;

const suite = gate(test, 'clone ahead on XFS', { root: true, tools: ['losetup', 'mkfs.xfs', 'mount', 'umount'] });
let fixture: XfsEngine | undefined;
let volume_serial = 0;

function pattern(seed: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  for (let i = 0; i < length; i += 1) buffer[i] = (i * 131 + seed * 7 + (i >> 12)) & 0xff;
  return buffer;
}

function file(name: string, size_bytes: number): string {
  const target = path.join(fixture!.mount.path, name);
  writeFileSync(target, '');
  truncateSync(target, size_bytes);
  return target;
}

/** A fresh volume holding `data`, attached; returns its name and handle. */
async function volumeWith(data: Buffer): Promise<{ name: string; handle: number }> {
  const name = `ahead${volume_serial++}`;
  await fixture!.engine.attach(file(`${name}.img`, data.length), { name });
  const handle = fixture!.engine.resolveExport(name).handle;
  await fixture!.client.write(handle, 0, data);
  return { name, handle };
}

/** A storage file as large as every chunk's slot: growth never runs, so counts are exact. */
function fullSizeStorage(name: string): string {
  const target = file(`${name}.diff`, CHUNK_COUNT * CHUNK_BYTES);
  closeSync(openSync(target, 'r'));
  return target;
}

/** The volume file's extents once its data is on the filesystem (XFS places delayed writes at write-back). */
function volumeExtents(name: string): number {
  const fd = openSync(path.join(fixture!.mount.path, `${name}.img`), 'r+');
  try {
    fsyncSync(fd);
    return fileExtents(fd).length;
  } finally {
    closeSync(fd);
  }
}

function areaOf(id: string) {
  return fixture!.engine.snapshotInfo(id).chunks[0]!;
}

suite.before(async () => {
  fixture = await startXfsEngine('clone-ahead-xfs', XFS_IMAGE_BYTES);
});

suite.after(async () => {
  await fixture?.dispose();
});

suite.test('a sequential first touch clones ahead; chunks cloned ahead and then written read as before take', async () => {
  const e = fixture!.engine;
  const c = fixture!.client;
  const before = pattern(1, VOLUME_BYTES);
  const { name, handle } = await volumeWith(before);
  const id = await e.snapshotCreate({ volumes: [name], storage: fullSizeStorage(name), limit_bytes: 64 * MiB });
  await e.snapshotTake(id);
  const after = Buffer.from(before);
  const write = async (offset: number, length: number, seed: number): Promise<void> => {
    const data = pattern(seed, length);
    await c.write(handle, offset, data);
    data.copy(after, offset);
  };

  // Chunk 0 whole: no stream yet (nothing ended at a chunk's end), so it is cloned alone.
  await write(0, CHUNK_BYTES, 2);
  let area = areaOf(id);
  assert.equal([area.cbw, area.cloned, area.cloned_ahead, area.copied], ['reflink', 1, 0, 0],
    `the first write clones its chunk, nothing ahead: ${JSON.stringify(area)}`);
  // A small write where that one ended continues the stream: its chunk and the next ones are cloned.
  await write(CHUNK_BYTES, SMALL_WRITE_BYTES, 3);
  area = areaOf(id);
  assert.equal([area.cloned, area.cloned_ahead, area.copied], [2 + CLONE_AHEAD_CHUNKS, CLONE_AHEAD_CHUNKS, 0],
    `the stream's write clones its chunk and ${CLONE_AHEAD_CHUNKS} ahead: ${JSON.stringify(area)}`);
  // Inside the ahead run: partial writes, a write across two ahead chunks, the run's last chunk.
  await write(2 * CHUNK_BYTES + 512, 3 * 512, 4);
  await write(7 * CHUNK_BYTES - SMALL_WRITE_BYTES, 2 * SMALL_WRITE_BYTES, 5);
  await write((CLONE_AHEAD_CHUNKS + 1) * CHUNK_BYTES, CHUNK_BYTES, 6);
  area = areaOf(id);
  assert.is(area.cloned, 2 + CLONE_AHEAD_CHUNKS, 'writes into chunks cloned ahead save nothing more');
  // The write that reaches the chunk after the run continues the stream: the rest is cloned ahead.
  await write((CLONE_AHEAD_CHUNKS + 2) * CHUNK_BYTES, SMALL_WRITE_BYTES, 7);
  area = areaOf(id);
  assert.equal([area.cloned, area.cloned_ahead, area.copied], [CHUNK_COUNT, CHUNK_COUNT - 3, 0],
    `the second run reaches the end of the volume: ${JSON.stringify(area)}`);
  await write(0, VOLUME_BYTES, 8);

  const info = e.snapshotInfo(id);
  assert.is(info.storage.filled_sectors, CHUNK_COUNT * SLOT_SECTORS, 'each chunk took exactly one slot');
  assert.is(area.stored, CHUNK_COUNT, 'every chunk is STORED');
  assert.is(info.error_code, 0);
  const image = e.resolveExport(`${name}@${id}`).handle;
  assert.ok((await c.read(image, 0, VOLUME_BYTES)).equals(before), 'the image is the pre-take data');
  assert.ok((await c.read(handle, 0, VOLUME_BYTES)).equals(after), 'the volume has every write');
  // An image write into a chunk cloned ahead and then overwritten.
  const scribble = pattern(8, 8 * KiB);
  const scribble_at = 100 * CHUNK_BYTES + 512;
  await c.write(image, scribble_at, scribble);
  scribble.copy(before, scribble_at);
  assert.ok((await c.read(image, 0, VOLUME_BYTES)).equals(before), 'the image write lands in the image');
  assert.ok((await c.read(handle, 0, VOLUME_BYTES)).equals(after), 'and never on the volume');
  await e.snapshotDestroy(id);
  await e.detach(name);
});

suite.test('first touches that cover part of a chunk copy it, clone nothing ahead, and leave the volume\'s extents whole', async () => {
  const e = fixture!.engine;
  const c = fixture!.client;
  const before = pattern(9, VOLUME_BYTES);
  const { name, handle } = await volumeWith(before);
  const extents_before = volumeExtents(name);
  const id = await e.snapshotCreate({ volumes: [name], storage: fullSizeStorage(name), limit_bytes: 64 * MiB });
  await e.snapshotTake(id);
  // None of these covers the chunk after the previous one's, nor a chunk whole.
  const chunks = [5, 3, 9, 20, 7, 90, 2];
  for (const chunk of chunks) await c.write(handle, chunk * CHUNK_BYTES + 512, pattern(chunk, SMALL_WRITE_BYTES));
  let area = areaOf(id);
  assert.equal([area.cloned, area.cloned_ahead, area.copied], [0, 0, chunks.length], JSON.stringify(area));
  // One write over chunks 40-43 covering 41 and 42 whole: those are cloned, its two partial ends copied.
  await c.write(handle, 40 * CHUNK_BYTES + 512, pattern(40, 3 * CHUNK_BYTES));
  area = areaOf(id);
  assert.equal([area.cloned, area.cloned_ahead, area.copied], [2, 0, chunks.length + 2], JSON.stringify(area));
  const image = e.resolveExport(`${name}@${id}`).handle;
  assert.ok((await c.read(image, 0, VOLUME_BYTES)).equals(before), 'the image is the pre-take data');
  // A write into a cloned chunk's shared extent moves its blocks and splits the volume's extent
  // around them (two more pieces each); the copied chunks were written in place. Only the
  // whole cloned pair may have moved.
  const extents_after = volumeExtents(name);
  assert.ok(extents_after - extents_before <= 2,
    `the volume went from ${extents_before} to ${extents_after} extents: partial first touches split it`);
  await e.snapshotDestroy(id);
  await e.detach(name);
});

suite.test('one small write at the start of each chunk, ascending, is no stream: every chunk is copied, the extents stay whole', async () => {
  const e = fixture!.engine;
  const c = fixture!.client;
  const before = pattern(13, VOLUME_BYTES);
  const { name, handle } = await volumeWith(before);
  const extents_before = volumeExtents(name);
  const id = await e.snapshotCreate({ volumes: [name], storage: fullSizeStorage(name), limit_bytes: 64 * MiB });
  await e.snapshotTake(id);
  // Each write starts in the chunk after the previous one's, but not where it ended.
  for (let chunk = 0; chunk < CHUNK_COUNT; chunk += 1) await c.write(handle, chunk * CHUNK_BYTES, pattern(chunk, SMALL_WRITE_BYTES));
  const area = areaOf(id);
  assert.equal([area.cloned, area.cloned_ahead, area.copied], [0, 0, CHUNK_COUNT], JSON.stringify(area));
  const image = e.resolveExport(`${name}@${id}`).handle;
  assert.ok((await c.read(image, 0, VOLUME_BYTES)).equals(before), 'the image is the pre-take data');
  const extents_after = volumeExtents(name);
  assert.ok(extents_after - extents_before <= 1,
    `the volume went from ${extents_before} to ${extents_after} extents: writes landed in cloned chunks`);
  await e.snapshotDestroy(id);
  await e.detach(name);
});

suite.test('with growth: the ahead runs stay within the spare room, each chunk takes one slot, the image is exact', async () => {
  const e = fixture!.engine;
  const c = fixture!.client;
  const before = pattern(10, VOLUME_BYTES);
  const { name, handle } = await volumeWith(before);
  // A storage the engine creates and grows in diff_storage_minimum steps (1 MiB here: 16 chunks).
  const id = await e.snapshotCreate({ volumes: [name], storage: path.join(fixture!.mount.path, `${name}.diff`), limit_bytes: 64 * MiB });
  await e.snapshotTake(id);
  const after = pattern(11, VOLUME_BYTES);
  for (let offset = 0; offset < VOLUME_BYTES; offset += SMALL_WRITE_BYTES * 4) {
    await c.write(handle, offset, after.subarray(offset, offset + SMALL_WRITE_BYTES * 4));
  }
  const info = e.snapshotInfo(id);
  const area = info.chunks[0]!;
  assert.is(area.cloned + area.copied, CHUNK_COUNT, `every chunk saved once: ${JSON.stringify(area)}`);
  assert.ok(area.cloned_ahead > 0, `some chunks were cloned ahead: ${JSON.stringify(area)}`);
  assert.is(info.storage.filled_sectors, CHUNK_COUNT * SLOT_SECTORS, 'each chunk took exactly one slot');
  assert.ok(info.storage.capacity_sectors <= CHUNK_COUNT * SLOT_SECTORS, 'growth stopped at the need');
  assert.is(info.error_code, 0);
  const image = e.resolveExport(`${name}@${id}`).handle;
  assert.ok((await c.read(image, 0, VOLUME_BYTES)).equals(before), 'the image is the pre-take data');
  assert.ok((await c.read(handle, 0, VOLUME_BYTES)).equals(after), 'the volume has every write');
  await e.snapshotDestroy(id);
  await e.detach(name);
});

suite.test('a limit below the need: nothing cloned ahead, overflow where copying puts it, no volume write fails', async () => {
  const e = fixture!.engine;
  const c = fixture!.client;
  const before = pattern(12, VOLUME_BYTES);
  const { name, handle } = await volumeWith(before);
  /** Room for this many chunks, then overflow. */
  const room_chunks = 16;
  const id = await e.snapshotCreate({
    volumes: [name], storage: path.join(fixture!.mount.path, `${name}.diff`), limit_bytes: room_chunks * CHUNK_BYTES,
  });
  await e.snapshotTake(id);
  const after = pattern(13, VOLUME_BYTES);
  for (let chunk = 0; chunk < room_chunks; chunk += 1) {
    await c.write(handle, chunk * CHUNK_BYTES, after.subarray(chunk * CHUNK_BYTES, (chunk + 1) * CHUNK_BYTES));
  }
  let info = e.snapshotInfo(id);
  assert.equal([info.state, info.error_code, info.chunks[0]!.cloned_ahead], ['taken', 0, 0],
    `the first ${room_chunks} chunks fit, none cloned ahead: ${JSON.stringify(info.chunks[0])}`);
  const image = e.resolveExport(`${name}@${id}`).handle;
  assert.ok((await c.read(image, 0, VOLUME_BYTES)).equals(before), 'the image is the pre-take data while it fits');
  // The next first touch finds no room: the snapshot breaks, the write does not.
  await c.write(handle, room_chunks * CHUNK_BYTES, after.subarray(room_chunks * CHUNK_BYTES));
  info = e.snapshotInfo(id);
  assert.equal([info.state, info.error_code], ['corrupted', ENOSPC], `overflow at chunk ${room_chunks}: ${JSON.stringify(info)}`);
  assert.ok((await c.read(handle, 0, VOLUME_BYTES)).equals(after), 'every volume write landed');
  await e.snapshotDestroy(id);
  await e.detach(name);
});

test.run();

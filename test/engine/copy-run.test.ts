// Goal: on the copying path, a write's adjacent NEW chunks are saved
// straight to the difference storage while the write waits (one extent,
// one copy_file_range per run of up to COPY_RUN_BYTES_MAX; one read and
// one write where the kernel cannot copy between the two files, as from
// tmpfs to ext4): when the write
// completes they are STORED, with nothing in memory and nothing queued for
// the store. The image reads the bytes of take for every chunk — after
// aligned runs, runs longer than the run buffer, an unaligned write that
// mixes saved and NEW chunks, and a short last chunk — and the volume
// holds every write. Where the storage has no room yet, the writer grows
// a slice of the pending step itself or (when it cannot) the chunks go
// through chunk buffers and the store queue, and end the same.
// Method: the in-process engine (64 KiB chunks) on /dev/shm, a volume of
// seeded random bytes whose size is not a whole number of chunks; the
// storage an existing file already as large as the volume (room from the
// start, so the direct path is deterministic), on /dev/shm or in the OS
// temporary directory (ext4 here), or a new file (no room at take: the
// first writes race the first growth step). Image and volume
// read back through the engine and compared byte for byte with models.

import { mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { COPY_RUN_BYTES_MAX } from '../../src/cow/diff-area';
import { randomBytes, seededRandom, startFixture, type Fixture } from '../lib/engine-fixture';

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK_BYTES = 64 * KiB;
/** 4 MiB and a short last chunk of 12 KiB. */
const VOLUME_BYTES = 4 * MiB + 12 * KiB;
const SEED = 15;
let fixture: Fixture;

test.before(async () => {
  fixture = await startFixture();
});

test.after(async () => {
  await fixture?.close();
});

interface Case {
  volume: number;
  image: number;
  id: string;
  /** The volume at take: what the image must read. */
  at_take: Buffer;
  /** The volume as the writes leave it. */
  now: Buffer;
}

async function takeCase(name: string, storage_ready: boolean, storage_dir = fixture.dir): Promise<Case> {
  const { engine, client } = fixture;
  const at_take = randomBytes(seededRandom(SEED), VOLUME_BYTES);
  await engine.attach(fixture.file(`${name}.img`, VOLUME_BYTES), { name });
  await client.write(engine.resolveExport(name).handle, 0, at_take);
  const storage = path.join(storage_dir, `${name}.diff`);
  // An existing file is used at its size: room for every chunk from the start.
  if (storage_ready) writeFileSync(storage, Buffer.alloc(VOLUME_BYTES + MiB));
  const id = await engine.snapshotCreate({ volumes: [name], storage, limit_bytes: 2 * VOLUME_BYTES });
  await engine.snapshotTake(id);
  return { volume: engine.resolveExport(name).handle, image: engine.resolveExport(`${name}@${id}`).handle, id, at_take, now: Buffer.from(at_take) };
}

async function write(c: Case, offset: number, length: number, byte: number): Promise<void> {
  const data = Buffer.alloc(length, byte);
  await fixture.client.write(c.volume, offset, data);
  data.copy(c.now, offset);
}

async function assertExact(c: Case, what: string): Promise<void> {
  const image = await fixture.client.read(c.image, 0, VOLUME_BYTES);
  for (let offset = 0; offset < VOLUME_BYTES; offset += CHUNK_BYTES) {
    const end = Math.min(offset + CHUNK_BYTES, VOLUME_BYTES);
    if (!image.subarray(offset, end).equals(c.at_take.subarray(offset, end))) {
      assert.unreachable(`${what}: image chunk ${offset / CHUNK_BYTES} is not the chunk at take`);
    }
  }
  const volume = await fixture.client.read(c.volume, 0, VOLUME_BYTES);
  assert.ok(volume.equals(c.now), `${what}: the volume holds every write`);
}

function chunks(c: Case) {
  return fixture.engine.snapshotInfo(c.id).chunks[0]!;
}

async function savedStraightToStorage(c: Case): Promise<void> {
  await write(c, 0, MiB, 0x11);
  let info = chunks(c);
  assert.equal({ stored: info.stored, in_memory: info.in_memory, queued: info.queued, copied: info.copied },
    { stored: 16, in_memory: 0, queued: 0, copied: 16 }, '16 chunks of one 1 MiB write');
  // Longer than the run buffer: several runs, each straight to the storage.
  await write(c, MiB, COPY_RUN_BYTES_MAX + 3 * CHUNK_BYTES, 0x22);
  info = chunks(c);
  const saved = 16 + COPY_RUN_BYTES_MAX / CHUNK_BYTES + 3;
  assert.equal({ stored: info.stored, in_memory: info.in_memory, queued: info.queued }, { stored: saved, in_memory: 0, queued: 0 });
  await assertExact(c, 'after aligned runs');
  // Unaligned, from inside a saved chunk across NEW ones, and the short last chunk.
  await write(c, MiB - 5 * KiB, 300 * KiB, 0x33);
  await write(c, VOLUME_BYTES - 20 * KiB, 20 * KiB, 0x44);
  info = chunks(c);
  assert.equal({ in_memory: info.in_memory, queued: info.queued, failed: info.failed }, { in_memory: 0, queued: 0, failed: 0 });
  await assertExact(c, 'after unaligned writes and the short last chunk');
  // Storage slots: one per chunk saved, never more.
  const storage = fixture.engine.snapshotInfo(c.id).storage;
  assert.is(storage.filled_sectors, (info.stored - 1) * (CHUNK_BYTES / 512) + (12 * KiB) / 512,
    'one slot per chunk (the short last chunk takes 12 KiB)');
  await fixture.engine.snapshotDestroy(c.id);
}

test('adjacent NEW chunks of a write are STORED when it completes: nothing in memory, nothing queued', async () => {
  await savedStraightToStorage(await takeCase('direct', true));
});

/** tmpfs's magic number (statfs f_type): the OS temporary directory must be on another filesystem than /dev/shm. */
const TMPFS_MAGIC = 0x01021994;

test('storage on another filesystem (copy_file_range refuses): the runs are read and written, the same', async () => {
  const storage_dir = mkdtempSync(path.join(tmpdir(), 'ublksnap-copy-run-'));
  try {
    assert.is.not(statfsSync(storage_dir).type, TMPFS_MAGIC, `${storage_dir} is on tmpfs, as /dev/shm is`);
    await savedStraightToStorage(await takeCase('other-fs', true, storage_dir));
  } finally {
    rmSync(storage_dir, { recursive: true, force: true });
  }
});

test('no room at take: the writes grow their own room or go through the store queue, and the image is exact', async () => {
  const c = await takeCase('queued', false);
  for (let offset = 0; offset < 4 * MiB; offset += MiB) await write(c, offset, MiB, 0x55 + offset / MiB);
  // The store (growth first) and the idle flush finish whatever went through the queue.
  const deadline = Date.now() + 10_000;
  while (chunks(c).stored < 64 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  const info = chunks(c);
  assert.equal({ stored: info.stored, failed: info.failed, copied: info.copied }, { stored: 64, failed: 0, copied: 64 });
  await assertExact(c, 'after the queue drained');
  await fixture.engine.snapshotDestroy(c.id);
});

test.run();

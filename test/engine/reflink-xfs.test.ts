// Goal: on a filesystem with shared extents (XFS, reflink=1), with volume
// and difference storage on it, copy-before-write clones chunks instead of
// copying them and keeps every promise of the copying path: the take
// reports cbw=reflink, the image is the pre-take data (a short tail chunk
// is copied, the rest cloned), image writes never reach the volume, the
// storage never grows past what the volume's chunks can take, and destroy
// gives the storage's extents back to the filesystem. Then the contract
// scenarios (isolation under takes with concurrent writes, image writes,
// overflow at the limit, destroy under load, unaligned boundaries) run
// unchanged on the same XFS through the in-process frontend, insisting on
// cbw=reflink for every snapshot (contract/harness.ts, UBLKSNAP_CONTRACT_CBW).
// Method: a 1 GiB sparse file, a loop device, mkfs.xfs -m reflink=1, a
// mount; released even when a test fails (test/lib/system.ts). Free space
// read with statfs; data compared byte for byte.

import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readSync, statfsSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cloneRange } from '../../src/native/index';
import { expectSystemError, gate } from '../lib/system';
import { startXfsEngine, type XfsEngine } from '../lib/xfs-engine';

const KiB = 1024;
const MiB = 1024 * KiB;
const XFS_IMAGE_BYTES = 1024 * MiB;
const CHUNK_BYTES = 64 * KiB;
/** A volume whose last chunk is 3 sectors: not block aligned, so it is copied. */
const TAIL_BYTES = 3 * 512;
const VOLUME_BYTES = 4 * MiB + TAIL_BYTES;
const FREE_VOLUME_BYTES = 32 * MiB;
/** Free space may move by this much for metadata (log, btrees, inodes). */
const FREE_SLACK_BYTES = 2 * MiB;
/** XFS frees an unlinked file's extents in the background (inodegc): poll this long. */
const FREE_RETURN_WAIT_MS = 10_000;
const POLL_MS = 100;
const CONTRACT_SCENARIOS = ['isolation', 'image-writes', 'overflow', 'destroy-load', 'unaligned'];
const CONTRACT_TIMEOUT_MS = 300_000;

const suite = gate(test, 'reflink on XFS', { root: true, tools: ['losetup', 'mkfs.xfs', 'mount', 'umount'] });
let fixture: XfsEngine | undefined;

function pattern(seed: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  for (let i = 0; i < length; i += 1) buffer[i] = (i * 131 + seed * 7 + (i >> 12)) & 0xff;
  return buffer;
}

function freeBytes(dir: string): number {
  const status = statfsSync(dir);
  return status.bfree * status.bsize;
}

function volumeFile(name: string, size_bytes: number): string {
  const file = path.join(fixture!.mount.path, name);
  writeFileSync(file, '');
  truncateSync(file, size_bytes);
  return file;
}

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

suite.before(async () => {
  fixture = await startXfsEngine('reflink-xfs', XFS_IMAGE_BYTES);
});

suite.after(async () => {
  await fixture?.dispose();
});

suite.test('cloneRange: aligned ranges clone; an unaligned tail only where it ends both files', () => {
  const source = path.join(fixture!.mount.path, 'clone-source');
  const data = pattern(1, 3 * 4096 + 1000);
  writeFileSync(source, data);
  const source_fd = openSync(source, 'r');
  const dest_fd = openSync(path.join(fixture!.mount.path, 'clone-dest'), 'w+');
  try {
    cloneRange(dest_fd, 4096, source_fd, 0, 8192);
    const copied = Buffer.alloc(8192);
    readSync(dest_fd, copied, 0, 8192, 4096);
    assert.ok(copied.equals(data.subarray(0, 8192)), 'the cloned range reads as the source');
    expectSystemError(() => cloneRange(dest_fd, 0, source_fd, 0, 1000), 'EINVAL', 'ioctl');
    expectSystemError(() => cloneRange(dest_fd, 0, source_fd, 4096, 4096 + 1000), 'EINVAL', 'ioctl');
    assert.throws(() => cloneRange(dest_fd, 0, source_fd, 0, 0), /length_bytes must be > 0/);
  } finally {
    closeSync(source_fd);
    closeSync(dest_fd);
  }
});

suite.test('chunks are cloned (the short tail copied); the image is the pre-take data; image writes stay off the volume', async () => {
  const e = fixture!.engine;
  const c = fixture!.client;
  await e.attach(volumeFile('clone.img', VOLUME_BYTES), { name: 'clone' });
  const volume = e.resolveExport('clone').handle;
  const before = pattern(2, VOLUME_BYTES);
  await c.write(volume, 0, before);
  const chunk_count = Math.ceil(VOLUME_BYTES / CHUNK_BYTES);
  const need_sectors = (chunk_count - 1) * (CHUNK_BYTES / 512) + 8;
  // A storage file made as large as the need: no growth races the first writes, so the counts are exact.
  const storage = volumeFile('clone.diff', need_sectors * 512);
  const id = await e.snapshotCreate({ volumes: ['clone'], storage, limit_bytes: 64 * MiB });
  await e.snapshotTake(id);
  const after = pattern(3, VOLUME_BYTES);
  await c.write(volume, 0, after);
  const info = e.snapshotInfo(id);
  const area = info.chunks[0]!;
  assert.equal([area.cbw, area.cbw_reason, area.cloned, area.copied], ['reflink', '', chunk_count - 1, 1],
    `every whole chunk cloned, the ${TAIL_BYTES}-byte tail copied: ${JSON.stringify(area)}`);
  assert.is(info.storage.need_sectors, need_sectors, 'room for every chunk, the tail in one 4 KiB slot');
  assert.ok(info.storage.capacity_sectors <= need_sectors, `the storage stops at the need: ${info.storage.capacity_sectors}`);
  const image = e.resolveExport(`clone@${id}`).handle;
  assert.ok((await c.read(image, 0, VOLUME_BYTES)).equals(before), 'the image is the pre-take data');
  assert.ok((await c.read(volume, 0, VOLUME_BYTES)).equals(after), 'the volume has the new data');
  // An image write into a cloned chunk, one into the tail, one across a chunk boundary.
  const scribble = pattern(4, 8192);
  for (const offset of [CHUNK_BYTES * 5 + 512, VOLUME_BYTES - 1024, CHUNK_BYTES * 9 - 4096]) {
    const length = Math.min(scribble.length, VOLUME_BYTES - offset);
    await c.write(image, offset, scribble.subarray(0, length));
    before.set(scribble.subarray(0, length), offset);
  }
  await sleep(600); // the idle flush stores the loaded chunks again, over their cloned slots
  assert.ok((await c.read(image, 0, VOLUME_BYTES)).equals(before), 'image writes land in the image');
  assert.ok((await c.read(volume, 0, VOLUME_BYTES)).equals(after), 'image writes never reach the volume');
  await e.snapshotDestroy(id);
  await e.detach('clone');
});

suite.test('destroy gives the storage\'s extents back to the filesystem', async () => {
  const e = fixture!.engine;
  const c = fixture!.client;
  await e.attach(volumeFile('free.img', FREE_VOLUME_BYTES), { name: 'free' });
  const volume = e.resolveExport('free').handle;
  await c.write(volume, 0, pattern(5, FREE_VOLUME_BYTES));
  await c.flush(volume);
  const free_before = freeBytes(fixture!.mount.path);
  const id = await e.snapshotCreate({ volumes: ['free'], storage: path.join(fixture!.mount.path, 'free.diff'), limit_bytes: 64 * MiB });
  await e.snapshotTake(id);
  await c.write(volume, 0, pattern(6, FREE_VOLUME_BYTES));
  await c.flush(volume);
  const area = e.snapshotInfo(id).chunks[0]!;
  // A chunk that finds no room while the first growth step runs is copied, not waited for.
  assert.is(area.cloned + area.copied, FREE_VOLUME_BYTES / CHUNK_BYTES, 'every chunk saved once');
  assert.ok(area.cloned >= (FREE_VOLUME_BYTES / CHUNK_BYTES) * 0.9, `most chunks cloned: ${JSON.stringify(area)}`);
  const free_held = freeBytes(fixture!.mount.path);
  assert.ok(free_held <= free_before - FREE_VOLUME_BYTES + FREE_SLACK_BYTES,
    `the old extents stay held by the storage: ${(free_before - free_held) / MiB} MiB less free`);
  assert.ok(free_held >= free_before - 2 * FREE_VOLUME_BYTES - FREE_SLACK_BYTES, 'cloning moved no bytes twice');
  await e.snapshotDestroy(id);
  const deadline = Date.now() + FREE_RETURN_WAIT_MS;
  while (freeBytes(fixture!.mount.path) < free_before - FREE_SLACK_BYTES && Date.now() < deadline) await sleep(POLL_MS);
  const free_after = freeBytes(fixture!.mount.path);
  assert.ok(free_after >= free_before - FREE_SLACK_BYTES,
    `destroy returned the storage's extents: ${(free_before - free_after) / MiB} MiB still missing`);
  await e.detach('free');
});

/** Chunks each contract scenario saved by cloning (harness lines), summed once all have run. */
const cloned_by_scenario = new Map<string, number>();

for (const scenario of CONTRACT_SCENARIOS) {
  suite.test(`contract scenario ${scenario} on XFS with reflink, every snapshot cbw=reflink`, () => {
    const result = spawnSync(process.execPath, [path.join(__dirname, '..', 'contract', `${scenario}.test.js`)], {
      env: {
        ...process.env, UBLKSNAP_CONTRACT_DRIVERS: 'in-process', UBLKSNAP_CONTRACT_SCRATCH: fixture!.mount.path,
        UBLKSNAP_CONTRACT_CBW: 'reflink', NO_COLOR: '1',
      },
      encoding: 'utf8', timeout: CONTRACT_TIMEOUT_MS,
    });
    const output = `${result.stdout}${result.stderr}`;
    assert.is(result.status, 0, `${scenario} failed on XFS:\n${output.slice(-4000)}`);
    const saved = [...output.matchAll(/cbw=reflink: (\d+) chunks seen saved that way/g)].map((m) => Number(m[1]));
    assert.ok(saved.length > 0, `${scenario}: the harness reported what it saw:\n${output.slice(-2000)}`);
    cloned_by_scenario.set(scenario, saved.reduce((a, b) => a + b, 0));
  });
}

// A scenario whose first touches all cover part of a chunk, at random (destroy-load's
// stamped writers), copies every chunk even on XFS (cow/diff-area.ts, partial writes
// are copied); the clone path must still have carried the scenarios as a whole.
suite.test('the contract scenarios on XFS cloned chunks', () => {
  const total = [...cloned_by_scenario.values()].reduce((a, b) => a + b, 0);
  assert.ok(total > 0, `cloned per scenario: ${JSON.stringify(Object.fromEntries(cloned_by_scenario))}`);
});

test.run();

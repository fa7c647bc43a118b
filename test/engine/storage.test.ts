// Goal: every kind of difference storage works (a growing file, a file on
// tmpfs, a directory → O_TMPFILE, a block device of fixed size); growth
// follows diff_storage_minimum up to the limit with events; a full
// filesystem under the storage file overflows the snapshot, never a volume
// write (overflow at the limit itself runs through every frontend:
// test/contract/overflow.test.ts); an injected volume read error during
// copy-on-write breaks the snapshot, not the write; a storage on a
// loop-backed filesystem of its own volume is refused.
// Method: real files, a real tmpfs mount, real loop devices; data checked
// byte for byte; events read the way a waiting client reads them.

import { statSync, writeFileSync, truncateSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SnapshotEvent } from '../../src/engine/api';
import type { UblksnapError } from '../../src/shared/errors';
import { startFixture, type Fixture } from '../lib/engine-fixture';
import { gate, makeLoopDevice, mkfsExt4AndMount, mountTmpfs } from '../lib/system';

const MiB = 1 << 20;
const suite = gate(test, 'engine storage', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount'] });
let fixture: Fixture;

/** Collects events until one of `codes` arrives (or the time runs out). */
async function eventsUntil(id: string, codes: string[], timeout_ms = 10_000): Promise<SnapshotEvent[]> {
  const seen: SnapshotEvent[] = [];
  const deadline = Date.now() + timeout_ms;
  while (Date.now() < deadline) {
    const event = await fixture.engine.waitEvent(id, deadline - Date.now());
    if (event === null) break;
    seen.push(event);
    if (codes.includes(event.code)) break;
  }
  return seen;
}

function pattern(byte: number, length: number): Buffer {
  return Buffer.alloc(length, byte);
}

suite.before(async () => {
  fixture = await startFixture({ fault_injection: true });
});

suite.after(async () => {
  await fixture?.close();
});

suite.test('a file that starts at 4 KiB grows by at least diff_storage_minimum, up to what the volume can need', async () => {
  const { engine, client, dir } = fixture;
  await engine.attach(fixture.file('grow.img', 16 * MiB), { name: 'grow' });
  await client.write(engine.resolveExport('grow').handle, 0, pattern(0x11, 16 * MiB));
  const storage = `${dir}/grow.diff`;
  writeFileSync(storage, Buffer.alloc(4096));
  const id = await engine.snapshotCreate({ volumes: ['grow'], storage, limit_bytes: 64 * MiB });
  await engine.snapshotTake(id);
  await client.write(engine.resolveExport('grow').handle, 0, pattern(0x22, 8 * MiB));
  const events = await eventsUntil(id, ['grown'], 5000);
  assert.ok(events.some((e) => e.code === 'grown'), `growth reported: ${JSON.stringify(events)}`);
  // Let the idle flush store everything, then read it back from the storage.
  await new Promise((resolve) => setTimeout(resolve, 600));
  const info = engine.snapshotInfo(id);
  assert.ok(info.storage.capacity_sectors >= 16384, `grew past 8 MiB: ${info.storage.capacity_sectors} sectors`);
  assert.is(info.storage.in_memory, true, 'a storage on /dev/shm is in memory: growth writes its slices');
  // Steps of 1 MiB (2048 sectors) or more, sized by the fill rate (growth-plan.ts), never past the 16 MiB volume's chunks.
  assert.ok(info.storage.capacity_sectors <= 32768, `never past what the volume can need: ${info.storage.capacity_sectors}`);
  assert.ok(statSync(storage).size >= 8 * MiB);
  const image = engine.resolveExport(`grow@${id}`).handle;
  assert.ok((await client.read(image, 0, 16 * MiB)).equals(pattern(0x11, 16 * MiB)), 'image is the pre-take data');
  await engine.snapshotDestroy(id);
  assert.is(statSync(storage).size >= 8 * MiB, true, 'a storage file the user made is kept');
});

suite.test('a full filesystem under the storage file overflows the snapshot, not the volume', async () => {
  const { engine, client } = fixture;
  const small = mountTmpfs(2 * MiB);
  try {
    await engine.attach(fixture.file('fsfull.img', 16 * MiB), { name: 'fsfull' });
    const volume = engine.resolveExport('fsfull').handle;
    const id = await engine.snapshotCreate({ volumes: ['fsfull'], storage: `${small.path}/diff`, limit_bytes: 64 * MiB });
    await engine.snapshotTake(id);
    const waiter = eventsUntil(id, ['corrupted'], 20_000);
    const written = pattern(0x3c, 16 * MiB);
    await client.write(volume, 0, written);
    const events = await waiter;
    assert.ok(events.some((e) => e.code === 'no_space'), `no_space: ${JSON.stringify(events)}`);
    assert.ok(events.some((e) => e.code === 'corrupted' && e.errno === 28), 'corrupted with ENOSPC');
    assert.ok((await client.read(volume, 0, 16 * MiB)).equals(written));
    await engine.snapshotDestroy(id);
    await engine.detach('fsfull');
  } finally {
    small.unmount();
  }
});

suite.test('an EIO while copying a chunk breaks the snapshot; the write completes', async () => {
  const { engine, client, dir } = fixture;
  await engine.attach(fixture.file('eio.img', 8 * MiB), { name: 'eio' });
  const volume = engine.resolveExport('eio').handle;
  await client.write(volume, 0, pattern(0x10, 8 * MiB));
  const id = await engine.snapshotCreate({ volumes: ['eio'], storage: `${dir}/eio.diff`, limit_bytes: 16 * MiB });
  await engine.snapshotTake(id);
  engine.injectReadFault('eio', 2 * MiB, 2 * MiB + 4096);
  const waiter = eventsUntil(id, ['corrupted'], 10_000);
  await client.write(volume, 2 * MiB, pattern(0x20, 64 * 1024));
  engine.clearReadFault('eio');
  const corrupted = (await waiter).find((e) => e.code === 'corrupted');
  assert.ok(corrupted, 'corrupted delivered');
  assert.is(corrupted!.errno, 5);
  assert.is(corrupted!.volume, 'eio');
  assert.ok((await client.read(volume, 2 * MiB, 64 * 1024)).equals(pattern(0x20, 64 * 1024)), 'the write landed');
  await client.write(volume, 4 * MiB, pattern(0x30, MiB));
  assert.ok((await client.read(volume, 4 * MiB, MiB)).equals(pattern(0x30, MiB)), 'later writes land too');
  await engine.snapshotDestroy(id);
});

suite.test('a block device as storage: fixed size, overflow without growth', async () => {
  const { engine, client, dir } = fixture;
  const backing = `${dir}/blockstore.raw`;
  writeFileSync(backing, '');
  truncateSync(backing, 2 * MiB);
  const loop = makeLoopDevice(backing);
  try {
    await engine.attach(fixture.file('blk.img', 8 * MiB), { name: 'blk' });
    const volume = engine.resolveExport('blk').handle;
    await client.write(volume, 0, pattern(0x41, MiB));
    const id = await engine.snapshotCreate({ volumes: ['blk'], storage: loop.device, limit_bytes: 2 * MiB });
    await engine.snapshotTake(id);
    const info = engine.snapshotInfo(id).storage;
    assert.equal([info.kind, info.capacity_sectors, info.growable, info.in_memory], ['block', 4096, false, false]);
    await client.write(volume, 0, pattern(0x42, MiB)); // 1 MiB of chunks fits in 2 MiB
    const image = engine.resolveExport(`blk@${id}`).handle;
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.ok((await client.read(image, 0, MiB)).equals(pattern(0x41, MiB)), 'image served from the device');
    const waiter = eventsUntil(id, ['corrupted'], 10_000);
    await client.write(volume, MiB, pattern(0x43, 7 * MiB)); // 7 MiB more does not fit
    assert.ok((await waiter).some((e) => e.code === 'corrupted'));
    assert.ok((await client.read(volume, MiB, 7 * MiB)).equals(pattern(0x43, 7 * MiB)));
    await engine.snapshotDestroy(id);
    await engine.detach('blk');
  } finally {
    loop.detach();
  }
});

suite.test('a block device volume: snapshot of a loop device', async () => {
  const { engine, client, dir } = fixture;
  const backing = `${dir}/blockvol.raw`;
  writeFileSync(backing, '');
  truncateSync(backing, 8 * MiB);
  const loop = makeLoopDevice(backing);
  try {
    const info = await engine.attach(loop.device, { name: 'loopvol' });
    assert.equal([info.kind, info.capacity_sectors], ['block', 16384]);
    const volume = engine.resolveExport('loopvol').handle;
    await client.write(volume, 0, pattern(0x61, 8 * MiB));
    const id = await engine.snapshotCreate({ volumes: ['loopvol'], storage: `${dir}/loopvol.diff`, limit_bytes: 16 * MiB });
    await engine.snapshotTake(id);
    await client.write(volume, 100 * 1024, pattern(0x62, 3 * MiB));
    const image = engine.resolveExport(`loopvol@${id}`).handle;
    assert.ok((await client.read(image, 0, 8 * MiB)).equals(pattern(0x61, 8 * MiB)));
    await engine.snapshotDestroy(id);
    await engine.detach('loopvol');
  } finally {
    loop.detach();
  }
});

suite.test('refused: a storage on a filesystem inside the volume (loop-backed)', async () => {
  const { engine, dir } = fixture;
  const volume_file = fixture.file('nested.img', 32 * MiB);
  const loop = makeLoopDevice(volume_file);
  const mount = mkfsExt4AndMount(loop.device);
  try {
    await engine.attach(volume_file, { name: 'nested' });
    try {
      await engine.snapshotCreate({ volumes: ['nested'], storage: `${mount.path}/diff`, limit_bytes: MiB });
      assert.unreachable('must refuse');
    } catch (error) {
      assert.is((error as UblksnapError).code, 'EINVAL');
      assert.match((error as Error).message, /loop device backed by/);
    }
    await engine.detach('nested');
  } finally {
    mount.unmount();
    loop.detach();
  }
  void dir;
});

test.run();

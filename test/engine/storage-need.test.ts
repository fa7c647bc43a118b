// Goal: a difference storage never grows past what the snapshot's volumes
// can ever need (each chunk takes one slot, once; image writes rewrite the
// same slot), however large diff_storage_minimum and the limit are: a
// 256 MiB volume with 9 MiB of changes does not reserve the 1 GiB default
// step (issue 13). Filling every chunk of the volumes — by volume writes
// and image writes — fits exactly, without overflow, no_space or a growth
// step past the need. The first step (the need, when it is below the
// minimum) is reserved when take returns, before any write can race it
// (snapshot.ts, FIRST_STEP_WAIT_MS_MAX).
// Method: an engine with blksnap's default diff_storage_minimum (1 GiB) on
// /dev/shm; the storage's capacity and its file's size read after the
// writes; events drained as a waiting client drains them.

import { statSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SnapshotEvent } from '../../src/engine/api';
import { DEFAULT_PARAMS } from '../../src/shared/params';
import { startFixture, type Fixture } from '../lib/engine-fixture';

const MiB = 1 << 20;
const GiB = 1024 * MiB;
const STORE_SETTLE_MS = 800;
let fixture: Fixture;

test.before(async () => {
  fixture = await startFixture({ params: { diff_storage_minimum: DEFAULT_PARAMS.diff_storage_minimum } });
});

test.after(async () => {
  await fixture?.close();
});

async function drainEvents(id: string): Promise<SnapshotEvent[]> {
  const events: SnapshotEvent[] = [];
  for (;;) {
    const event = await fixture.engine.waitEvent(id, 0);
    if (event === null) return events;
    events.push(event);
  }
}

test('a 256 MiB volume with 9 MiB of changes: the storage stays within 256 MiB', async () => {
  const { engine, client, dir } = fixture;
  const volume_bytes = 256 * MiB;
  await engine.attach(fixture.file('need.img', volume_bytes), { name: 'need' });
  const storage = `${dir}/need.diff`;
  const id = await engine.snapshotCreate({ volumes: ['need'], storage, limit_bytes: 4 * GiB });
  await engine.snapshotTake(id);
  await client.write(engine.resolveExport('need').handle, 0, Buffer.alloc(9 * MiB, 0x5a));
  await new Promise((resolve) => setTimeout(resolve, STORE_SETTLE_MS));
  const info = engine.snapshotInfo(id).storage;
  assert.ok(info.capacity_sectors <= volume_bytes / 512, `capacity ${info.capacity_sectors} sectors, past the volume`);
  assert.ok(statSync(storage).size <= volume_bytes, `storage file of ${statSync(storage).size} bytes, past the volume`);
  assert.is(info.need_sectors, volume_bytes / 512, 'the need is the volume (whole 64 KiB chunks)');
  assert.ok(info.filled_sectors >= (9 * MiB) / 512, 'the changes were stored');
  await engine.snapshotDestroy(id);
  await engine.detach('need');
});

test('every chunk of two volumes (short tails included) fits exactly: no overflow, no no_space', async () => {
  const { engine, client, dir } = fixture;
  const sizes = [16 * MiB + 3 * 512, 8 * MiB + 64 * 1024 + 4096];
  const names = ['fill_a', 'fill_b'];
  for (const [i, name] of names.entries()) await engine.attach(fixture.file(`${name}.img`, sizes[i]!), { name });
  const id = await engine.snapshotCreate({ volumes: names, storage: `${dir}/fill.diff`, limit_bytes: 4 * GiB });
  await engine.snapshotTake(id);
  for (const [i, name] of names.entries()) {
    await client.write(engine.resolveExport(name).handle, 0, Buffer.alloc(sizes[i]!, 0x11));
    // An image write over a stored chunk takes no second slot.
    await client.write(engine.resolveExport(`${name}@${id}`).handle, 4096, Buffer.alloc(8192, 0x22));
  }
  await new Promise((resolve) => setTimeout(resolve, STORE_SETTLE_MS));
  const info = engine.snapshotInfo(id);
  // 64 KiB chunks; a short tail takes whole 4 KiB slots.
  const need = Math.floor(sizes[0]! / 65536) * 128 + 8 + Math.floor(sizes[1]! / 65536) * 128 + 8;
  assert.is(info.storage.need_sectors, need);
  assert.is(info.state, 'taken', `not broken: error ${info.error_code}`);
  assert.is(info.storage.filled_sectors, need, 'every chunk took its slot, once');
  assert.is(info.storage.capacity_sectors, need, 'grown to the need, not past it');
  assert.is(info.storage.overflow, false);
  const events = await drainEvents(id);
  assert.not.ok(events.some((e) => e.code === 'no_space' || e.code === 'corrupted'), JSON.stringify(events));
  await engine.snapshotDestroy(id);
  for (const name of names) await engine.detach(name);
});

test('take returns with the first growth step reserved: room for every chunk before the first write', async () => {
  const { engine, dir } = fixture;
  const volume_bytes = 64 * MiB;
  await engine.attach(fixture.file('first.img', volume_bytes), { name: 'first' });
  const storage = `${dir}/first.diff`;
  const id = await engine.snapshotCreate({ volumes: ['first'], storage, limit_bytes: 4 * GiB });
  await engine.snapshotTake(id);
  // Read at once: no write has come, and nothing else starts a step.
  const info = engine.snapshotInfo(id).storage;
  assert.is(info.requested_sectors, volume_bytes / 512, 'the step asked for is the need (below the 1 GiB minimum)');
  assert.is(info.capacity_sectors, info.requested_sectors, 'and it is reserved');
  assert.ok(statSync(storage).size >= volume_bytes, `the file holds it: ${statSync(storage).size} bytes`);
  await engine.snapshotDestroy(id);
  await engine.detach('first');
});

test.run();

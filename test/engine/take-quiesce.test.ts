// Goal: take's quiesce hook (EngineControl.snapshotTake), where the daemon
// freezes the filesystems on the frontends' devices, runs when the snapshot
// is ready to be taken and holds only the switch: the storage's first
// growth step is already reserved, the volumes still take writes (a write
// completed then is in the image), and the undo runs once the snapshot is
// taken. A quiesce that fails fails the take and leaves the snapshot
// created, ready for another take; an undo that fails after the switch
// leaves the snapshot taken.
// Method: an in-process engine on /dev/shm; the hook records what it sees;
// data compared byte for byte through the image.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_PARAMS } from '../../src/shared/params';
import { startFixture, type Fixture } from '../lib/engine-fixture';

const MiB = 1 << 20;
const VOLUME_BYTES = 8 * MiB;
/** The first test's volume: its first growth step (the need, 256 MiB) takes the grow actor milliseconds. */
const LARGE_VOLUME_BYTES = 256 * MiB;
let fixture: Fixture;
let serial = 0;

test.before(async () => {
  fixture = await startFixture({ params: { diff_storage_minimum: DEFAULT_PARAMS.diff_storage_minimum } });
});

test.after(async () => {
  await fixture.close();
});

/** A fresh volume of 0x11 bytes and a snapshot of it, created, not taken. */
async function createdSnapshot(volume_bytes = VOLUME_BYTES): Promise<{ name: string; id: string }> {
  const { engine, client, dir } = fixture;
  serial += 1;
  const name = `q${serial}`;
  await engine.attach(fixture.file(`${name}.img`, volume_bytes), { name });
  await client.write(engine.resolveExport(name).handle, 0, Buffer.alloc(volume_bytes, 0x11));
  const id = await engine.snapshotCreate({ volumes: [name], storage: `${dir}/${name}.diff`, limit_bytes: 4 * volume_bytes });
  return { name, id };
}

test('quiesce runs with the first step reserved and the volume writable; the undo runs once taken', async () => {
  const { engine, client } = fixture;
  const { name, id } = await createdSnapshot(LARGE_VOLUME_BYTES);
  const volume = engine.resolveExport(name).handle;
  const seen: string[] = [];
  await engine.snapshotTake(id, async () => {
    const info = engine.snapshotInfo(id);
    const { capacity_sectors, requested_sectors } = info.storage;
    seen.push(`quiesce: ${info.state}, first step ${requested_sectors > 0 && capacity_sectors === requested_sectors ? 'reserved' : `not reserved (${capacity_sectors} of ${requested_sectors})`}`);
    // The volumes are not frozen yet: this write completes, before the switch.
    await client.write(volume, 0, Buffer.alloc(MiB, 0x22));
    return async () => {
      seen.push(`undo: ${engine.snapshotInfo(id).state}`);
    };
  });
  assert.equal(seen, ['quiesce: created, first step reserved', 'undo: taken']);
  await client.write(volume, MiB, Buffer.alloc(MiB, 0x33));
  const image = await client.read(engine.resolveExport(`${name}@${id}`).handle, 0, 2 * MiB);
  assert.ok(image.subarray(0, MiB).equals(Buffer.alloc(MiB, 0x22)), 'the write completed during quiesce is in the image');
  assert.ok(image.subarray(MiB).equals(Buffer.alloc(MiB, 0x11)), 'a write after take is not');
  await engine.snapshotDestroy(id);
  await engine.detach(name);
});

test('a failing quiesce fails the take and leaves the snapshot created; the next take works', async () => {
  const { engine } = fixture;
  const { name, id } = await createdSnapshot();
  let undone = 0;
  try {
    await engine.snapshotTake(id, async () => {
      throw new Error('cannot freeze /mnt/x');
    });
    assert.unreachable('the take succeeded');
  } catch (error) {
    assert.match((error as Error).message, /cannot freeze/);
  }
  assert.is(engine.snapshotInfo(id).state, 'created');
  await engine.snapshotTake(id, async () => async () => {
    undone += 1;
  });
  assert.is(engine.snapshotInfo(id).state, 'taken');
  assert.is(undone, 1, 'the undo ran once');
  await engine.snapshotDestroy(id);
  await engine.detach(name);
});

test('an undo that fails after the switch: the take reports it, the snapshot stays taken', async () => {
  const { engine, client } = fixture;
  const { name, id } = await createdSnapshot();
  try {
    await engine.snapshotTake(id, async () => async () => {
      throw new Error('cannot thaw /mnt/x');
    });
    assert.unreachable('the take hid the failed undo');
  } catch (error) {
    assert.match((error as Error).message, /cannot thaw/);
  }
  assert.is(engine.snapshotInfo(id).state, 'taken');
  await client.write(engine.resolveExport(name).handle, 0, Buffer.alloc(MiB, 0x44));
  const image = await client.read(engine.resolveExport(`${name}@${id}`).handle, 0, MiB);
  assert.ok(image.equals(Buffer.alloc(MiB, 0x11)), 'copy-on-write is armed');
  await engine.snapshotDestroy(id);
  await engine.detach(name);
});

test.run();

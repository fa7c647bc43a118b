// Goal: the control interface enforces blksnap's rules with the documented
// error codes, and the engine keeps working after every refusal.
// Method: drive attach / detach / snapshot calls into each error path on
// real files in /dev/shm and check code and message; finish with a normal
// snapshot cycle to prove nothing stuck.

import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { UblksnapError } from '../../src/shared/errors';
import { startFixture, type Fixture } from '../lib/engine-fixture';

const MiB = 1 << 20;
let fixture: Fixture;

async function rejects(call: () => Promise<unknown> | unknown, code: string, message?: RegExp): Promise<void> {
  try {
    await call();
  } catch (error) {
    assert.is((error as UblksnapError).code, code, `expected ${code}, got ${(error as Error).message}`);
    if (message) assert.match((error as Error).message, message);
    return;
  }
  assert.unreachable(`expected ${code}, but the call succeeded`);
}

test.before(async () => {
  fixture = await startFixture();
});

test.after(async () => {
  await fixture.close();
});

test('attach: names, paths, duplicates, missing files', async () => {
  const { engine } = fixture;
  const a = fixture.file('a.img', 8 * MiB);
  const info = await engine.attach(a);
  assert.is(info.name, 'a.img');
  assert.is(info.capacity_sectors, 16384);
  assert.is(info.kind, 'file');
  await rejects(() => engine.attach(a, { name: 'other' }), 'EALREADY');
  await rejects(() => engine.attach(fixture.file('b.img', MiB), { name: 'a.img' }), 'EEXIST');
  await rejects(() => engine.attach(`${fixture.dir}/missing.img`), 'ENOENT');
  await rejects(() => engine.attach(fixture.dir), 'EINVAL', /neither a regular file nor a block device/);
  await rejects(() => engine.attach(fixture.file('tiny.img', 100)), 'EINVAL', /smaller than one sector/);
  await rejects(() => engine.attach(fixture.file('c.img', MiB), { name: 'bad@name' }), 'EINVAL', /volume name/);
  await rejects(() => engine.attach(''), 'EINVAL');
  assert.equal(engine.volumes().map((v) => v.name), ['a.img']);
  assert.is(engine.volume(a).name, 'a.img', 'found by path');
  await rejects(() => engine.volume('nope'), 'ESRCH');
});

test('snapshot rules: unknown, already, busy, storage on a volume, take twice', async () => {
  const { engine, dir } = fixture;
  await engine.attach(fixture.file('v1.img', 8 * MiB), { name: 'v1' });
  await engine.attach(fixture.file('v2.img', 8 * MiB), { name: 'v2' });
  const id = await engine.snapshotCreate({ volumes: ['v1'], storage: `${dir}/diff1`, limit_bytes: 16 * MiB });
  assert.equal(engine.snapshotCollect().includes(id), true);
  await rejects(() => engine.snapshotAdd(id, 'v1'), 'EALREADY');
  await rejects(() => engine.snapshotCreate({ volumes: ['v1'], storage: `${dir}/diff2`, limit_bytes: MiB }), 'EBUSY');
  assert.is(existsSync(`${dir}/diff2`), false, 'a refused create leaves no storage file behind');
  await rejects(() => engine.snapshotCreate({ volumes: ['v2'], storage: `${dir}/v1.img`, limit_bytes: MiB }), 'EBUSY',
    /is the attached volume v1/);
  await rejects(() => engine.snapshotCreate({ volumes: ['v2'], storage: `${dir}/nodir/diff`, limit_bytes: MiB }), 'ENOENT');
  await rejects(() => engine.snapshotCreate({ volumes: ['v2'], storage: `${dir}/diff3`, limit_bytes: 12 }), 'EINVAL', /limit/);
  await rejects(() => engine.snapshotCreate({ volumes: ['ghost'], storage: `${dir}/diff3`, limit_bytes: MiB }), 'ESRCH');
  await rejects(() => engine.snapshotTake('4f1c2d3e-0000-4000-8000-000000000000'), 'ESRCH');
  await rejects(() => engine.snapshotTake('not-a-uuid'), 'EINVAL');
  await engine.snapshotAdd(id, 'v2');
  await engine.snapshotTake(id);
  await rejects(() => engine.snapshotTake(id), 'EALREADY');
  await rejects(() => engine.snapshotAdd(id, 'a.img'), 'EPERM');
  await rejects(() => engine.detach('v1'), 'EBUSY', /destroy it first/);
  const info = engine.volumeSnapshotInfo('v2');
  assert.equal(info, { snapshot_id: id, error_code: 0, image_export: `v2@${id}` });
  assert.is(engine.snapshotInfo(id).state, 'taken');
  assert.ok(engine.exportNames().includes(`v1@${id}`));
  await engine.snapshotDestroy(id);
  await rejects(() => engine.snapshotDestroy(id), 'ESRCH');
  await rejects(() => engine.snapshotInfo(id), 'ESRCH');
  const codes: string[] = [];
  for (let event = await engine.waitEvent(id, 100); event !== null; event = codes.includes('destroyed') ? null : await engine.waitEvent(id, 100)) {
    codes.push(event.code);
  }
  assert.is(codes[codes.length - 1], 'destroyed', `a waiter learns of the destroy last: ${codes}`);
  await rejects(() => engine.waitEvent(id, 100), 'ESRCH');
  assert.is(existsSync(`${dir}/diff1`), false, 'a storage file the engine created is removed at destroy');
});

test('the diff storage may not lie on a volume of its snapshot', async () => {
  const { engine, dir } = fixture;
  // A storage that is the volume file itself: refused before any open succeeds or after.
  await engine.attach(fixture.file('self.img', 4 * MiB), { name: 'self' });
  await rejects(() => engine.snapshotCreate({ volumes: ['self'], storage: `${dir}/self.img`, limit_bytes: MiB }), 'EBUSY');
});

test('directory storage is an unnamed O_TMPFILE: nothing left after destroy', async () => {
  const { engine, client, dir } = fixture;
  const storage_dir = `${dir}/storage-dir`;
  mkdirSync(storage_dir);
  await engine.attach(fixture.file('t.img', 4 * MiB), { name: 't' });
  const id = await engine.snapshotCreate({ volumes: ['t'], storage: storage_dir, limit_bytes: 8 * MiB });
  await engine.snapshotTake(id);
  const handle = engine.resolveExport('t').handle;
  await client.write(handle, 0, Buffer.alloc(2 * MiB, 7));
  assert.equal(readdirSync(storage_dir), [], 'the O_TMPFILE has no name');
  assert.is(engine.snapshotInfo(id).storage.kind, 'tmpfile');
  const image = engine.resolveExport(`t@${id}`).handle;
  assert.ok((await client.read(image, 0, 2 * MiB)).every((b) => b === 0), 'image still shows the old zeros');
  await engine.snapshotDestroy(id);
  assert.equal(readdirSync(storage_dir), []);
});

test('detach with force destroys the snapshot; image handles die', async () => {
  const { engine, client, dir } = fixture;
  await engine.attach(fixture.file('f.img', 4 * MiB), { name: 'f' });
  const id = await engine.snapshotCreate({ volumes: ['f'], storage: `${dir}/diff-f`, limit_bytes: 8 * MiB });
  await engine.snapshotTake(id);
  const image = engine.resolveExport(`f@${id}`).handle;
  assert.ok(engine.isLive(image));
  await engine.detach('f', { force: true });
  assert.is(engine.isLive(image), false);
  await rejects(() => client.read(image, 0, 4096), 'ENODEV');
  await rejects(() => engine.snapshotInfo(id), 'ESRCH');
  await rejects(() => engine.resolveExport('f'), 'ESRCH');
});

test('bad queue options and CBT ranges are refused', async () => {
  const { engine } = fixture;
  await rejects(() => engine.openQueue({ depth: 0, max_io_bytes: 4096 }), 'EINVAL');
  await rejects(() => engine.openQueue({ depth: 4, max_io_bytes: 1000 }), 'EINVAL');
  await rejects(() => engine.openQueue({ depth: 100_000, max_io_bytes: 4096 }), 'EINVAL');
  await rejects(() => engine.markDirty('v1', [{ sector: 16380, count: 10 }]), 'ERANGE');
  await rejects(() => engine.markDirty('v1', []), 'EINVAL');
  await rejects(() => engine.readCbtMap('v1', -1, new Uint8Array(4)), 'EINVAL');
  await rejects(() => engine.waitEvent('4f1c2d3e-0000-4000-8000-000000000000', 10), 'ESRCH');
});

test('after all that, a normal cycle works', async () => {
  const { engine, client, dir } = fixture;
  const id = await engine.snapshotCreate({ volumes: ['v1', 'v2'], storage: `${dir}/diff-final`, limit_bytes: 32 * MiB });
  await engine.snapshotTake(id);
  await client.write(engine.resolveExport('v1').handle, 0, Buffer.alloc(MiB, 1));
  const image = engine.resolveExport(`v1@${id}`).handle;
  assert.ok((await client.read(image, 0, MiB)).every((b) => b === 0));
  await engine.snapshotDestroy(id);
});

test.run();

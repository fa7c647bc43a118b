// Goal: what a backup tool sees with nbdinfo (libnbd): the exports LIST
// shows, size, block sizes, flags, the metadata contexts of a volume and
// of an image, `--map` of base:allocation, and `--map` of the change
// context (both namings) reporting exactly the tracking blocks written
// between two takes, frozen at the take, at 64 KiB granularity.
// Method: a 16 MiB volume; take 1 and destroy; writes at known offsets
// over NBD (qemu-io); take 2; writes after take 2 (must not show); take 3
// after more writes to see changed-since:0 and :1 differ. Expected maps
// are computed from the written ranges and the block size.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gate } from '../lib/system';
import { nbdFixtureHooks } from '../lib/nbd-fixture';
import { run, runOk } from '../lib/nbd-tools';

const suite = gate(test, 'nbd/nbdinfo', { tools: ['nbdinfo', 'qemu-io'] });
const VOLUME_BYTES = 16 * 1024 * 1024;
const BLOCK = 64 * 1024;
const MiB = 1024 * 1024;

const fixture = nbdFixtureHooks(suite, { tcp: true, volumes: { vol: VOLUME_BYTES } });

interface ExportJson {
  'export-name': string;
  'export-size': number;
  contexts: string[];
  block_size_minimum: number;
  block_size_preferred: number;
  block_size_maximum: number;
  can_multi_conn: boolean;
  can_fua: boolean;
  can_trim: boolean;
  can_zero: boolean;
  can_fast_zero: boolean;
  can_df: boolean;
  is_read_only: boolean;
  description: string;
}

async function info(uri: string, extra: string[] = []): Promise<ExportJson[]> {
  return (JSON.parse(await runOk('nbdinfo', ['--json', ...extra, uri])) as { exports: ExportJson[] }).exports;
}

/** `nbdinfo --map=context` as [offset, length, status] rows. */
async function map(uri: string, context: string): Promise<[number, number, number][]> {
  const out = await runOk('nbdinfo', [`--map=${context}`, uri]);
  return out.trim().split('\n').map((line) => {
    const [offset, length, status] = line.trim().split(/\s+/).map(Number);
    return [offset!, length!, status!];
  });
}

/** Rows a change map must show for the changed byte ranges (merged, at block granularity, gaps clean). */
function expectedRows(changed: [number, number][]): [number, number, number][] {
  const dirty = new Uint8Array(VOLUME_BYTES / BLOCK);
  for (const [offset, length] of changed) {
    for (let block = Math.floor(offset / BLOCK); block <= Math.floor((offset + length - 1) / BLOCK); block += 1) dirty[block] = 1;
  }
  const rows: [number, number, number][] = [];
  for (let block = 0; block < dirty.length; block += 1) {
    const last = rows.at(-1);
    if (last && last[2] === dirty[block]) last[1] += BLOCK;
    else rows.push([block * BLOCK, BLOCK, dirty[block]!]);
  }
  return rows;
}

async function write(uri: string, ranges: [number, number][], pattern: number): Promise<void> {
  const commands = ranges.flatMap(([offset, length]) => ['-c', `write -P ${pattern} ${offset} ${length}`]);
  await runOk('qemu-io', ['-f', 'raw', ...commands, uri]);
}

suite.test('volume: size, block sizes, flags, base:allocation only, over Unix and TCP', async () => {
  for (const uri of [fixture.uri('vol'), fixture.uri('vol', 'tcp')]) {
    const [exported] = await info(uri);
    assert.is(exported!['export-name'], 'vol');
    assert.is(exported!['export-size'], VOLUME_BYTES);
    assert.is(exported!.block_size_minimum, 1);
    assert.is(exported!.block_size_preferred, 4096);
    assert.is(exported!.block_size_maximum, 32 * MiB);
    assert.equal(exported!.contexts, ['base:allocation']);
    assert.ok(exported!.can_multi_conn && exported!.can_fua && exported!.can_trim && exported!.can_zero && exported!.can_fast_zero && exported!.can_df);
    assert.not.ok(exported!.is_read_only);
    assert.match(exported!.description, /volume vol/);
  }
  assert.equal(await map(fixture.uri('vol'), 'base:allocation'), [[0, VOLUME_BYTES, 0]]);
  const refused = await run('nbdinfo', ['--map=ublksnap:changed-since:0', fixture.uri('vol')]);
  assert.is.not(refused.code, 0, 'no change context on a volume');
  assert.match(refused.stderr, /does not support metadata context/);
});

suite.test('change contexts: blocks written between takes, both namings, frozen at the take', async () => {
  const first = await fixture.snapshot(['vol']);
  const [image1] = await info(fixture.uri(`vol@${first}`));
  assert.equal(image1!.contexts, ['base:allocation'], 'after the first take there is nothing to compare with');
  await fixture.engine.snapshotDestroy(first);

  const between: [number, number][] = [[MiB, 100 * 1024], [5 * MiB + 3, 1], [VOLUME_BYTES - 10, 10], [8 * MiB - 1, 2]];
  await write(fixture.uri('vol'), between, 0x61);
  const second = await fixture.snapshot(['vol']);
  const image2_uri = fixture.uri(`vol@${second}`);
  await write(fixture.uri('vol'), [[3 * MiB, MiB]], 0x62);   // after take 2: never in its map

  const listed = await runOk('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${fixture.socket_path}`]);
  const names = (JSON.parse(listed) as { exports: ExportJson[] }).exports.map((e) => e['export-name']).sort();
  assert.equal(names, ['vol', `vol@${second}`].sort());

  const [image2] = await info(image2_uri);
  assert.equal(image2!.contexts, ['base:allocation', 'ublksnap:changed-since:0', 'qemu:dirty-bitmap:changed-since-0']);
  assert.match(image2!.description, new RegExp(`image of volume vol at snapshot ${second}`));
  const expected = expectedRows(between);
  assert.equal(await map(image2_uri, 'ublksnap:changed-since:0'), expected);
  assert.equal(await map(image2_uri, 'qemu:dirty-bitmap:changed-since-0'), expected);
  assert.equal(await map(image2_uri, 'base:allocation'), [[0, VOLUME_BYTES, 0]]);
  await fixture.engine.snapshotDestroy(second);

  // Take 3: blocks changed since take 1 (K=0) and since take 2 (K=1).
  const third = await fixture.snapshot(['vol']);
  const image3_uri = fixture.uri(`vol@${third}`);
  const [image3] = await info(image3_uri);
  assert.ok(image3!.contexts.includes('ublksnap:changed-since:1'));
  assert.equal(await map(image3_uri, 'ublksnap:changed-since:1'), expectedRows([[3 * MiB, MiB]]));
  assert.equal(await map(image3_uri, 'qemu:dirty-bitmap:changed-since-0'), expectedRows([...between, [3 * MiB, MiB]]));
  await fixture.engine.snapshotDestroy(third);
});

suite.test('markdirtyblock shows up in the image map', async () => {
  const id = await fixture.snapshot(['vol']);
  const uri = fixture.uri(`vol@${id}`);
  const before = await map(uri, 'ublksnap:changed-since:2');
  assert.equal(before, [[0, VOLUME_BYTES, 0]], 'nothing written between take 3 and take 4');
  fixture.engine.markDirty('vol', [{ sector: (10 * MiB) / 512, count: 1 }]);
  assert.equal(await map(uri, 'ublksnap:changed-since:2'), expectedRows([[10 * MiB, 512]]));
  await fixture.engine.snapshotDestroy(id);
});

test.run();

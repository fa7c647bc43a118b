// Goal: one snapshot of three volumes of different sizes, each ending in a
// short chunk (and a short CBT block), keeps three independent images —
// an image write changes that image only, never another image nor a
// volume — and after every take each volume's CBT map shows exactly the
// blocks written since the previous take (ACCEPTANCE 6's core rule: a
// block changed since the take whose changes_number was K iff its byte is
// greater than K), frozen while the snapshot lives.
// Method: stamped sectors with a SectorModel per volume and per image
// (test/lib/load.ts); every acknowledged volume write also records the
// 64 KiB tracking blocks it covers. Five take/destroy cycles: writes with
// the snapshot held (volumes, plus one image per cycle, in turn) and after
// destroy (no snapshot); at each take the three maps are compared byte for
// byte with the expected map (the previous one, with the touched blocks
// set to the new interval's number); images and volumes are checked
// exactly, the short last chunks by explicit writes that end at the
// capacity. Then requests past the end fail with EINVAL and change
// nothing. Seeded (SEED=…).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { IoClient } from '../../src/frontends/in-process/io-client';
import { randomBytes, seededRandom, startFixture, type Fixture } from '../lib/engine-fixture';
import { SECTOR_BYTES, SectorModel, StampGenerator } from '../lib/stamp';
import { testSeed } from '../lib/workers';
import {
  CLOSE_TIMEOUT_MS, KiB, MiB, TEST_TIMEOUT_MS, WriteLoad, assertNone, bounded, checkTarget, closeWithin, describe,
  liveCopy, makeTarget, prefill, runWriter, within, writeStamped, type Region, type Target,
} from '../lib/load';
import { clientTarget, type BlockTarget } from '../lib/block-target';

/** Three sizes, none a whole number of 64 KiB chunks; the last one is not even whole 4 KiB. */
const VOLUME_SPECS = [
  { name: 'mva', bytes: 6 * MiB + 12 * KiB },
  { name: 'mvb', bytes: 11 * MiB + 36 * KiB + 512 },
  { name: 'mvc', bytes: 3 * MiB + 3 * SECTOR_BYTES },
];
const CHUNK_BYTES = 64 * KiB;
const CBT_BLOCK_BYTES = 64 * KiB;
const CYCLES = 5;
/** Sectors written per volume in each phase: different per volume, so the maps differ. */
const HELD_WRITE_SECTORS = [2048, 512, 1024];
const UNHELD_WRITE_SECTORS = [256, 1024, 128];
const IMAGE_WRITE_SECTORS = 1024;
const RUN_SECTORS_MAX = 64;
const WRITER_DEPTH = 8;
const TAIL_SECTORS = 3;
const STEP_TIMEOUT_MS = 20_000;
const STORAGE_LIMIT_BYTES = 256 * MiB;
const ERRNO_EINVAL = 22;

let fixture: Fixture;

test.before(async () => {
  fixture = await startFixture();
});

test.after(async () => {
  await closeWithin(async () => fixture?.close(), CLOSE_TIMEOUT_MS);
});

interface TrackedVolume {
  name: string;
  bytes: number;
  target: Target;
  generator: StampGenerator;
  /** CBT blocks written since the last take. */
  touched: Set<number>;
  /** The snapshot copy of the map as the last take left it. */
  map: Uint8Array;
}

/** Marks the tracking blocks a write of [first_lba, + sector_count) covers. */
function touch(volume: TrackedVolume, first_lba: number, sector_count: number): void {
  const first = Math.floor((first_lba * SECTOR_BYTES) / CBT_BLOCK_BYTES);
  const last = Math.floor(((first_lba + sector_count) * SECTOR_BYTES - 1) / CBT_BLOCK_BYTES);
  for (let block = first; block <= last; block += 1) volume.touched.add(block);
}

/** Random volume writes of about `sectors` sectors; every acknowledged one marks its blocks. */
async function writeVolume(volume: TrackedVolume, random: () => number, sectors: number): Promise<void> {
  const load = new WriteLoad();
  const region: Region = { target: volume.target, first_lba: 0, sector_count: volume.target.model.sector_count };
  load.onSubmit = (write) => touch(volume, write.first_lba, write.sector_count);
  await runWriter({
    generator: volume.generator, regions: [region], random, depth: WRITER_DEPTH, run_sectors_max: RUN_SECTORS_MAX,
    load, stop: () => false, budget_sectors: sectors,
  });
  // The short last chunk and block: a write that ends exactly at the capacity.
  const tail = volume.target.model.sector_count - TAIL_SECTORS;
  touch(volume, tail, TAIL_SECTORS);
  await writeStamped(volume.generator, volume.target, tail, TAIL_SECTORS, load);
  assertNone(load.failures, `writes to ${volume.name}`);
}

function readMap(volume: TrackedVolume): Uint8Array {
  const info = fixture.engine.cbtInfo(volume.name);
  const map = new Uint8Array(info.block_count);
  assert.is(fixture.engine.readCbtMap(volume.name, 0, map), info.block_count, `the whole map of ${volume.name} was copied`);
  return map;
}

/** An export of the fixture's engine through its client. */
function exportTarget(client: IoClient, export_name: string): BlockTarget {
  const resolved = fixture.engine.resolveExport(export_name);
  return clientTarget(client, resolved.handle, export_name, resolved.size_bytes);
}

function firstMapDifference(found: Uint8Array, expected: Uint8Array): string | null {
  for (let block = 0; block < expected.length; block += 1) {
    if (found[block] !== expected[block]) return `block ${block}: byte ${found[block]}, expected ${expected[block]}`;
  }
  return null;
}

test('three volumes in one snapshot: independent images, exact CBT maps, five cycles', bounded(TEST_TIMEOUT_MS, async () => {
  const seed = testSeed('multi-volume');
  const random = seededRandom(seed);
  const { engine, client, dir } = fixture;
  const volumes: TrackedVolume[] = [];
  for (const [i, spec] of VOLUME_SPECS.entries()) {
    await engine.attach(fixture.file(`${spec.name}.img`, spec.bytes), { name: spec.name });
    const target = makeTarget(spec.name, exportTarget(client, spec.name), new SectorModel(spec.bytes / SECTOR_BYTES));
    const volume: TrackedVolume = {
      name: spec.name, bytes: spec.bytes, target, generator: new StampGenerator(seed >>> 0, 30 + i), touched: new Set(),
      map: new Uint8Array(Math.ceil(spec.bytes / CBT_BLOCK_BYTES)),
    };
    const load = new WriteLoad();
    load.onSubmit = (write) => touch(volume, write.first_lba, write.sector_count);
    await within(prefill(volume.generator, target, load), STEP_TIMEOUT_MS, 'prefill');
    assertNone(load.failures, 'prefill');
    const info = engine.cbtInfo(spec.name);
    assert.equal([info.block_size, info.block_count, info.device_capacity, info.changes_number],
      [CBT_BLOCK_BYTES, Math.ceil(spec.bytes / CBT_BLOCK_BYTES), spec.bytes / SECTOR_BYTES, 0], `CBT of ${spec.name} before any take`);
    volumes.push(volume);
  }
  const generation = volumes.map((v) => engine.cbtInfo(v.name).generation_id);
  for (let cycle = 0; cycle < CYCLES; cycle += 1) {
    const where = `cycle ${cycle}, seed ${seed}`;
    const id = await engine.snapshotCreate({ volumes: volumes.map((v) => v.name), storage: `${dir}/mv-${cycle}.diff`, limit_bytes: STORAGE_LIMIT_BYTES });
    await within(engine.snapshotTake(id), STEP_TIMEOUT_MS, 'take');
    const take_sequence = volumes[0]!.generator.sequence;
    for (const v of volumes) v.generator.nextGeneration();
    // The maps: exactly the blocks written since the previous take carry the new number.
    const maps_at_take: Uint8Array[] = [];
    for (const [i, v] of volumes.entries()) {
      const info = engine.cbtInfo(v.name);
      assert.is(info.changes_number, cycle, `changes_number of ${v.name} (${where})`);
      assert.is(info.generation_id, generation[i], `the generation of ${v.name} stays (${where})`);
      const expected = Uint8Array.from(v.map);
      for (const block of v.touched) expected[block] = cycle;
      const found = readMap(v);
      const difference = firstMapDifference(found, expected);
      assert.is(difference, null, `CBT map of ${v.name} after take (${where}; ${v.touched.size} blocks written since the last take): ${difference}`);
      if (cycle > 0) {
        // The rule as backup tools read it, against the previous take's changes_number.
        const changed = [...found.keys()].filter((block) => found[block]! > cycle - 1);
        assert.equal(changed, [...v.touched].sort((a, b) => a - b), `blocks changed since take ${cycle - 1} of ${v.name} (${where})`);
      }
      v.map = found;
      v.touched.clear();
      maps_at_take.push(found);
    }
    const chunks = engine.snapshotInfo(id).chunks;
    assert.equal(chunks.map((c) => [c.volume, c.chunk_bytes, c.chunk_count]),
      volumes.map((v) => [v.name, CHUNK_BYTES, Math.ceil(v.bytes / CHUNK_BYTES)]), `chunk geometry (${where})`);
    // Images start as the volumes at the take; one of them gets written this cycle.
    const images = volumes.map((v) => makeTarget(`${v.name}@${cycle}`, exportTarget(client, `${v.name}@${id}`), liveCopy(v.target.model)));
    const written_image = cycle % volumes.length;
    const image = images[written_image]!;
    const image_generator = new StampGenerator(seed >>> 0, 40 + cycle, { first_sequence: take_sequence });
    const image_load = new WriteLoad();
    const image_tail = image.model.sector_count - TAIL_SECTORS;
    await within(Promise.all([
      ...volumes.map((v, i) => writeVolume(v, random, HELD_WRITE_SECTORS[i]!)),
      runWriter({
        generator: image_generator, regions: [{ target: image, first_lba: 0, sector_count: image.model.sector_count }], random,
        depth: WRITER_DEPTH, run_sectors_max: RUN_SECTORS_MAX, load: image_load, stop: () => false, budget_sectors: IMAGE_WRITE_SECTORS,
      }).then(() => writeStamped(image_generator, image, image_tail, TAIL_SECTORS, image_load)),
    ]), STEP_TIMEOUT_MS, `writes with the snapshot held (${where})`);
    assertNone(image_load.failures, `image writes (${where})`);
    for (const [i, v] of volumes.entries()) {
      const difference = firstMapDifference(readMap(v), maps_at_take[i]!);
      assert.is(difference, null, `the snapshot copy of ${v.name}'s map is frozen while writes go on (${where}): ${difference}`);
      const report = await within(checkTarget(images[i]!.io, images[i]!.model, { max_sequence: take_sequence }), STEP_TIMEOUT_MS, `check of image ${i}`);
      const role = i === written_image ? 'the image written this cycle' : 'an image nobody wrote';
      assert.ok(report.ok, describe(`${role}, ${v.name} (${where})`, report));
      const volume_report = await within(checkTarget(v.target.io, v.target.model), STEP_TIMEOUT_MS, `check of ${v.name}`);
      assert.ok(volume_report.ok, describe(`volume ${v.name} with the snapshot held (${where})`, volume_report));
    }
    await within(engine.snapshotDestroy(id), STEP_TIMEOUT_MS, 'destroy');
    // Writes without a snapshot are tracked too, for the next take.
    await within(Promise.all(volumes.map((v, i) => writeVolume(v, random, UNHELD_WRITE_SECTORS[i]!))), STEP_TIMEOUT_MS, 'writes without a snapshot');
    for (const v of volumes) {
      const report = await within(checkTarget(v.target.io, v.target.model), STEP_TIMEOUT_MS, `check of ${v.name}`);
      assert.ok(report.ok, describe(`volume ${v.name} after destroy (${where})`, report));
    }
    console.log(`  cycle ${cycle}: wrote image of ${image.label}; blocks touched since take: ${volumes.map((v) => `${v.name} ${v.touched.size}/${v.map.length}`).join(', ')}`);
  }
}));

test('requests past the end of a volume or image fail with EINVAL and change nothing', bounded(TEST_TIMEOUT_MS, async () => {
  const seed = testSeed('past the end');
  const random = seededRandom(seed);
  const { engine, client, dir } = fixture;
  const volumes: { spec: { name: string; bytes: number }; handle: number }[] = [];
  const before: Buffer[] = [];
  for (const { name, bytes } of VOLUME_SPECS) {
    const spec = { name: `edge-${name}`, bytes };
    await engine.attach(fixture.file(`${spec.name}.img`, bytes), { name: spec.name });
    const handle = engine.resolveExport(spec.name).handle;
    const data = randomBytes(random, bytes);
    await client.write(handle, 0, data);
    volumes.push({ spec, handle });
    before.push(data);
  }
  const id = await engine.snapshotCreate({ volumes: volumes.map((v) => v.spec.name), storage: `${dir}/edge.diff`, limit_bytes: STORAGE_LIMIT_BYTES });
  await engine.snapshotTake(id);
  for (const [i, v] of volumes.entries()) {
    const image = engine.resolveExport(`${v.spec.name}@${id}`).handle;
    for (const handle of [v.handle, image]) {
      for (const [offset, length] of [[v.spec.bytes - SECTOR_BYTES, 2 * SECTOR_BYTES], [v.spec.bytes, SECTOR_BYTES]] as const) {
        for (const op of ['read', 'write'] as const) {
          try {
            if (op === 'read') await client.read(handle, offset, length);
            else await client.write(handle, offset, Buffer.alloc(length, 0xee));
            assert.unreachable(`${op} of ${length} bytes at ${offset} of ${v.spec.name} (${handle === image ? 'image' : 'volume'}) must fail`);
          } catch (error) {
            assert.is((error as { errno?: number }).errno, ERRNO_EINVAL, `${op} past the end: ${(error as Error).message}`);
          }
        }
      }
    }
    assert.ok((await client.read(image, 0, v.spec.bytes)).equals(before[i]!), `image of ${v.spec.name} unchanged`);
    assert.ok((await client.read(v.handle, 0, v.spec.bytes)).equals(before[i]!), `volume ${v.spec.name} unchanged`);
  }
  await engine.snapshotDestroy(id);
  for (const v of volumes) await engine.detach(v.spec.name);
}));

test.run();

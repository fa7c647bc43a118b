// Goal: image writes never reach the volume, through every frontend
// (docs/design.md §10 "Isolation": images are writable, their writes go to the diff
// storage; ACCEPTANCE 1's last check and ACCEPTANCE 7): 10 MiB written into
// the image and 10 MiB into the volume at the same time, over chunks both
// touch, three times; the image holds the take plus its own writes, the
// volume exactly its own writes, before and after every chunk was stored,
// and the volume still exactly its own writes after destroy.
// Method: stamped sectors, a SectorModel for the volume and a live copy of
// it (at the take) for the image (test/lib/load.ts); the image's writes
// carry the take's sequence, so only a volume write could be newer than
// the take: a volume stamp in the image, or an image stamp on the volume,
// fails the exact check. chunk_maximum_in_queue is the default (16), so
// the store runs while the writes go on. Each target is reached over two
// connections of the driver. Seeded (SEED=…).

import * as assert from 'uvu/assert';
import { seededRandom } from '../lib/random';
import { SECTOR_BYTES, SectorModel, StampGenerator } from '../lib/stamp';
import { sized } from '../lib/slow-machine';
import { testSeed } from '../lib/workers';
import {
  MiB, WriteLoad, assertNone, checkTarget, describe, liveCopy, makeTarget, prefill, runWriter, waitStored, within,
  type Target,
} from '../lib/load';
import { runScenario, type Rig } from './harness';

/** ACCEPTANCE 7: 10 MiB each way, three times, in runs of 1-32 blocks of 4 KiB. */
const ITERATIONS = sized(3, 1);
const WRITE_BYTES = sized(10, 3) * MiB;
/** The image writes [0, 3/4), the volume [1/4, 1): half of it sees both. */
const VOLUME_BYTES = sized(32, 8) * MiB;
const RUN_SECTORS_MAX = 32 * 8;
const WRITER_DEPTH = 16;
const CONNECTIONS = 2;
const STORE_WAIT_MS = 15_000;
const STEP_TIMEOUT_MS = 20_000;
const STORAGE_LIMIT_BYTES = 512 * MiB;

async function attachStamped(rig: Rig, name: string, size_bytes: number, seed: number): Promise<Target> {
  await rig.attach(name, size_bytes);
  const target = makeTarget(name, await rig.openSpread(name, CONNECTIONS), new SectorModel(size_bytes / SECTOR_BYTES));
  const load = new WriteLoad();
  await within(prefill(new StampGenerator(seed >>> 0, 1), target, load), STEP_TIMEOUT_MS, 'prefill');
  assertNone(load.failures, 'prefill');
  return target;
}

async function imageWrites(rig: Rig): Promise<void> {
  const seed = testSeed(`image writes via ${rig.driver.name}`);
  const random = seededRandom(seed);
  const { engine } = rig;
  const volume = await attachStamped(rig, 'both', VOLUME_BYTES, seed);
  const volume_generator = new StampGenerator(seed >>> 0, 20);
  const quarter_sectors = VOLUME_BYTES / SECTOR_BYTES / 4;
  for (let iteration = 0; iteration < ITERATIONS; iteration += 1) {
    const id = await rig.create(['both'], STORAGE_LIMIT_BYTES);
    await within(engine.snapshotTake(id), STEP_TIMEOUT_MS, 'take');
    const take_sequence = volume_generator.sequence;
    volume_generator.nextGeneration();
    const image = makeTarget(`both@${id}`, await rig.openSpread(`both@${id}`, CONNECTIONS), liveCopy(volume.model));
    const image_generator = new StampGenerator(seed >>> 0, 60 + iteration, { first_sequence: take_sequence });
    const image_load = new WriteLoad();
    const volume_load = new WriteLoad();
    const started = Date.now();
    // The image gets [0, 3/4), the volume [1/4, 1) (24 and 8-32 MiB at full size): half of the chunks see both.
    await within(Promise.all([
      runWriter({
        generator: image_generator, regions: [{ target: image, first_lba: 0, sector_count: 3 * quarter_sectors }], random,
        depth: WRITER_DEPTH, run_sectors_max: RUN_SECTORS_MAX, load: image_load, stop: () => false,
        budget_sectors: WRITE_BYTES / SECTOR_BYTES,
      }),
      runWriter({
        generator: volume_generator, regions: [{ target: volume, first_lba: quarter_sectors, sector_count: 3 * quarter_sectors }], random,
        depth: WRITER_DEPTH, run_sectors_max: RUN_SECTORS_MAX, load: volume_load, stop: () => false,
        budget_sectors: WRITE_BYTES / SECTOR_BYTES,
      }),
    ]), STEP_TIMEOUT_MS, `concurrent writes (iteration ${iteration}, seed ${seed})`);
    const write_ms = Date.now() - started;
    assertNone(image_load.failures, `image writes (iteration ${iteration}, seed ${seed})`);
    assertNone(volume_load.failures, `volume writes (iteration ${iteration}, seed ${seed})`);
    const expectation = { max_sequence: take_sequence };
    const checks = async (when: string): Promise<void> => {
      const image_report = await within(checkTarget(image.io, image.model, expectation), STEP_TIMEOUT_MS, 'image check');
      assert.ok(image_report.ok, describe(`image ${when} (iteration ${iteration}, seed ${seed})`, image_report));
      const volume_report = await within(checkTarget(volume.io, volume.model), STEP_TIMEOUT_MS, 'volume check');
      assert.ok(volume_report.ok, describe(`volume ${when} (iteration ${iteration}, seed ${seed})`, volume_report));
    };
    await checks('right after the writes');
    await waitStored(engine, id, STORE_WAIT_MS);
    await checks('once every chunk was stored');
    const info = engine.snapshotInfo(id);
    console.log(`  iteration ${iteration}: ${image_load.acknowledged_count} image and ${volume_load.acknowledged_count} volume writes in ${write_ms} ms; `
      + `${info.chunks[0]!.stored} chunks stored, storage ${info.storage.filled_sectors / 2048} MiB filled`);
    await within(engine.snapshotDestroy(id), STEP_TIMEOUT_MS, 'destroy');
    await image.io.close();
    const report = await within(checkTarget(volume.io, volume.model), STEP_TIMEOUT_MS, 'volume check');
    assert.ok(report.ok, describe(`volume after destroy: image writes never reached it (iteration ${iteration}, seed ${seed})`, report));
  }
}

runScenario('image writes never reach the volume', imageWrites);

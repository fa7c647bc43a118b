// Goal: destroy under load (ACCEPTANCE 9), through every frontend. Destroy while writers hit
// the volume and the image and readers read the image: no crash, no hang,
// every volume write succeeds and the volume ends exactly as written, the
// image's users get errors — never stale or foreign data — and a new
// snapshot of the same volume works afterwards.
// Method: stamped sectors and a SectorModel per target (test/lib/load.ts).
// A quiet take, then volume writers (two connections), an image writer
// on the first half of the image and image readers on both halves (their
// own connections) run; after a seeded delay the snapshot is destroyed under
// that load, under a hard timeout, and the load goes on for a while with
// the old image handle. Every image request is classed by when it was
// submitted: before destroy started (must succeed unless it completed after
// destroy began), while it ran (success with checked data, or EIO), after
// it resolved (must fail with EIO or ENODEV, or find its connection gone);
// every read that succeeds is
// checked. Reads of the half no image writer touches must equal
// the frozen model exactly; reads of the written half must hold valid
// stamps no newer than the take. After destroy the image export no longer
// opens. Three rounds, then a last snapshot works as if nothing happened.
// Seeded (SEED=…).

import { setTimeout as sleep } from 'node:timers/promises';
import * as assert from 'uvu/assert';
import { ERRNO, errnoOf, type BlockTarget } from '../lib/block-target';
import { seededRandom } from '../lib/random';
import { SECTOR_BYTES, SectorModel, StampGenerator, checkAgainst, checkSectors, formatReport } from '../lib/stamp';
import { sized } from '../lib/slow-machine';
import { testSeed } from '../lib/workers';
import {
  MiB, TEST_TIMEOUT_MS, WriteLoad, assertNone, checkTarget, describe, liveCopy, makeTarget, prefill, runWriter, within,
  writeStamped, type Target,
} from '../lib/load';
import { runScenario, type Rig } from './harness';

/** Sizes: sized(full, guest), slow-machine.ts. */
const VOLUME_BYTES = sized(16 * MiB, 4 * MiB);
const VOLUME_SECTORS = VOLUME_BYTES / SECTOR_BYTES;
const HALF_SECTORS = VOLUME_SECTORS / 2;
const DESTROY_ROUNDS = sized(3, 2);
/** Load before destroy: long enough for image requests to complete first (in the guest, seconds under TCG). */
const LOAD_BEFORE_DESTROY_MS_MIN = sized(150, 2000);
const LOAD_BEFORE_DESTROY_MS_SPREAD = sized(450, 1000);
const LOAD_AFTER_DESTROY_MS = sized(300, 1000);
/** Destroy waits for image I/O and writes to drain (10 s each at most in the engine): past this it hangs. */
const DESTROY_TIMEOUT_MS = 25_000;
const STEP_TIMEOUT_MS = 20_000;
const VOLUME_WRITER_DEPTH = 12;
/** Connections (or queues) the volume writers share. */
const VOLUME_CONNECTIONS = 2;
const IMAGE_WRITER_DEPTH = 6;
const IMAGE_READER_DEPTH = 6;
const RUN_SECTORS_MAX = 128;
/** Image reads up to 1 MiB (16 chunks): the image actor is often inside one when destroy begins. */
const READ_SECTORS_MAX = 2048;
const STORAGE_LIMIT_BYTES = 512 * MiB;
/** Errors an image request may end with once its snapshot is gone. */
const GONE_ERRNOS: readonly number[] = [ERRNO.EIO, ERRNO.ENODEV, ERRNO.ESHUTDOWN, ERRNO.ENOTCONN];

/** When an image request was submitted, relative to the destroy. */
type Phase = 'before' | 'during' | 'after';

interface ImageTally {
  ok: Record<Phase, number>;
  failed: Record<Phase, number>;
  failures: string[];
}

/**
 * One image lane: reads (checked) or writes, classed by phase at
 * submission. Stops when `stop()` says so.
 */
async function imageLane(options: {
  io: BlockTarget; random: () => number; phase: () => Phase; stop: () => boolean;
  kind: 'read' | 'write'; first_lba: number; sector_count: number; generator: StampGenerator | null;
  image: Target; frozen: SectorModel; take_sequence: number; tally: ImageTally; load: WriteLoad;
}): Promise<void> {
  const { io, random, phase, stop, kind, first_lba, sector_count, tally, load } = options;
  while (!stop()) {
    const max = kind === 'read' ? READ_SECTORS_MAX : RUN_SECTORS_MAX;
    const count = 1 + Math.floor(random() * max);
    const lba = first_lba + Math.floor(random() * (sector_count - count + 1));
    const submitted = phase();
    let error: unknown = null;
    let data: Buffer | null = null;
    if (kind === 'read') {
      try {
        data = await io.read(lba * SECTOR_BYTES, count * SECTOR_BYTES);
      } catch (caught) {
        error = caught;
      }
    } else {
      // The image writer keeps its own ranges apart (the image model needs that; see load.ts).
      if (options.image.busy.subarray(lba, lba + count).some((b) => b !== 0)) {
        await sleep(0);
        continue;
      }
      error = await writeStamped(options.generator!, options.image, lba, count, load);
    }
    const completed = phase();
    const where = `image ${kind} of LBA ${lba}+${count} submitted ${submitted} destroy, completed ${completed} it`;
    if (error === null) {
      tally.ok[submitted] += 1;
      if (submitted === 'after') tally.failures.push(`${where} succeeded: the image outlived its snapshot`);
      if (data !== null) {
        // The half nobody writes through the image is exactly the cut; the other half holds valid old-enough stamps.
        const report = lba >= HALF_SECTORS
          ? checkAgainst(data, lba, count, options.frozen, { max_sequence: options.take_sequence })
          : checkSectors(data, lba, count, { max_sequence: options.take_sequence });
        if (!report.ok) tally.failures.push(`${where} returned wrong data: ${formatReport(report)}`);
      }
    } else {
      tally.failed[submitted] += 1;
      const errno = errnoOf(error);
      // A request still queued when destroy began may fail; one that failed before it began must not.
      if (completed === 'before') tally.failures.push(`${where} failed before destroy: ${(error as Error).message}`);
      else if (!GONE_ERRNOS.includes(errno)) tally.failures.push(`${where} failed with errno ${errno}, not EIO/ENODEV: ${(error as Error).message}`);
    }
  }
}

async function attachStamped(rig: Rig, name: string, size_bytes: number, seed: number): Promise<Target> {
  await rig.attach(name, size_bytes);
  const target = makeTarget(name, await rig.openSpread(name, VOLUME_CONNECTIONS), new SectorModel(size_bytes / SECTOR_BYTES));
  const load = new WriteLoad();
  await prefill(new StampGenerator(seed >>> 0, 1), target, load);
  assertNone(load.failures, 'prefill');
  return target;
}

async function destroyUnderLoad(rig: Rig): Promise<void> {
  const seed = testSeed(`destroy under load via ${rig.driver.name}`);
  const random = seededRandom(seed);
  const { engine } = rig;
  const volume = await attachStamped(rig, 'busy', VOLUME_BYTES, seed);
  const volume_generators = [new StampGenerator(seed >>> 0, 10), new StampGenerator(seed >>> 0, 11)];
  const volume_load = new WriteLoad();
  let sequence = volume_generators[0]!.sequence;
  for (let round = 0; round < DESTROY_ROUNDS; round += 1) {
    const id = await rig.create(['busy'], STORAGE_LIMIT_BYTES);
    await within(engine.snapshotTake(id), STEP_TIMEOUT_MS, 'take');
    const frozen = volume.model.snapshot();
    const take_sequence = sequence;
    sequence += 1;
    for (const g of volume_generators) g.nextGeneration();
    const image_name = `busy@${id}`;
    // One connection for the image writer, one per reader half.
    const image_ios = [await rig.open(image_name), await rig.open(image_name), await rig.open(image_name)];
    const image = makeTarget(image_name, image_ios[0]!, liveCopy(frozen));
    // Image writes carry the take's sequence: only a volume write could be newer.
    const image_generator = new StampGenerator(seed >>> 0, 50 + round, { first_sequence: take_sequence });
    let phase: Phase = 'before';
    let stopping = false;
    const stop = (): boolean => stopping;
    const tally: ImageTally = { ok: { before: 0, during: 0, after: 0 }, failed: { before: 0, during: 0, after: 0 }, failures: [] };
    const image_load = new WriteLoad();
    const lane = (io_index: number, kind: 'read' | 'write', first_lba: number, sector_count: number): Promise<void> => imageLane({
      io: image_ios[io_index]!, random, phase: () => phase, stop, kind, first_lba, sector_count,
      generator: kind === 'write' ? image_generator : null, image, frozen, take_sequence, tally, load: image_load,
    });
    const running = [
      ...volume_generators.map((generator) => runWriter({
        generator, regions: [{ target: volume, first_lba: 0, sector_count: VOLUME_SECTORS }], random,
        depth: VOLUME_WRITER_DEPTH, run_sectors_max: RUN_SECTORS_MAX, load: volume_load, stop,
      })),
      ...Array.from({ length: IMAGE_WRITER_DEPTH }, () => lane(0, 'write', 0, HALF_SECTORS)),
      ...Array.from({ length: IMAGE_READER_DEPTH / 2 }, () => lane(1, 'read', 0, HALF_SECTORS)),
      ...Array.from({ length: IMAGE_READER_DEPTH / 2 }, () => lane(2, 'read', HALF_SECTORS, HALF_SECTORS)),
    ];
    await sleep(LOAD_BEFORE_DESTROY_MS_MIN + Math.floor(random() * LOAD_BEFORE_DESTROY_MS_SPREAD));
    phase = 'during';
    const destroy_started = Date.now();
    await within(engine.snapshotDestroy(id), DESTROY_TIMEOUT_MS, `destroy under load (round ${round}, seed ${seed})`);
    const destroy_ms = Date.now() - destroy_started;
    phase = 'after';
    await sleep(LOAD_AFTER_DESTROY_MS);
    stopping = true;
    await within(Promise.all(running), STEP_TIMEOUT_MS, `the load to drain after destroy (round ${round}, seed ${seed})`);
    console.log(`  round ${round}: destroy took ${destroy_ms} ms; image requests ok/failed before ${tally.ok.before}/${tally.failed.before}, `
      + `during ${tally.ok.during}/${tally.failed.during}, after ${tally.ok.after}/${tally.failed.after}; ${volume_load.acknowledged_count} volume writes so far`);
    assertNone(tally.failures, `image requests around destroy (round ${round}, seed ${seed})`);
    assertNone(volume_load.failures, `volume writes (round ${round}, seed ${seed})`);
    assert.ok(tally.ok.before > 0 && tally.failed.after > 0, 'the image was used before destroy and refused after it');
    const reopened = await rig.open(image_name).then((io) => io, () => null);
    if (reopened !== null) await reopened.close();
    assert.is(reopened, null, 'the image export no longer opens after destroy');
    for (const io of image_ios) await io.close();
    assert.is(engine.volumeSnapshotInfo('busy').snapshot_id, null);
    const report = await within(checkTarget(volume.io, volume.model), STEP_TIMEOUT_MS, 'volume check');
    assert.ok(report.ok, describe(`volume after destroy under load (round ${round}, seed ${seed})`, report));
  }
  // A new snapshot of the same volume works as if nothing happened.
  const id = await rig.create(['busy'], STORAGE_LIMIT_BYTES);
  await within(engine.snapshotTake(id), STEP_TIMEOUT_MS, 'take after the rounds');
  const frozen = volume.model.snapshot();
  const take_sequence = sequence;
  for (const g of volume_generators) g.nextGeneration();
  const load = new WriteLoad();
  await runWriter({
    generator: volume_generators[0]!, regions: [{ target: volume, first_lba: 0, sector_count: VOLUME_SECTORS }],
    random, depth: VOLUME_WRITER_DEPTH, run_sectors_max: RUN_SECTORS_MAX, load, stop: () => false, budget_sectors: sized(4 * MiB, MiB) / SECTOR_BYTES,
  });
  assertNone(load.failures, 'volume writes on the new snapshot');
  const image = await rig.open(`busy@${id}`);
  const image_report = await checkTarget(image, frozen, { max_sequence: take_sequence });
  assert.ok(image_report.ok, describe(`image of the snapshot after the rounds (seed ${seed})`, image_report));
  const volume_report = await checkTarget(volume.io, volume.model);
  assert.ok(volume_report.ok, describe(`volume (seed ${seed})`, volume_report));
  await within(engine.snapshotDestroy(id), STEP_TIMEOUT_MS, 'destroy');
  await image.close();
}

runScenario('destroy under load', destroyUnderLoad, { timeout_ms: TEST_TIMEOUT_MS });

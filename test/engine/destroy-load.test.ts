// Goal: destroy under load (ACCEPTANCE 9) and image writes concurrent with
// volume writes (ACCEPTANCE 7), in engine form. Destroy while writers hit
// the volume and the image and readers read the image: no crash, no hang,
// every volume write succeeds and the volume ends exactly as written, the
// image's users get errors — never stale or foreign data — and a new
// snapshot of the same volume works afterwards.
// Method: stamped sectors and a SectorModel per target (test/engine/load.ts).
// Destroy: a quiet take, then volume writers (two queues), an image writer
// on the first half of the image and image readers on both halves (their
// own queues) run; after a seeded delay the snapshot is destroyed under
// that load, under a hard timeout, and the load goes on for a while with
// the old image handle. Every image request is classed by when it was
// submitted: before destroy started (must succeed unless it completed after
// destroy began), while it ran (success with checked data, or EIO), after
// it resolved (must fail with EIO or ENODEV); every read that succeeds is
// checked. Reads of the half no image writer touches must equal
// the frozen model exactly; reads of the written half must hold valid
// stamps no newer than the take. Three rounds, then a last snapshot.
// Concurrent writes: three iterations of 10 MiB into the image and 10 MiB
// into the volume at once over overlapping chunks (chunk_maximum_in_queue
// 16, the default); both checked exactly, the image again once every chunk
// was stored, the volume again after destroy. Seeded (SEED=…).

import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IoClient } from '../../src/frontends/in-process/io-client';
import type { UblksnapError } from '../../src/shared/errors';
import { seededRandom, startFixture, type Fixture } from '../lib/engine-fixture';
import { SECTOR_BYTES, SectorModel, StampGenerator, checkAgainst, checkSectors, formatReport } from '../lib/stamp';
import { testSeed } from '../lib/workers';
import {
  CLOSE_TIMEOUT_MS, MiB, TEST_TIMEOUT_MS, WriteLoad, assertNone, bounded, checkTarget, closeWithin, describe,
  liveCopy, makeTarget, prefill, runWriter, waitStored, within, writeStamped, type Target,
} from './load';

const VOLUME_BYTES = 16 * MiB;
const VOLUME_SECTORS = VOLUME_BYTES / SECTOR_BYTES;
const HALF_SECTORS = VOLUME_SECTORS / 2;
const DESTROY_ROUNDS = 3;
const LOAD_BEFORE_DESTROY_MS_MIN = 150;
const LOAD_BEFORE_DESTROY_MS_SPREAD = 450;
const LOAD_AFTER_DESTROY_MS = 300;
/** Destroy waits for image I/O and writes to drain (10 s each at most in the engine): past this it hangs. */
const DESTROY_TIMEOUT_MS = 25_000;
const STEP_TIMEOUT_MS = 20_000;
const VOLUME_WRITER_DEPTH = 12;
const IMAGE_WRITER_DEPTH = 6;
const IMAGE_READER_DEPTH = 6;
const RUN_SECTORS_MAX = 128;
/** Image reads up to 1 MiB (16 chunks): the image actor is often inside one when destroy begins. */
const READ_SECTORS_MAX = 2048;
/** ACCEPTANCE 7: 10 MiB each way, three times, in runs of 1-32 blocks of 4 KiB. */
const CONCURRENT_ITERATIONS = 3;
const CONCURRENT_BYTES = 10 * MiB;
const CONCURRENT_VOLUME_BYTES = 32 * MiB;
const CONCURRENT_RUN_SECTORS_MAX = 32 * 8;
const STORE_WAIT_MS = 15_000;
const STORAGE_LIMIT_BYTES = 512 * MiB;
const ERRNO_EIO = 5;
const ERRNO_ENODEV = 19;

let fixture: Fixture;
const clients: IoClient[] = [];

test.before(async () => {
  fixture = await startFixture();
  for (let i = 0; i < 5; i += 1) clients.push(await IoClient.open(fixture.engine, 32, MiB));
});

test.after(async () => {
  await closeWithin(async () => {
    for (const client of clients.splice(0)) await client.close();
    await fixture?.close();
  }, CLOSE_TIMEOUT_MS);
});

/** When an image request was submitted, relative to the destroy. */
type Phase = 'before' | 'during' | 'after';

interface ImageTally {
  ok: Record<Phase, number>;
  failed: Record<Phase, number>;
  failures: string[];
}

function errnoOf(error: unknown): number {
  return (error as { errno?: number }).errno ?? -1;
}

/**
 * One image lane: reads (checked) or writes, classed by phase at
 * submission. Stops when `stop()` says so.
 */
async function imageLane(options: {
  client: IoClient; handle: number; random: () => number; phase: () => Phase; stop: () => boolean;
  kind: 'read' | 'write'; first_lba: number; sector_count: number; generator: StampGenerator | null;
  image: Target; frozen: SectorModel; take_sequence: number; tally: ImageTally; load: WriteLoad;
}): Promise<void> {
  const { client, handle, random, phase, stop, kind, first_lba, sector_count, tally, load } = options;
  while (!stop()) {
    const max = kind === 'read' ? READ_SECTORS_MAX : RUN_SECTORS_MAX;
    const count = 1 + Math.floor(random() * max);
    const lba = first_lba + Math.floor(random() * (sector_count - count + 1));
    const submitted = phase();
    let error: unknown = null;
    let data: Buffer | null = null;
    if (kind === 'read') {
      try {
        data = await client.read(handle, lba * SECTOR_BYTES, count * SECTOR_BYTES);
      } catch (caught) {
        error = caught;
      }
    } else {
      // The image writer keeps its own ranges apart (the image model needs that; see load.ts).
      if (options.image.busy.subarray(lba, lba + count).some((b) => b !== 0)) {
        await sleep(0);
        continue;
      }
      error = await writeStamped(client, options.generator!, options.image, lba, count, load);
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
      else if (errno !== ERRNO_EIO && errno !== ERRNO_ENODEV) tally.failures.push(`${where} failed with errno ${errno}, not EIO/ENODEV`);
    }
  }
}

async function attachStamped(name: string, size_bytes: number, seed: number): Promise<Target> {
  const { engine, client } = fixture;
  await engine.attach(fixture.file(`${name}.img`, size_bytes), { name });
  const target = makeTarget(name, engine.resolveExport(name).handle, new SectorModel(size_bytes / SECTOR_BYTES));
  const load = new WriteLoad();
  await prefill(client, new StampGenerator(seed >>> 0, 1), target, load);
  assertNone(load.failures, 'prefill');
  return target;
}

test('ACCEPTANCE 9: destroy while the volume and the image are written and the image is read', bounded(TEST_TIMEOUT_MS, async () => {
  const seed = testSeed('destroy under load');
  const random = seededRandom(seed);
  const { engine, client, dir } = fixture;
  const volume = await attachStamped('busy', VOLUME_BYTES, seed);
  const volume_generators = [new StampGenerator(seed >>> 0, 10), new StampGenerator(seed >>> 0, 11)];
  const volume_load = new WriteLoad();
  let sequence = volume_generators[0]!.sequence;
  for (let round = 0; round < DESTROY_ROUNDS; round += 1) {
    const id = await engine.snapshotCreate({ volumes: ['busy'], storage: `${dir}/busy-${round}.diff`, limit_bytes: STORAGE_LIMIT_BYTES });
    await within(engine.snapshotTake(id), STEP_TIMEOUT_MS, 'take');
    const frozen = volume.model.snapshot();
    const take_sequence = sequence;
    sequence += 1;
    for (const g of volume_generators) g.nextGeneration();
    const image_name = `busy@${id}`;
    const handle = engine.resolveExport(image_name).handle;
    const image = makeTarget(image_name, handle, liveCopy(frozen));
    // Image writes carry the take's sequence: only a volume write could be newer.
    const image_generator = new StampGenerator(seed >>> 0, 50 + round, { first_sequence: take_sequence });
    let phase: Phase = 'before';
    let stopping = false;
    const stop = (): boolean => stopping;
    const tally: ImageTally = { ok: { before: 0, during: 0, after: 0 }, failed: { before: 0, during: 0, after: 0 }, failures: [] };
    const image_load = new WriteLoad();
    const lane = (client_index: number, kind: 'read' | 'write', first_lba: number, sector_count: number): Promise<void> => imageLane({
      client: clients[client_index]!, handle, random, phase: () => phase, stop, kind, first_lba, sector_count,
      generator: kind === 'write' ? image_generator : null, image, frozen, take_sequence, tally, load: image_load,
    });
    const running = [
      ...volume_generators.map((generator, i) => runWriter({
        client: clients[i]!, generator, regions: [{ target: volume, first_lba: 0, sector_count: VOLUME_SECTORS }], random,
        depth: VOLUME_WRITER_DEPTH, run_sectors_max: RUN_SECTORS_MAX, load: volume_load, stop,
      })),
      ...Array.from({ length: IMAGE_WRITER_DEPTH }, () => lane(2, 'write', 0, HALF_SECTORS)),
      ...Array.from({ length: IMAGE_READER_DEPTH / 2 }, () => lane(3, 'read', 0, HALF_SECTORS)),
      ...Array.from({ length: IMAGE_READER_DEPTH / 2 }, () => lane(4, 'read', HALF_SECTORS, HALF_SECTORS)),
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
    assert.is(engine.isLive(handle), false, 'the image handle is dead');
    try {
      engine.resolveExport(image_name);
      assert.unreachable('the image export must be gone after destroy');
    } catch (error) {
      assert.is((error as UblksnapError).code, 'ESRCH');
    }
    assert.is(engine.volumeSnapshotInfo('busy').snapshot_id, null);
    const report = await within(checkTarget(client, volume.handle, volume.model), STEP_TIMEOUT_MS, 'volume check');
    assert.ok(report.ok, describe(`volume after destroy under load (round ${round}, seed ${seed})`, report));
  }
  // A new snapshot of the same volume works as if nothing happened.
  const id = await engine.snapshotCreate({ volumes: ['busy'], storage: `${dir}/busy-after.diff`, limit_bytes: STORAGE_LIMIT_BYTES });
  await within(engine.snapshotTake(id), STEP_TIMEOUT_MS, 'take after the rounds');
  const frozen = volume.model.snapshot();
  const take_sequence = sequence;
  for (const g of volume_generators) g.nextGeneration();
  const load = new WriteLoad();
  await runWriter({
    client: clients[0]!, generator: volume_generators[0]!, regions: [{ target: volume, first_lba: 0, sector_count: VOLUME_SECTORS }],
    random, depth: VOLUME_WRITER_DEPTH, run_sectors_max: RUN_SECTORS_MAX, load, stop: () => false, budget_sectors: 4 * MiB / SECTOR_BYTES,
  });
  assertNone(load.failures, 'volume writes on the new snapshot');
  const image = engine.resolveExport(`busy@${id}`).handle;
  const image_report = await checkTarget(client, image, frozen, { max_sequence: take_sequence });
  assert.ok(image_report.ok, describe(`image of the snapshot after the rounds (seed ${seed})`, image_report));
  const volume_report = await checkTarget(client, volume.handle, volume.model);
  assert.ok(volume_report.ok, describe(`volume (seed ${seed})`, volume_report));
  await within(engine.snapshotDestroy(id), STEP_TIMEOUT_MS, 'destroy');
  await engine.detach('busy');
}));

test('ACCEPTANCE 7: 10 MiB into the image and 10 MiB into the volume at the same time, three times', bounded(TEST_TIMEOUT_MS, async () => {
  const seed = testSeed('concurrent image and volume writes');
  const random = seededRandom(seed);
  const { engine, client, dir } = fixture;
  const volume = await attachStamped('both', CONCURRENT_VOLUME_BYTES, seed);
  const volume_generator = new StampGenerator(seed >>> 0, 20);
  const mib = MiB / SECTOR_BYTES;
  for (let iteration = 0; iteration < CONCURRENT_ITERATIONS; iteration += 1) {
    const id = await engine.snapshotCreate({ volumes: ['both'], storage: `${dir}/both-${iteration}.diff`, limit_bytes: STORAGE_LIMIT_BYTES });
    await within(engine.snapshotTake(id), STEP_TIMEOUT_MS, 'take');
    const take_sequence = volume_generator.sequence;
    volume_generator.nextGeneration();
    const image = makeTarget(`both@${id}`, engine.resolveExport(`both@${id}`).handle, liveCopy(volume.model));
    const image_generator = new StampGenerator(seed >>> 0, 60 + iteration, { first_sequence: take_sequence });
    const image_load = new WriteLoad();
    const volume_load = new WriteLoad();
    const started = Date.now();
    // The image gets [0, 24 MiB), the volume [8, 32 MiB): 16 MiB of chunks see both.
    await within(Promise.all([
      runWriter({
        client: clients[0]!, generator: image_generator, regions: [{ target: image, first_lba: 0, sector_count: 24 * mib }], random,
        depth: 16, run_sectors_max: CONCURRENT_RUN_SECTORS_MAX, load: image_load, stop: () => false,
        budget_sectors: CONCURRENT_BYTES / SECTOR_BYTES,
      }),
      runWriter({
        client: clients[1]!, generator: volume_generator, regions: [{ target: volume, first_lba: 8 * mib, sector_count: 24 * mib }], random,
        depth: 16, run_sectors_max: CONCURRENT_RUN_SECTORS_MAX, load: volume_load, stop: () => false,
        budget_sectors: CONCURRENT_BYTES / SECTOR_BYTES,
      }),
    ]), STEP_TIMEOUT_MS, `concurrent writes (iteration ${iteration}, seed ${seed})`);
    const write_ms = Date.now() - started;
    assertNone(image_load.failures, `image writes (iteration ${iteration}, seed ${seed})`);
    assertNone(volume_load.failures, `volume writes (iteration ${iteration}, seed ${seed})`);
    const expectation = { max_sequence: take_sequence };
    const checks = async (when: string): Promise<void> => {
      const image_report = await within(checkTarget(client, image.handle, image.model, expectation), STEP_TIMEOUT_MS, 'image check');
      assert.ok(image_report.ok, describe(`image ${when} (iteration ${iteration}, seed ${seed})`, image_report));
      const volume_report = await within(checkTarget(client, volume.handle, volume.model), STEP_TIMEOUT_MS, 'volume check');
      assert.ok(volume_report.ok, describe(`volume ${when} (iteration ${iteration}, seed ${seed})`, volume_report));
    };
    await checks('right after the writes');
    await waitStored(engine, id, STORE_WAIT_MS);
    await checks('once every chunk was stored');
    const info = engine.snapshotInfo(id);
    console.log(`  iteration ${iteration}: ${image_load.acknowledged_count} image and ${volume_load.acknowledged_count} volume writes in ${write_ms} ms; `
      + `${info.chunks[0]!.stored} chunks stored, storage ${info.storage.filled_sectors / 2048} MiB filled`);
    await within(engine.snapshotDestroy(id), STEP_TIMEOUT_MS, 'destroy');
    const report = await checkTarget(client, volume.handle, volume.model);
    assert.ok(report.ok, describe(`volume after destroy: image writes never reached it (iteration ${iteration}, seed ${seed})`, report));
  }
  await engine.detach('both');
}));

test.run();

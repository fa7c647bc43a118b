// Goal: DESIGN §10 "Isolation" under real concurrency inside the engine —
// a write acknowledged before take is in the image, a write submitted after
// take resolved is not, image reads never see post-take data, and a take
// of two volumes is one coherent cut across both (ACCEPTANCE 10 in engine
// form).
// Method: stamped sectors (test/lib/stamp.ts) from several writers, each
// with its own IoClient (its own queue) and many requests in flight, on
// ranges that share chunks; a SectorModel per volume records every
// acknowledged write. (a) A quiet take, then writers hammer the volume
// while image readers read the same chunks; every image read and the whole
// image must equal the frozen model exactly, with no stamp newer than the
// take. (b) Takes in the middle of the load: the model is frozen when
// snapshotTake() is called, the writes in flight then or submitted before
// it resolved are marked uncertain, every generator moves to the next
// generation right after it resolved; whole images are checked while the
// writers go on, over several take/destroy cycles. Chain writers
// alternate single-sector writes between the two volumes, each submitted
// after the previous one was acknowledged; a coherent cut holds steps
// 0..a on the chain's first volume and 0..b on its second with b ≤ a ≤ b + 1.
// Seeded (SEED=… replays the mix, not the exact interleaving).

import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IoClient } from '../../src/frontends/in-process/io-client';
import { seededRandom, startFixture, type Fixture } from '../lib/engine-fixture';
import { SECTOR_BYTES, SectorModel, StampGenerator, checkAgainst, decodeStamp } from '../lib/stamp';
import { testSeed } from '../lib/workers';
import {
  CLOSE_TIMEOUT_MS, MiB, TEST_TIMEOUT_MS, WriteLoad, assertNone, bounded, checkTarget, closeWithin, describe,
  firstDifferentSector, makeTarget, prefill, readWhole, runReader, runWriter, verifyAgainst, within, writeStamped,
  type Region, type Target,
} from './load';

const VOLUME_BYTES = 8 * MiB;
const VOLUME_SECTORS = VOLUME_BYTES / SECTOR_BYTES;
const WRITER_COUNT = 4;
/** Requests each writer keeps in flight. */
const WRITER_DEPTH = 12;
const READER_DEPTH = 6;
/** Up to 48 KiB per write: many cross a 64 KiB chunk boundary. */
const RUN_SECTORS_MAX = 96;
/**
 * Writer 0 writes up to 1 MiB at a time instead: writes of 256 KiB and more
 * go to libuv's thread pool and hold the write gate until they land
 * (cow-read.ts), so take must wait for them and the image must hold none.
 */
const LARGE_RUN_SECTORS_MAX = 2048;

function runSectorsMax(writer: number): number {
  return writer === 0 ? LARGE_RUN_SECTORS_MAX : RUN_SECTORS_MAX;
}
const READ_SECTORS_MAX = 512;
/** (a): quiet take, then load on the held snapshot, this many rounds of this long. */
const HELD_ROUNDS = 3;
const HELD_LOAD_MS = 1500;
/** (b): takes in the middle of the load. */
const TAKE_CYCLES = 6;
const PRE_TAKE_LOAD_MS_MAX = 400;
const POST_TAKE_LOAD_MS = 700;
/** Chains (half of them va → vb, half vb → va), each on its own slots in the first chunk. */
const CHAIN_COUNT = 16;
const CHAIN_SLOTS = 8;
const CHAIN_SECTORS = CHAIN_COUNT * CHAIN_SLOTS;
/** Any single control call or check must finish within this: a hang is a failure. */
const STEP_TIMEOUT_MS = 20_000;
const STORAGE_LIMIT_BYTES = 512 * MiB;

let fixture: Fixture;
const clients: IoClient[] = [];

test.before(async () => {
  fixture = await startFixture();
  for (let i = 0; i < WRITER_COUNT + 2; i += 1) clients.push(await IoClient.open(fixture.engine, 32, MiB));
});

test.after(async () => {
  await closeWithin(async () => {
    for (const client of clients.splice(0)) await client.close();
    await fixture?.close();
  }, CLOSE_TIMEOUT_MS);
});

async function attachStamped(name: string, generator: StampGenerator, load: WriteLoad): Promise<Target> {
  const { engine, client } = fixture;
  await engine.attach(fixture.file(`${name}.img`, VOLUME_BYTES), { name });
  const target = makeTarget(name, engine.resolveExport(name).handle, new SectorModel(VOLUME_SECTORS));
  await prefill(client, generator, target, load);
  return target;
}

test('(a) concurrent writers and image readers on shared chunks of a held snapshot', bounded(TEST_TIMEOUT_MS, async () => {
  const seed = testSeed('isolation (a)');
  const random = seededRandom(seed);
  const { engine, client, dir } = fixture;
  const load = new WriteLoad();
  const generators = Array.from({ length: WRITER_COUNT }, (_, i) => new StampGenerator(seed >>> 0, 10 + i));
  const volume = await attachStamped('held', new StampGenerator(seed >>> 0, 1), load);
  // Writers and readers share a 2 MiB hot zone (32 chunks) and the rest.
  const hot: Region = { target: volume, first_lba: MiB / SECTOR_BYTES, sector_count: 2 * MiB / SECTOR_BYTES };
  const whole: Region = { target: volume, first_lba: 0, sector_count: VOLUME_SECTORS };
  let reads = 0;
  for (let round = 0; round < HELD_ROUNDS; round += 1) {
    const id = await engine.snapshotCreate({ volumes: ['held'], storage: `${dir}/held-${round}.diff`, limit_bytes: STORAGE_LIMIT_BYTES });
    await within(engine.snapshotTake(id), STEP_TIMEOUT_MS, 'take');
    const frozen = volume.model.snapshot();
    const take_sequence = generators[0]!.sequence;
    for (const g of generators) g.nextGeneration();
    const expectation = { max_sequence: take_sequence };
    const image = engine.resolveExport(`held@${id}`).handle;
    const failures: string[] = [];
    const deadline = Date.now() + HELD_LOAD_MS;
    const stop = (): boolean => Date.now() > deadline;
    const writers = generators.map((generator, i) => runWriter({
      client: clients[i]!, generator, regions: [hot, hot, whole], random, depth: WRITER_DEPTH,
      run_sectors_max: runSectorsMax(i), load, stop,
    }));
    const reader = (first_lba: number, sector_count: number, c: IoClient): Promise<number> => runReader({
      client: c, handle: () => image, first_lba, sector_count, random, depth: READER_DEPTH, read_sectors_max: READ_SECTORS_MAX, stop,
      verify: verifyAgainst(frozen, expectation, `image read in round ${round} (seed ${seed})`),
      onError: (error, lba, count) => { failures.push(`image read LBA ${lba}+${count} failed: ${(error as Error).message}`); return false; },
      failures,
    });
    const read_counts = await within(Promise.all([
      reader(hot.first_lba, hot.sector_count, clients[WRITER_COUNT]!),
      reader(0, VOLUME_SECTORS, clients[WRITER_COUNT + 1]!),
      ...writers,
    ]), HELD_LOAD_MS + STEP_TIMEOUT_MS, 'held load');
    reads += (read_counts[0] as number) + (read_counts[1] as number);
    assertNone(failures, `image reads during the load (seed ${seed})`);
    assertNone(load.failures, `volume writes (seed ${seed})`);
    const report = await within(checkTarget(client, image, frozen, expectation), STEP_TIMEOUT_MS, 'image check');
    assert.ok(report.ok, describe(`whole image after round ${round} (seed ${seed})`, report));
    const volume_report = await checkTarget(client, volume.handle, volume.model);
    assert.ok(volume_report.ok, describe(`volume after round ${round} (seed ${seed})`, volume_report));
    await within(engine.snapshotDestroy(id), STEP_TIMEOUT_MS, 'destroy');
  }
  console.log(`  ${load.acknowledged_count} writes (${(load.sectors_acknowledged * SECTOR_BYTES / MiB).toFixed(0)} MiB), ${reads} checked image reads`);
  assert.ok(reads > 100 && load.acknowledged_count > 1000, 'the load did run');
  await engine.detach('held');
}));

/**
 * A chain: single-sector writes alternating between the volumes in `order`,
 * each submitted once the previous one was acknowledged. It remembers the
 * step of every stamp it wrote (by time_ns, per volume) to find the last
 * step an image holds.
 */
interface Chain {
  generator: StampGenerator;
  first_lba: number;
  order: number[];
  steps: Map<bigint, number>[];
}

async function runChain(client: IoClient, chain: Chain, targets: Target[], load: WriteLoad, stop: () => boolean): Promise<void> {
  for (let step = 0; !stop(); step += 1) {
    for (const v of chain.order) {
      const error = await writeStamped(client, chain.generator, targets[v]!, chain.first_lba + (step % CHAIN_SLOTS), 1, load);
      if (error !== null) return;
      chain.steps[v]!.set(chain.generator.last_time_ns, step);
    }
  }
}

/** The last step of the chain found in volume v's image, or -1. */
function lastChainStep(image_buffer: Buffer, chain: Chain, v: number): number {
  let last = -1;
  for (let lba = chain.first_lba; lba < chain.first_lba + CHAIN_SLOTS; lba += 1) {
    const header = decodeStamp(image_buffer, lba * SECTOR_BYTES);
    if (header.writer_id !== chain.generator.writer_id) continue;
    const step = chain.steps[v]!.get(header.time_ns);
    if (step !== undefined && step > last) last = step;
  }
  return last;
}

test('(b) takes in the middle of heavy writes, two volumes, several cycles', bounded(TEST_TIMEOUT_MS, async () => {
  const seed = testSeed('isolation (b)');
  const random = seededRandom(seed);
  const { engine, client, dir } = fixture;
  const load = new WriteLoad();
  const generators = Array.from({ length: WRITER_COUNT }, (_, i) => new StampGenerator(seed >>> 0, 20 + i));
  const chains: Chain[] = Array.from({ length: CHAIN_COUNT }, (_, c) => ({
    generator: new StampGenerator(seed >>> 0, 100 + c), first_lba: c * CHAIN_SLOTS,
    order: c % 2 === 0 ? [0, 1] : [1, 0], steps: [new Map(), new Map()],
  }));
  const all_generators = [...generators, ...chains.map((c) => c.generator)];
  const prefill_generator = new StampGenerator(seed >>> 0, 2);
  const volumes = [await attachStamped('va', prefill_generator, load), await attachStamped('vb', prefill_generator, load)];
  const regions: Region[] = volumes.map((target) => ({ target, first_lba: CHAIN_SECTORS, sector_count: VOLUME_SECTORS - CHAIN_SECTORS }));
  let stopping = false;
  const stop = (): boolean => stopping;
  const writers = generators.map((generator, i) => runWriter({
    client: clients[i]!, generator, regions, random, depth: WRITER_DEPTH, run_sectors_max: runSectorsMax(i), load, stop,
  }));
  const chain_runs = chains.map((chain) => runChain(clients[WRITER_COUNT]!, chain, volumes, load, stop));
  let uncertain_sectors = 0;
  try {
    for (let cycle = 0; cycle < TAKE_CYCLES; cycle += 1) {
      const id = await engine.snapshotCreate({ volumes: ['va', 'vb'], storage: `${dir}/pair-${cycle}.diff`, limit_bytes: STORAGE_LIMIT_BYTES });
      await sleep(50 + Math.floor(random() * PRE_TAKE_LOAD_MS_MAX));
      // The take: freeze the models at the call, mark what it cuts through.
      const frozen = volumes.map((v) => v.model.snapshot());
      const take_sequence = all_generators[0]!.sequence;
      const markUncertain = (write: { target: Target; first_lba: number; sector_count: number }): void => {
        frozen[volumes.indexOf(write.target)]!.markUncertain(write.first_lba, write.sector_count);
        uncertain_sectors += write.sector_count;
      };
      for (const write of load.in_flight) markUncertain(write);
      load.onSubmit = markUncertain;
      const in_flight_at_take = load.in_flight.size;
      await within(engine.snapshotTake(id), STEP_TIMEOUT_MS, `take ${cycle}`);
      for (const g of all_generators) g.nextGeneration();
      load.onSubmit = null;
      // From here every write is newer than the take and must stay out of the images.
      const expectation = { max_sequence: take_sequence };
      const images = volumes.map((v) => engine.resolveExport(`${v.label}@${id}`).handle);
      // The first look at each image: it must not change while the snapshot lives.
      const first_looks = await Promise.all(images.map((image) => readWhole(client, image, 0, VOLUME_BYTES)));
      const failures: string[] = [];
      const read_until = Date.now() + POST_TAKE_LOAD_MS;
      const reads = await Promise.all(volumes.map((v, i) => runReader({
        client: clients[WRITER_COUNT + 1]!, handle: () => images[i]!, first_lba: 0, sector_count: VOLUME_SECTORS, random,
        depth: READER_DEPTH / 2, read_sectors_max: READ_SECTORS_MAX, stop: () => Date.now() > read_until,
        verify: verifyAgainst(frozen[i]!, expectation, `image of ${v.label}, cycle ${cycle} (seed ${seed})`),
        onError: (error, lba, count) => { failures.push(`image read LBA ${lba}+${count}: ${(error as Error).message}`); return false; },
        failures,
      })));
      assertNone(failures, `image reads after take ${cycle} (seed ${seed})`);
      assertNone(load.failures, `volume writes (seed ${seed})`);
      // Whole images while the writers go on: still exactly the cut.
      const last_looks: Buffer[] = [];
      for (const [i, v] of volumes.entries()) {
        const buffer = await within(readWhole(client, images[i]!, 0, VOLUME_BYTES), STEP_TIMEOUT_MS, 'image read');
        const report = checkAgainst(buffer, 0, VOLUME_SECTORS, frozen[i]!, expectation);
        assert.ok(report.ok, describe(`image of ${v.label} at take ${cycle} (seed ${seed}, ${in_flight_at_take} writes in flight at the take)`, report));
        const changed = firstDifferentSector(first_looks[i]!, buffer);
        assert.is(changed, -1, `image of ${v.label} changed after take ${cycle} at LBA ${changed} (seed ${seed})`);
        last_looks.push(buffer);
      }
      const cut: number[] = [];
      for (const chain of chains) {
        const [first, second] = chain.order.map((v) => lastChainStep(last_looks[v]!, chain, v)) as [number, number];
        const names = chain.order.map((v) => volumes[v]!.label).join(' → ');
        assert.ok(second <= first && first <= second + 1,
          `the cut is coherent across volumes: chain ${names} at step ${first} in the first image, ${second} in the second (seed ${seed}, cycle ${cycle})`);
        cut.push(first);
      }
      console.log(`  cycle ${cycle}: ${in_flight_at_take} writes in flight at the take, chains cut at steps ${Math.min(...cut)}-${Math.max(...cut)}, ${reads[0]! + reads[1]!} image reads`);
      await within(engine.snapshotDestroy(id), STEP_TIMEOUT_MS, `destroy ${cycle}`);
    }
  } finally {
    stopping = true;
    await within(Promise.all([...writers, ...chain_runs]), STEP_TIMEOUT_MS, 'writers to drain');
  }
  assertNone(load.failures, `volume writes (seed ${seed})`);
  for (const v of volumes) {
    const report = await checkTarget(client, v.handle, v.model);
    assert.ok(report.ok, describe(`volume ${v.label} at the end (seed ${seed})`, report));
  }
  console.log(`  ${load.acknowledged_count} writes, ${uncertain_sectors} sectors uncertain across ${TAKE_CYCLES} takes`);
}));

test.run();

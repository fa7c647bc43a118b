// Goal: isolation under repeated takes, through every frontend (docs/design.md §10
// "Isolation"; ACCEPTANCE 10): a write acknowledged before take is in the
// image, a write submitted after take resolved is not, an image does not
// change while its snapshot lives, and a take of two volumes is one
// coherent cut across both.
// Method: stamped sectors (test/lib/stamp) and a SectorModel per volume
// recording every acknowledged write (test/lib/load.ts). Four writers keep
// many requests in flight on both volumes (one writes up to 1 MiB at a time:
// those writes hold the gate until they land, so take must wait for them),
// each volume reached over several connections of the driver. Several
// create/take/destroy cycles in the middle of that load: the model is frozen
// when snapshotTake() is called, the writes in flight then or submitted
// before it resolved are marked uncertain (either answer is right for them),
// every generator moves to the next generation right after it resolved.
// Then each image is read whole (first look), read at random by checking
// readers while the writers go on, and read whole again: exactly the frozen
// model, no stamp newer than the take, and equal to its first look.
// Chain writers alternate single-sector writes between the two volumes,
// each submitted after the previous one was acknowledged; a coherent cut
// holds steps 0..a on the chain's first volume and 0..b on its second with
// b ≤ a ≤ b + 1. At the end both volumes hold exactly every acknowledged
// write. Seeded (SEED=… replays the mix, not the exact interleaving).

import { setTimeout as sleep } from 'node:timers/promises';
import * as assert from 'uvu/assert';
import { seededRandom } from '../lib/random';
import { SECTOR_BYTES, SectorModel, StampGenerator, checkAgainst, decodeStamp } from '../lib/stamp';
import { sized } from '../lib/slow-machine';
import { testSeed } from '../lib/workers';
import {
  MiB, WriteLoad, assertNone, checkTarget, describe, firstDifferentSector, makeTarget, prefill, readWhole, runReader,
  runWriter, verifyAgainst, within, writeStamped, type Region, type Target,
} from '../lib/load';
import { runScenario, type Rig } from './harness';

/** Sizes: sized(full, guest), slow-machine.ts. */
const VOLUME_BYTES = sized(8 * MiB, 2 * MiB);
const VOLUME_SECTORS = VOLUME_BYTES / SECTOR_BYTES;
const WRITER_COUNT = 4;
/** Requests each writer keeps in flight. */
const WRITER_DEPTH = 8;
/** Connections (or queues) per volume the writers share. */
const VOLUME_CONNECTIONS = 3;
const READER_DEPTH = 4;
/** Up to 48 KiB per write: many cross a 64 KiB chunk boundary. */
const RUN_SECTORS_MAX = 96;
/** Writer 0 writes up to 1 MiB at a time: those go to libuv's pool and hold the gate until they land. */
const LARGE_RUN_SECTORS_MAX = 2048;
const READ_SECTORS_MAX = 512;
const TAKE_CYCLES = sized(4, 2);
const PRE_TAKE_LOAD_MS_MAX = 300;
const POST_TAKE_LOAD_MS = sized(500, 300);
/** Chains (half of them va → vb, half vb → va), each on its own slots in the first chunk. */
const CHAIN_COUNT = 16;
const CHAIN_SLOTS = 8;
const CHAIN_SECTORS = CHAIN_COUNT * CHAIN_SLOTS;
/** Any single control call or check must finish within this: a hang is a failure. */
const STEP_TIMEOUT_MS = 20_000;
const STORAGE_LIMIT_BYTES = 512 * MiB;
/** The load must have run: at least this many writes acknowledged. */
const ACKNOWLEDGED_WRITES_MIN = sized(1000, 100);

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

async function runChain(chain: Chain, targets: Target[], load: WriteLoad, stop: () => boolean): Promise<void> {
  for (let step = 0; !stop(); step += 1) {
    for (const v of chain.order) {
      const error = await writeStamped(chain.generator, targets[v]!, chain.first_lba + (step % CHAIN_SLOTS), 1, load);
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

async function isolation(rig: Rig): Promise<void> {
  const seed = testSeed(`isolation via ${rig.driver.name}`);
  const random = seededRandom(seed);
  const { engine } = rig;
  const load = new WriteLoad();
  const generators = Array.from({ length: WRITER_COUNT }, (_, i) => new StampGenerator(seed >>> 0, 20 + i));
  const chains: Chain[] = Array.from({ length: CHAIN_COUNT }, (_, c) => ({
    generator: new StampGenerator(seed >>> 0, 100 + c), first_lba: c * CHAIN_SLOTS,
    order: c % 2 === 0 ? [0, 1] : [1, 0], steps: [new Map(), new Map()],
  }));
  const all_generators = [...generators, ...chains.map((c) => c.generator)];
  const prefill_generator = new StampGenerator(seed >>> 0, 2);
  const volumes: Target[] = [];
  for (const name of ['va', 'vb']) {
    await rig.attach(name, VOLUME_BYTES);
    const target = makeTarget(name, await rig.openSpread(name, VOLUME_CONNECTIONS), new SectorModel(VOLUME_SECTORS));
    await within(prefill(prefill_generator, target, load), STEP_TIMEOUT_MS, 'prefill');
    volumes.push(target);
  }
  assertNone(load.failures, 'prefill');
  const regions: Region[] = volumes.map((target) => ({ target, first_lba: CHAIN_SECTORS, sector_count: VOLUME_SECTORS - CHAIN_SECTORS }));
  let stopping = false;
  const stop = (): boolean => stopping;
  const writers = generators.map((generator, i) => runWriter({
    generator, regions, random, depth: WRITER_DEPTH, run_sectors_max: i === 0 ? LARGE_RUN_SECTORS_MAX : RUN_SECTORS_MAX, load, stop,
  }));
  const chain_runs = chains.map((chain) => runChain(chain, volumes, load, stop));
  let uncertain_sectors = 0;
  try {
    for (let cycle = 0; cycle < TAKE_CYCLES; cycle += 1) {
      const where = `cycle ${cycle}, seed ${seed}`;
      const id = await rig.create(['va', 'vb'], STORAGE_LIMIT_BYTES);
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
      const images = await Promise.all(volumes.map((v) => rig.open(`${v.label}@${id}`)));
      // The first look at each image: it must not change while the snapshot lives.
      const first_looks = await within(Promise.all(images.map((image) => readWhole(image, 0, VOLUME_BYTES))), STEP_TIMEOUT_MS, 'first look');
      const failures: string[] = [];
      const read_until = Date.now() + POST_TAKE_LOAD_MS;
      const reads = await within(Promise.all(volumes.map((v, i) => runReader({
        io: () => images[i]!, first_lba: 0, sector_count: VOLUME_SECTORS, random,
        depth: READER_DEPTH, read_sectors_max: READ_SECTORS_MAX, stop: () => Date.now() > read_until,
        verify: verifyAgainst(frozen[i]!, expectation, `image of ${v.label}, ${where}`),
        onError: (error, lba, count) => { failures.push(`image read LBA ${lba}+${count}: ${(error as Error).message}`); return false; },
        failures,
      }))), STEP_TIMEOUT_MS, 'image readers');
      assertNone(failures, `image reads after take (${where})`);
      assertNone(load.failures, `volume writes (${where})`);
      // Whole images while the writers go on: still exactly the cut.
      const last_looks: Buffer[] = [];
      for (const [i, v] of volumes.entries()) {
        const buffer = await within(readWhole(images[i]!, 0, VOLUME_BYTES), STEP_TIMEOUT_MS, 'image read');
        const report = checkAgainst(buffer, 0, VOLUME_SECTORS, frozen[i]!, expectation);
        assert.ok(report.ok, describe(`image of ${v.label} (${where}, ${in_flight_at_take} writes in flight at the take)`, report));
        const changed = firstDifferentSector(first_looks[i]!, buffer);
        assert.is(changed, -1, `image of ${v.label} changed after the take at LBA ${changed} (${where})`);
        last_looks.push(buffer);
      }
      const cut: number[] = [];
      for (const chain of chains) {
        const [first, second] = chain.order.map((v) => lastChainStep(last_looks[v]!, chain, v)) as [number, number];
        const names = chain.order.map((v) => volumes[v]!.label).join(' → ');
        assert.ok(second <= first && first <= second + 1,
          `the cut is coherent across volumes: chain ${names} at step ${first} in the first image, ${second} in the second (${where})`);
        cut.push(first);
      }
      console.log(`  cycle ${cycle}: ${in_flight_at_take} writes in flight at the take, chains cut at steps ${Math.min(...cut)}-${Math.max(...cut)}, ${reads[0]! + reads[1]!} image reads`);
      await within(engine.snapshotDestroy(id), STEP_TIMEOUT_MS, `destroy ${cycle}`);
      for (const image of images) await image.close();
    }
  } finally {
    stopping = true;
    await within(Promise.all([...writers, ...chain_runs]), STEP_TIMEOUT_MS, 'writers to drain');
  }
  assertNone(load.failures, `volume writes (seed ${seed})`);
  for (const v of volumes) {
    const report = await within(checkTarget(v.io, v.model), STEP_TIMEOUT_MS, `check of ${v.label}`);
    assert.ok(report.ok, describe(`volume ${v.label} at the end (seed ${seed})`, report));
  }
  console.log(`  ${load.acknowledged_count} writes (${(load.sectors_acknowledged * SECTOR_BYTES / MiB).toFixed(0)} MiB), ${uncertain_sectors} sectors uncertain across ${TAKE_CYCLES} takes`);
  assert.ok(load.acknowledged_count > ACKNOWLEDGED_WRITES_MIN, 'the load did run');
}

runScenario('isolation under repeated takes', isolation);

// Goal: take's quiesce, deterministically, through every frontend (docs/design.md §3
// "Take"; §10 "Isolation"): a write already inside the write gate when a
// take begins is waited for and is in the image; a write that arrives while
// the gate is frozen waits (it is neither acknowledged nor on the volume
// until the take is done) and is not in the image; a write submitted after
// the take is not in the image; the volume holds every write.
// Method: the engine's test-only write hold (src/shared/write-hold.ts,
// with fault injection): write A is held inside the gate; the take starts
// and freezes the gate, and must not finish while A is held; write B is
// submitted and must park at the frozen gate (the actors' parked counter
// goes up) without being acknowledged; only then is A released. After the
// take: write C over A's range. Stamped sectors, with one model of what
// the image must hold (the prefill, W0 acknowledged before the take, A) and
// one of the volume (those plus B and C), checked exactly. A is 320 KiB at
// an unaligned offset, so once released it goes down the deferred path
// (libuv's pool) still holding the gate, where its frontend's queue defers
// large writes (a session the actor hosts: NBD; the in-process frontend's
// request ring writes in place, cow/volume-requests.ts).
// A gate that ignored FROZEN fails this test: B is acknowledged while the
// take is frozen and lands on the volume before the switch, so it leaks
// into the image (both are checked).

import { setTimeout as sleep } from 'node:timers/promises';
import * as assert from 'uvu/assert';
import { SECTOR_BYTES, SectorModel, StampGenerator, type StampIdentity } from '../lib/stamp';
import type { BlockTarget } from '../lib/block-target';
import { KiB, MiB, checkTarget, describe, within } from '../lib/load';
import { scaledTimeout } from '../lib/slow-machine';
import { testSeed } from '../lib/workers';
import { runScenario, type Rig } from './harness';

const VOLUME_BYTES = 2 * MiB;
const VOLUME_SECTORS = VOLUME_BYTES / SECTOR_BYTES;
const CHUNK_BYTES = 64 * KiB;
/** W0: acknowledged before the take, in chunk 1. */
const W0 = { offset_bytes: CHUNK_BYTES + 4 * KiB, length_bytes: 8 * KiB };
/** A: held inside the gate across the take start; 320 KiB from chunk 3 + 4 KiB (deferred write path). */
const A = { offset_bytes: 3 * CHUNK_BYTES + 4 * KiB, length_bytes: 320 * KiB };
/** B: arrives while the gate is frozen; shares chunk 1 with W0 and overlaps A's last chunk. */
const B = [
  { offset_bytes: CHUNK_BYTES + 16 * KiB, length_bytes: 4 * KiB },
];
const B_OVER_A = { offset_bytes: A.offset_bytes + A.length_bytes - 4 * KiB, length_bytes: 8 * KiB };
/** C: after the take, over A and beyond. */
const C = { offset_bytes: A.offset_bytes, length_bytes: 64 * KiB };
/** How long the test waits for a state that must come (a held write, a frozen gate, a parked write). */
const STATE_TIMEOUT_MS = 10_000;
/** How long it watches for a thing that must not happen (the take finishing while A is held). */
const MUST_NOT_HAPPEN_MS = 300;
const POLL_MS = 10;
const STEP_TIMEOUT_MS = 20_000;
const STORAGE_LIMIT_BYTES = 64 * MiB;

/** A promise with its state visible. */
interface Watched {
  settled: boolean;
  error: unknown;
  done: Promise<void>;
}

function watch(promise: Promise<unknown>): Watched {
  const watched: Watched = { settled: false, error: null, done: Promise.resolve() };
  watched.done = promise.then(
    () => { watched.settled = true; },
    (error: unknown) => { watched.settled = true; watched.error = error; },
  );
  return watched;
}

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const timeout_ms = scaledTimeout(STATE_TIMEOUT_MS);
  const deadline = Date.now() + timeout_ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeout_ms} ms`);
    await sleep(POLL_MS);
  }
}

interface StampedWrite {
  first_lba: number;
  sector_count: number;
  stamp: StampIdentity;
  done: Watched;
}

/** Fills a range with stamps and submits it (not awaited). */
function submitStamped(io: BlockTarget, generator: StampGenerator, range: { offset_bytes: number; length_bytes: number }): StampedWrite {
  const first_lba = range.offset_bytes / SECTOR_BYTES;
  const sector_count = range.length_bytes / SECTOR_BYTES;
  const data = Buffer.alloc(range.length_bytes);
  generator.fill(data, first_lba, sector_count);
  return { first_lba, sector_count, stamp: generator.lastStamp(), done: watch(io.write(range.offset_bytes, data)) };
}

function record(models: SectorModel[], write: StampedWrite): void {
  for (const model of models) model.record(write.first_lba, write.sector_count, write.stamp);
}

async function parkedCount(rig: Rig): Promise<number> {
  const stats = await rig.engine.actorStats();
  return stats.filter((s) => s.kind === 'cow').reduce((sum, s) => sum + s.parked, 0);
}

async function takeQuiesce(rig: Rig): Promise<void> {
  const seed = testSeed(`take quiesce via ${rig.driver.name}`);
  const { engine } = rig;
  await rig.attach('vol', VOLUME_BYTES);
  // A and B on connections of their own: B must not queue behind A in a client.
  const io_a = await rig.open('vol');
  const io_b = await rig.open('vol');
  const generator = new StampGenerator(seed >>> 0, 1, { clock: 'counter' });
  const image_model = new SectorModel(VOLUME_SECTORS);
  const volume_model = new SectorModel(VOLUME_SECTORS);
  const prefill = submitStamped(io_a, generator, { offset_bytes: 0, length_bytes: VOLUME_BYTES });
  await prefill.done.done;
  assert.is(prefill.done.error, null, 'prefill');
  record([image_model, volume_model], prefill);
  const w0 = submitStamped(io_b, generator, W0);
  await w0.done.done;
  assert.is(w0.done.error, null, 'W0');
  record([image_model, volume_model], w0);

  // A enters the gate and stays there (released at the end whatever happens: a
  // failed check must not leave the engine's stop waiting for the hold's timeout).
  engine.holdNextWrite('vol');
  try {
    await heldTake(rig, seed, generator, io_a, io_b, image_model, volume_model);
  } finally {
    engine.releaseHeldWrite('vol');
  }
}

async function heldTake(rig: Rig, seed: number, generator: StampGenerator, io_a: BlockTarget, io_b: BlockTarget,
  image_model: SectorModel, volume_model: SectorModel): Promise<void> {
  const { engine } = rig;
  const a = submitStamped(io_a, generator, A);
  assert.ok(await engine.waitWriteHeld('vol', scaledTimeout(STATE_TIMEOUT_MS)), 'write A is held inside the gate');
  assert.is(engine.writeGate('vol').writes_in_flight, 1, 'A counts as a write in flight');
  assert.not.ok(a.done.settled, 'A is not acknowledged while held');

  // The take freezes the gate and must wait for A.
  const id = await rig.create(['vol'], STORAGE_LIMIT_BYTES);
  const take_sequence = generator.sequence;
  const take = watch(engine.snapshotTake(id));
  await until(() => engine.writeGate('vol').frozen, 'the take freezes the gate');
  await sleep(MUST_NOT_HAPPEN_MS);
  assert.not.ok(take.settled, 'the take does not finish while a write is inside the gate');

  // B arrives at the frozen gate: it parks, unacknowledged.
  generator.nextGeneration();
  const parked_before = await parkedCount(rig);
  const b = [...B, B_OVER_A].map((range) => submitStamped(io_b, generator, range));
  await until(async () => b.some((w) => w.done.settled) || await parkedCount(rig) >= parked_before + b.length,
    'writes arriving at the frozen gate park (or complete)');
  for (const w of b) {
    assert.not.ok(w.done.settled, `a write submitted while the gate is frozen (LBA ${w.first_lba}+${w.sector_count}) `
      + `waits for the take: it was acknowledged during the freeze (seed ${seed})`);
  }
  assert.not.ok(take.settled, 'the take still waits for A');

  // Release A: it lands, the take switches, B goes on after the thaw.
  engine.releaseHeldWrite('vol');
  await within(a.done.done, STEP_TIMEOUT_MS, 'A after its release');
  assert.is(a.done.error, null, 'A succeeds');
  record([image_model, volume_model], a);
  await within(take.done, STEP_TIMEOUT_MS, 'the take');
  assert.is(take.error, null, 'the take succeeds');
  await within(Promise.all(b.map((w) => w.done.done)), STEP_TIMEOUT_MS, 'B after the thaw');
  for (const w of b) {
    assert.is(w.done.error, null, 'B succeeds after the thaw');
    record([volume_model], w);
  }
  const c = submitStamped(io_a, generator, C);
  await within(c.done.done, STEP_TIMEOUT_MS, 'C');
  assert.is(c.done.error, null, 'C succeeds');
  record([volume_model], c);

  const image = await rig.open(`vol@${id}`);
  const expectation = { max_sequence: take_sequence };
  const image_report = await within(checkTarget(image, image_model.snapshot(), expectation), STEP_TIMEOUT_MS, 'image check');
  assert.ok(image_report.ok, describe(`image: W0 and A in, B and C out (seed ${seed})`, image_report));
  const volume_report = await within(checkTarget(io_a, volume_model), STEP_TIMEOUT_MS, 'volume check');
  assert.ok(volume_report.ok, describe(`volume: every write (seed ${seed})`, volume_report));
  await within(engine.snapshotDestroy(id), STEP_TIMEOUT_MS, 'destroy');
}

runScenario('take quiesce', takeQuiesce);

// Goal: overflow breaks the snapshot and never the volume, through every
// frontend (docs/design.md §3 "Overflow and errors", §10 "Overflow"): with a diff storage limit far below what the
// writes copy, every volume write succeeds and the volume holds exactly what was
// written; a no_space and a corrupted (ENOSPC) event reach a client waiting
// for events; image reads and image writes then fail with EIO; volume
// writes go on after the overflow.
// Method: a 24 MiB volume prefilled with stamped sectors; a snapshot whose
// storage may not grow past 2 MiB; a waiter on the snapshot's events
// started before the load; two writers (several connections) write random
// stamped runs over the whole volume, then one pass overwrites every chunk,
// so far more than 2 MiB of chunks are first touched; the volume is then
// checked exactly against the model of every acknowledged write. Seeded.

import * as assert from 'uvu/assert';
import type { SnapshotEvent } from '../../src/engine/api';
import { ERRNO, errnoOf } from '../lib/block-target';
import { seededRandom } from '../lib/random';
import { SECTOR_BYTES, SectorModel, StampGenerator } from '../lib/stamp';
import { sized } from '../lib/slow-machine';
import { testSeed } from '../lib/workers';
import {
  MiB, WriteLoad, assertNone, checkTarget, describe, makeTarget, prefill, runWriter, within, writeStamped,
} from '../lib/load';
import { runScenario, type Rig } from './harness';

/** Sizes: sized(full, guest), slow-machine.ts; the guest's keeps the ratios. */
const VOLUME_BYTES = sized(24 * MiB, 8 * MiB);
const VOLUME_SECTORS = VOLUME_BYTES / SECTOR_BYTES;
/** The diff storage may hold 2 MiB of chunks: a twelfth of the volume. */
const STORAGE_LIMIT_BYTES = sized(2 * MiB, MiB);
const CONNECTIONS = 3;
const WRITER_COUNT = 2;
const WRITER_DEPTH = 8;
const RUN_SECTORS_MAX = 256;
/** Random writes per writer before the full pass. */
const RANDOM_BUDGET_SECTORS = sized(4 * MiB, MiB) / SECTOR_BYTES;
/** The full pass: one write per this many sectors, over every chunk. */
const PASS_SECTORS = 2048;
/** The events must come within this once the storage overflowed. */
const EVENT_TIMEOUT_MS = 20_000;
const STEP_TIMEOUT_MS = 20_000;

/** Collects events until one of `codes` arrived (or the time ran out). */
async function eventsUntil(rig: Rig, id: string, codes: string[], timeout_ms: number): Promise<SnapshotEvent[]> {
  const seen: SnapshotEvent[] = [];
  const deadline = Date.now() + timeout_ms;
  while (Date.now() < deadline) {
    const event = await rig.engine.waitEvent(id, deadline - Date.now());
    if (event === null) break;
    seen.push(event);
    if (codes.includes(event.code)) break;
  }
  return seen;
}

async function overflow(rig: Rig): Promise<void> {
  const seed = testSeed(`overflow via ${rig.driver.name}`);
  const random = seededRandom(seed);
  const { engine } = rig;
  await rig.attach('over', VOLUME_BYTES);
  const volume = makeTarget('over', await rig.openSpread('over', CONNECTIONS), new SectorModel(VOLUME_SECTORS));
  const load = new WriteLoad();
  const generators = Array.from({ length: WRITER_COUNT + 1 }, (_, i) => new StampGenerator(seed >>> 0, 1 + i));
  await within(prefill(generators[0]!, volume, load), STEP_TIMEOUT_MS, 'prefill');
  assertNone(load.failures, 'prefill');
  const id = await rig.create(['over'], STORAGE_LIMIT_BYTES);
  await within(engine.snapshotTake(id), STEP_TIMEOUT_MS, 'take');
  for (const g of generators) g.nextGeneration();
  const image = await rig.open(`over@${id}`);
  const waiter = eventsUntil(rig, id, ['corrupted'], EVENT_TIMEOUT_MS + STEP_TIMEOUT_MS);

  const region = { target: volume, first_lba: 0, sector_count: VOLUME_SECTORS };
  await within(Promise.all(generators.slice(1).map((generator) => runWriter({
    generator, regions: [region], random, depth: WRITER_DEPTH, run_sectors_max: RUN_SECTORS_MAX, load,
    stop: () => false, budget_sectors: RANDOM_BUDGET_SECTORS,
  }))), STEP_TIMEOUT_MS, 'random volume writes');
  const pass: Promise<unknown>[] = [];
  for (let lba = 0; lba < VOLUME_SECTORS; lba += PASS_SECTORS) {
    pass.push(writeStamped(generators[0]!, volume, lba, Math.min(PASS_SECTORS, VOLUME_SECTORS - lba), load));
  }
  await within(Promise.all(pass), STEP_TIMEOUT_MS, 'the full pass');
  assertNone(load.failures, `volume writes while the storage overflowed (seed ${seed})`);

  const events = await within(waiter, EVENT_TIMEOUT_MS + STEP_TIMEOUT_MS, 'events');
  const codes = events.map((e) => e.code);
  assert.ok(codes.includes('no_space'), `no_space delivered: ${codes}`);
  const corrupted = events.find((e) => e.code === 'corrupted');
  assert.ok(corrupted, `corrupted delivered: ${codes}`);
  assert.is(corrupted!.errno, ERRNO.ENOSPC, 'the snapshot broke with ENOSPC');
  assert.is(engine.snapshotInfo(id).error_code, ERRNO.ENOSPC);

  const report = await within(checkTarget(volume.io, volume.model), STEP_TIMEOUT_MS, 'volume check');
  assert.ok(report.ok, describe(`the volume holds exactly what was written (seed ${seed})`, report));
  for (const [what, run] of [
    ['read', () => image.read(0, 4096)],
    ['write', () => image.write(MiB, Buffer.alloc(4096, 0x5a))],
  ] as const) {
    let errno = 0;
    try {
      await run();
    } catch (error) {
      errno = errnoOf(error);
    }
    assert.is(errno, ERRNO.EIO, `an image ${what} after the overflow fails with EIO`);
  }
  // Writes go on after the overflow, and land.
  const after = await writeStamped(generators[1]!, volume, VOLUME_SECTORS / 2, PASS_SECTORS, load);
  assert.is(after, null, 'a volume write after the overflow succeeds');
  const again = await within(checkTarget(volume.io, volume.model), STEP_TIMEOUT_MS, 'volume check');
  assert.ok(again.ok, describe(`the volume after more writes (seed ${seed})`, again));
  console.log(`  ${load.acknowledged_count} volume writes, none failed; events: ${codes.join(', ')}`);
  await within(engine.snapshotDestroy(id), STEP_TIMEOUT_MS, 'destroy');
  await image.close();
}

runScenario('overflow breaks the snapshot, not the volume', overflow);

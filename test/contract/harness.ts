// The frame of every contract scenario: one uvu test per frontend driver,
// named "<scenario> via <driver>", each on a fresh engine (scratch files in
// /dev/shm, 64 KiB chunks, fault injection on for the test hooks) with the
// driver's frontend on top, under a hard timeout, and a cleanup that
// always runs (targets, frontend, engine, files).
//
// A scenario is a function of a Rig: the engine for control (attach, take,
// destroy, events, test hooks) and open() for I/O through the frontend.

import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { test } from 'uvu';

export { test };
import type { EngineOptions, SnapshotInfo } from '../../src/engine/api';
import { Engine } from '../../src/engine/engine';
import { spreadTarget, type BlockTarget } from '../lib/block-target';
import { SCRATCH_ROOT, SMALL_CHUNK_PARAMS } from '../lib/engine-fixture';
import { CLOSE_TIMEOUT_MS, bounded, closeWithin } from '../lib/load';
import { sized } from '../lib/slow-machine';
import type { FrontendDriver } from './drivers/driver';
import { SCENARIO_RESULT_PREFIX } from './report-lines';
import { selectedDrivers, unavailableOutcome } from './drivers';

/**
 * Where the scratch files go instead of /dev/shm: a reflink test runs the
 * scenarios on a loop-mounted XFS (test/engine/reflink-xfs.test.ts).
 */
export const SCRATCH_ROOT_ENV = 'UBLKSNAP_CONTRACT_SCRATCH';
/** When set ('reflink' or 'copy'): every taken snapshot must have saved its chunks this way. */
export const EXPECT_CBW_ENV = 'UBLKSNAP_CONTRACT_CBW';

/** A scenario that runs longer than this through one driver hangs. */
export const SCENARIO_TIMEOUT_MS_DEFAULT = 60_000;

/**
 * The guest size (slow-machine.ts) starts one actor of each kind instead of
 * the default two: each actor loads the engine's modules again, 10-20 s
 * apiece under TCG on a loaded machine, and the engine starts once per
 * scenario. Sessions of a frontend are served whole by one actor either way.
 */
const GUEST_WORKERS = sized({}, { cow_workers: 1, image_workers: 1 });

export interface Rig {
  engine: Engine;
  driver: FrontendDriver;
  dir: string;
  /** Creates a sparse file of size_bytes and attaches it as volume `name`. */
  attach(name: string, size_bytes: number): Promise<void>;
  /** Creates (does not take) a snapshot of volumes, its diff storage a file in the scratch dir. */
  create(volumes: string[], limit_bytes: number): Promise<string>;
  /** Opens an export through the driver (closed at the end of the test if still open). */
  open(export_name: string): Promise<BlockTarget>;
  /** `connections` targets on one export, spread (block-target.ts spreadTarget). */
  openSpread(export_name: string, connections: number): Promise<BlockTarget>;
}

export interface ScenarioOptions {
  engine?: EngineOptions;
  timeout_ms?: number;
  /**
   * Drivers this scenario is not registered for at all, because no run
   * anywhere covers them (a variant the guest does not run): better absent
   * than a skip that claims the guest runs it.
   */
  except_drivers?: readonly string[];
}

/** Registers the scenario once per driver and runs the file's tests. */
export function runScenario(scenario: string, body: (rig: Rig) => Promise<void>, options: ScenarioOptions = {}): void {
  defineScenario(scenario, body, options);
  test.run();
}

/** Registers the scenario once per driver (a file with variants calls it per variant, then test.run()). */
export function defineScenario(scenario: string, body: (rig: Rig) => Promise<void>, options: ScenarioOptions = {}): void {
  const selection = selectedDrivers();
  for (const factory of selection.drivers) {
    if (options.except_drivers?.includes(factory.name)) continue;
    const name = `${scenario} via ${factory.name}`;
    const why_not = factory.unavailable();
    if (why_not !== null) {
      const outcome = unavailableOutcome(name, why_not, selection.required, Boolean(process.env.CI));
      if ('fail' in outcome) {
        test(name, () => { throw new Error(outcome.fail); });
      } else {
        console.log(`  ${outcome.skip}`);
        test.skip(name, () => undefined);
      }
      continue;
    }
    test(name, bounded(options.timeout_ms ?? SCENARIO_TIMEOUT_MS_DEFAULT, async () => {
      const dir = mkdtempSync(path.join(process.env[SCRATCH_ROOT_ENV] ?? SCRATCH_ROOT, 'ublksnap-contract-'));
      let engine: Engine | undefined;
      let driver: FrontendDriver | undefined;
      let snapshots = 0;
      const snapshot_ids: string[] = [];
      const started_ms = Date.now();
      let body_started_ms = started_ms;
      let body_ended_ms = started_ms;
      let verdict = 'fail';
      try {
        engine = await Engine.start({
          logger: pino({ level: process.env.CONTRACT_TEST_LOG ?? 'silent' }),
          fault_injection: true,
          ...GUEST_WORKERS,
          ...options.engine,
          params: { ...SMALL_CHUNK_PARAMS, ...options.engine?.params },
        });
        const started = engine;
        driver = await factory.start(engine, dir);
        const opened = driver;
        const rig: Rig = {
          engine: started,
          driver: opened,
          dir,
          async attach(volume_name, size_bytes) {
            const file = path.join(dir, `${volume_name}.img`);
            writeFileSync(file, '');
            truncateSync(file, size_bytes);
            await started.attach(file, { name: volume_name });
          },
          create(volumes, limit_bytes) {
            snapshots += 1;
            const created = started.snapshotCreate({ volumes, storage: path.join(dir, `diff-${snapshots}`), limit_bytes });
            void created.then((id) => snapshot_ids.push(id), () => undefined);
            return created;
          },
          open: (export_name) => opened.open(export_name),
          async openSpread(export_name, connections) {
            const targets: BlockTarget[] = [];
            for (let i = 0; i < connections; i += 1) targets.push(await opened.open(export_name));
            return spreadTarget(targets);
          },
        };
        body_started_ms = Date.now();
        const watch = new CowPathWatch(started, snapshot_ids);
        await body(rig);
        watch.check();
        verdict = 'pass';
      } finally {
        body_ended_ms = Math.max(body_started_ms, Date.now());
        await closeWithin(async () => {
          await driver?.close();
          await engine?.stop();
        }, CLOSE_TIMEOUT_MS);
        rmSync(dir, { recursive: true, force: true });
        const ended_ms = Date.now();
        console.log(`  set-up ${body_started_ms - started_ms} ms, scenario ${body_ended_ms - body_started_ms} ms, clean-up ${ended_ms - body_ended_ms} ms`);
        console.log(`${SCENARIO_RESULT_PREFIX}${verdict} ${ended_ms - started_ms} ${name}`);
      }
    }));
  }
}

/**
 * With EXPECT_CBW_ENV set: records how the scenario's snapshots saved their
 * chunks just before each destroy (a destroyed snapshot's info is gone)
 * and at the end, then insists every volume used the expected path, and
 * prints how many chunks were saved that way.
 */
class CowPathWatch {
  private readonly expected = process.env[EXPECT_CBW_ENV] ?? '';
  private readonly last_seen = new Map<string, SnapshotInfo['chunks']>();

  constructor(private readonly engine: Engine, private readonly snapshot_ids: string[]) {
    if (this.expected === '') return;
    const destroy = engine.snapshotDestroy.bind(engine);
    engine.snapshotDestroy = (id: string) => {
      this.lookAt(id);
      return destroy(id);
    };
  }

  private lookAt(id: string): void {
    try {
      this.last_seen.set(id, this.engine.snapshotInfo(id).chunks);
    } catch {
      // Unknown or destroyed: the destroy itself will say so; its last look stands.
    }
  }

  check(): void {
    if (this.expected === '') return;
    for (const id of this.snapshot_ids) this.lookAt(id);
    let saved = 0;
    for (const [id, chunks] of this.last_seen) {
      for (const area of chunks) {
        if (area.cbw !== this.expected) {
          throw new Error(`${EXPECT_CBW_ENV}=${this.expected}: snapshot ${id} saved ${area.volume} by ${area.cbw} (${area.cbw_reason})`);
        }
        saved += this.expected === 'reflink' ? area.cloned : area.copied;
      }
    }
    // No count is asserted: a scenario may legitimately save no chunk before a write (its image
    // writes loaded every chunk first). The caller sums these lines over its scenarios.
    console.log(`  cbw=${this.expected}: ${saved} chunks seen saved that way in ${this.last_seen.size} snapshots`);
  }
}

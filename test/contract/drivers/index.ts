// Every frontend driver the contract suite knows, in the order scenarios
// run through them, and the selection a run asked for:
// UBLKSNAP_CONTRACT_DRIVERS=ublk (names, comma-separated) runs those only,
// and makes an unavailable one a failure rather than a skip; the ublk guest
// program uses it to run the scenarios through ublk alone.

import { DRIVER_SELECTION_ENV } from '../report-lines';
import type { DriverFactory, Unavailability } from './driver';
import { inProcessDriver } from './in-process';
import { nbdDriver } from './nbd';
import { ublkDriver } from './ublk';

export const DRIVERS: readonly DriverFactory[] = [inProcessDriver, nbdDriver, ublkDriver];

export { DRIVER_SELECTION_ENV };

export interface DriverSelection {
  drivers: readonly DriverFactory[];
  /** True when the environment named them: each must run, none may be skipped. */
  required: boolean;
}

/** The drivers this run uses; an unknown name in the environment throws, naming the known ones. */
export function selectedDrivers(env: NodeJS.ProcessEnv = process.env): DriverSelection {
  const asked = env[DRIVER_SELECTION_ENV];
  if (asked === undefined || asked.trim() === '') return { drivers: DRIVERS, required: false };
  const names = asked.split(',').map((name) => name.trim()).filter((name) => name !== '');
  const drivers = names.map((name) => {
    const found = DRIVERS.find((driver) => driver.name === name);
    if (found === undefined) {
      throw new Error(`${DRIVER_SELECTION_ENV}=${asked}: no driver "${name}" (known: ${DRIVERS.map((d) => d.name).join(', ')})`);
    }
    return found;
  });
  return { drivers, required: true };
}

/**
 * What to do with a scenario whose driver cannot run here: skip it (with
 * the line to print), or fail it (with the error). It fails when the driver
 * was asked for by name, or in CI when nothing else runs its scenarios.
 */
export function unavailableOutcome(scenario_name: string, why_not: Unavailability, required: boolean,
  ci: boolean): { skip: string } | { fail: string } {
  const must_run = required ? `it was asked for by name (${DRIVER_SELECTION_ENV})`
    : ci && why_not.covered_by === null ? 'CI must not skip it' : null;
  if (must_run !== null) return { fail: `${scenario_name} cannot run here (${why_not.reason}), but ${must_run}` };
  const elsewhere = why_not.covered_by === null ? '' : `; ${why_not.covered_by}`;
  return { skip: `skipping "${scenario_name}": ${why_not.reason}${elsewhere}` };
}

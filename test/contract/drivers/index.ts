// Every frontend driver the contract suite knows, in the order scenarios
// run through them, and the selection a run asked for:
// UBLKSNAP_CONTRACT_DRIVERS=ublk (names, comma-separated) runs those only,
// and makes an unavailable one a failure rather than a skip; the ublk guest
// program uses it to run the scenarios through ublk alone.

import { DRIVER_SELECTION_ENV } from '../report-lines';
import type { DriverFactory } from './driver';
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

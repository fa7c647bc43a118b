// Every frontend driver the contract suite knows, in the order scenarios
// run through them. A ublk driver joins this list (see driver.ts).

import type { DriverFactory } from './driver';
import { inProcessDriver } from './in-process';
import { nbdDriver } from './nbd';

export const DRIVERS: readonly DriverFactory[] = [inProcessDriver, nbdDriver];

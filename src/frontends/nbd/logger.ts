// The logger the NBD frontend writes to: pino's interface (the daemon passes
// its pino logger), silent when none is given. One line per event that
// matters (connect, export bound, violation, disconnect), never per I/O.

import type { Logger } from 'pino';
import pino from 'pino';

export type NbdLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

export function silentLogger(): NbdLogger {
  return pino({ enabled: false });
}

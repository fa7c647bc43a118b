// The nice value of a pool thread that does background work (growth,
// warming): raised for work that must not slow the foreground, lowered
// again for work a caller waits for.

import { setThreadNice } from '../native';

/**
 * Growth and warming are background work: on tmpfs fallocate allocates and
 * accounts every page, and at full priority a growth step slowed the image
 * reads a backup ran beside it (measured when take's first step still ran
 * after take; take now waits for that step before the freeze, at normal
 * priority). At this nice value the work takes what the foreground leaves;
 * when the writers have used the room reserved so far, they grow the next
 * slice themselves at their own priority (cow/growth-slice.ts), so a
 * starved step never holds them up for long. A pool thread keeps the value
 * between tasks.
 */
export const BACKGROUND_NICE = 10;

/** Normal priority, for work somebody waits for (or is about to need). */
export const FOREGROUND_NICE = 0;

/** Sets this thread's nice value; lowering it needs CAP_SYS_NICE, and without it the thread stays as it was. */
export function setPriority(nice: number): void {
  try {
    setThreadNice(nice);
  } catch {
    // EPERM: an unprivileged daemon cannot lower the value; the work runs niced.
  }
}

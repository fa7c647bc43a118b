// Whether a process has exited, seen from outside it: the daemon waiting
// out its predecessor, a frontend judging whether a device's server is
// gone. A zombie counts as exited: it runs nothing and holds nothing; only
// its parent has not reaped it yet.

import { readFileSync } from 'node:fs';

/** True once pid has exited (or never was: pid ≤ 0). A process of another user (EPERM) is alive. */
export function processExited(pid: number): boolean {
  if (pid <= 0) return true;
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
  try {
    // "PID (comm) STATE …": the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const after_comm = stat.lastIndexOf(')') + 2;
    return stat.slice(after_comm, after_comm + 1) === 'Z';
  } catch {
    // ENOENT: it ended between the two looks.
    return true;
  }
}

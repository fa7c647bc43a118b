// The pid file in the state directory: it tells an operator (and a second
// daemon started with the same state dir) which process owns the state.
//
// Claim: refuse when the file names a live ublksnap process other than us;
// a dead or foreign pid is stale (a crash) and is replaced. The file is
// written to a temporary name and renamed, so a reader never sees half a
// pid. Release removes it only while it still names us.

import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { UblksnapError } from '../shared/errors';

/** A pid file is a number and a newline; anything longer is not ours. */
const PID_FILE_BYTES_MAX = 32;
/** Readable by all, as pid files are (the state dir itself is private). */
const PID_FILE_MODE = 0o644;

function readPid(file: string): number | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    // ENOENT: no pid file, the normal case.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  if (text.length > PID_FILE_BYTES_MAX) return null;
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}

/** True when pid is a running process that looks like a ublksnap daemon. */
export function isDaemonAlive(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch {
    // ESRCH: no such process. EPERM: another user's process, which cannot own our private state dir.
    return false;
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    // bin/ublksnap.js daemon, or npm start's start-default.js.
    return cmdline.includes('ublksnap') || cmdline.includes('start-default');
  } catch (error) {
    // ENOENT: the process ended between the two checks.
    return (error as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

export function claimPidFile(file: string): void {
  const pid = readPid(file);
  if (pid !== null && isDaemonAlive(pid)) {
    throw new UblksnapError('EBUSY', `state directory in use by a running daemon (pid ${pid}, ${file}); stop it first, or give another --state-dir`);
  }
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${process.pid}\n`, { mode: PID_FILE_MODE });
  renameSync(temporary, file);
}

export function releasePidFile(file: string): void {
  if (readPid(file) !== process.pid) return;
  try {
    unlinkSync(file);
  } catch (error) {
    // ENOENT: already gone.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

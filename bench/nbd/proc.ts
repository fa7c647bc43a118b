// What a server process costs, read from /proc: CPU seconds (utime + stime
// of every thread, /proc/PID/stat) and peak resident memory (VmHWM,
// /proc/PID/status). Per thread too (/proc/PID/task/TID), so that a profile
// can say which of the daemon's threads burns the CPU.
//
// Both must be read while the process still exists: the harness samples
// before and after each workload and once more just before it stops a
// server.

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Linux's USER_HZ on every architecture we run on; `getconf CLK_TCK` says otherwise when it does. */
const CLOCK_TICKS_PER_SECOND_FALLBACK = 100;
const KIB_BYTES = 1024;
/** Fields of /proc/PID/stat counted after the ")" that ends comm: state is field 3, utime 14, stime 15. */
const STAT_FIELD_FIRST_AFTER_COMM = 3;
const STAT_FIELD_UTIME = 14;
const STAT_FIELD_STIME = 15;

let clock_ticks_per_second: number | undefined;

export function clockTicksPerSecond(): number {
  if (clock_ticks_per_second === undefined) {
    try {
      const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
      clock_ticks_per_second = Number.isInteger(value) && value > 0 ? value : CLOCK_TICKS_PER_SECOND_FALLBACK;
    } catch {
      // getconf missing (a minimal container): the kernel's USER_HZ is 100 here.
      clock_ticks_per_second = CLOCK_TICKS_PER_SECOND_FALLBACK;
    }
  }
  return clock_ticks_per_second;
}

/**
 * utime + stime (ticks) and stime alone (system_ticks) in clock ticks from
 * the text of /proc/PID/stat (comm may hold spaces and parentheses).
 */
export function parseStatTicks(text: string): { comm: string; ticks: number; system_ticks: number } {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`not a /proc stat line: ${text.slice(0, 80)}`);
  const fields = text.slice(close + 2).trim().split(' ');
  const field = (number: number): number => {
    const value = Number(fields[number - STAT_FIELD_FIRST_AFTER_COMM]);
    if (!Number.isFinite(value)) throw new Error(`/proc stat field ${number} is not a number in ${text.slice(0, 80)}`);
    return value;
  };
  const system_ticks = field(STAT_FIELD_STIME);
  return { comm: text.slice(open + 1, close), ticks: field(STAT_FIELD_UTIME) + system_ticks, system_ticks };
}

/** CPU seconds the process has used so far, all threads. */
export function cpuSeconds(pid: number): number {
  return processCpu(pid).seconds;
}

/** CPU seconds the process has used so far, all threads (exited ones too), and the system part of them. */
export function processCpu(pid: number): NamedCpu {
  const { ticks, system_ticks } = parseStatTicks(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  return { seconds: ticks / clockTicksPerSecond(), system_seconds: system_ticks / clockTicksPerSecond() };
}

/** A `Name:   value kB` field of /proc/PID/status, in bytes. */
export function parseStatusBytes(text: string, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(text);
  if (match === null) throw new Error(`/proc status has no ${field} field`);
  return Number(match[1]) * KIB_BYTES;
}

/** Peak resident set size of the process so far (VmHWM). */
export function peakRssBytes(pid: number): number {
  return parseStatusBytes(readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmHWM');
}

export interface ThreadCpu {
  tid: number;
  comm: string;
  /** User and system time. */
  seconds: number;
  /** System time alone: in the kernel on the thread's behalf. */
  system_seconds: number;
}

/** CPU seconds per thread; threads that exit between the listing and the read are left out. */
export function threadCpu(pid: number): ThreadCpu[] {
  const threads: ThreadCpu[] = [];
  for (const entry of readdirSync(`/proc/${pid}/task`)) {
    try {
      const { comm, ticks, system_ticks } = parseStatTicks(readFileSync(`/proc/${pid}/task/${entry}/stat`, 'utf8'));
      threads.push({ tid: Number(entry), comm, seconds: ticks / clockTicksPerSecond(), system_seconds: system_ticks / clockTicksPerSecond() });
    } catch (error) {
      // ENOENT: the thread ended after readdir; it no longer costs anything.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  return threads;
}

export interface NamedCpu {
  seconds: number;
  system_seconds: number;
}

/**
 * The CPU threads spent between two readings of threadCpu, summed per
 * thread name: the main thread (tid = pid) as "main", the others by comm
 * (ublksnap names its actors, cow/store/grow/image; Node's own helpers stay
 * "node"). A thread first seen in `after` counts from zero; one that
 * ended before `after` was read is left out (nbdkit's threads of a
 * connection, for one): the process's own figures (processCpu) still
 * count it.
 */
export function cpuByThreadName(pid: number, before: ThreadCpu[], after: ThreadCpu[]): Record<string, NamedCpu> {
  const earlier = new Map(before.map((thread) => [thread.tid, thread]));
  const named: Record<string, NamedCpu> = {};
  for (const thread of after) {
    const name = thread.tid === pid ? 'main' : thread.comm;
    const was = earlier.get(thread.tid);
    const entry = named[name] ?? (named[name] = { seconds: 0, system_seconds: 0 });
    entry.seconds += thread.seconds - (was?.seconds ?? 0);
    entry.system_seconds += thread.system_seconds - (was?.system_seconds ?? 0);
  }
  return named;
}

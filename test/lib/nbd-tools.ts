// Running real NBD clients (nbdinfo, nbdcopy, qemu-img, qemu-io, fio,
// nbdfuse) from tests whose NBD server runs in the same process: every tool
// runs asynchronously (a synchronous spawn would block the event loop that
// serves it: a deadlock), under a named timeout, and every long-lived child
// is killed by pid when the test file exits, however it exits.

import { ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';

/** The longest one client run may take before it is killed and the test fails. */
export const TOOL_TIMEOUT_MS = 120_000;
const KILL_SIGNAL: NodeJS.Signals = 'SIGKILL';

const tracked = new Set<ChildProcess>();

process.once('exit', () => {
  for (const child of tracked) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, KILL_SIGNAL);
      } catch {
        // Already gone between the check and the kill: nothing left to end.
      }
    }
  }
});

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Raw stdout, for tools that print binary. */
  stdout_bytes: Buffer;
}

export interface RunOptions {
  timeout_ms?: number;
  input?: Buffer | string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Runs command to its end; never rejects for a non-zero exit (see runOk). */
export function run(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      cwd: options.cwd,
    });
    tracked.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr!.on('data', (chunk: Buffer) => err.push(chunk));
    const timeout_ms = options.timeout_ms ?? TOOL_TIMEOUT_MS;
    const timer = setTimeout(() => {
      if (child.pid !== undefined) child.kill(KILL_SIGNAL);
    }, timeout_ms);
    child.once('error', (error) => {
      clearTimeout(timer);
      tracked.delete(child);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      tracked.delete(child);
      const stdout_bytes = Buffer.concat(out);
      resolve({ code, signal, stdout: stdout_bytes.toString(), stderr: Buffer.concat(err).toString(), stdout_bytes });
    });
    if (options.input !== undefined) child.stdin!.end(options.input);
  });
}

/** Runs command and returns its stdout; a non-zero exit or a signal throws with stderr. */
export async function runOk(command: string, args: string[], options: RunOptions = {}): Promise<string> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    const why = result.signal !== null ? `killed by ${result.signal} (timeout?)` : `exit ${result.code}`;
    throw new Error(`${command} ${args.join(' ')}: ${why}\n${result.stderr.trim()}\n${result.stdout.slice(0, 2000)}`);
  }
  return result.stdout;
}

/** Starts a long-lived child (nbdfuse), killed by pid at exit unless the test ended it. */
export function startTracked(command: string, args: string[]): ChildProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  tracked.add(child);
  child.once('close', () => tracked.delete(child));
  return child;
}

/** Ends a tracked child with signal and waits for it, up to timeout_ms (then SIGKILL). */
export async function stopTracked(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', timeout_ms = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill(KILL_SIGNAL), timeout_ms);
  await closed;
  clearTimeout(timer);
}

/** Open file descriptors of this process. */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** What each open descriptor points at ("socket:[123]", a path, "anon_inode:[eventfd]"), sorted: for leak reports. */
export function openFdTargets(): string[] {
  const targets: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      targets.push(`${fd}→${readlinkSync(`/proc/self/fd/${fd}`)}`);
    } catch {
      // Closed between the listing and the readlink (the listing's own descriptor).
    }
  }
  return targets.sort();
}

/** Waits until check() holds, polling every interval_ms, up to timeout_ms; returns whether it held. */
export async function eventually(check: () => boolean, timeout_ms: number, interval_ms = 20): Promise<boolean> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    if (check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, interval_ms));
  }
}

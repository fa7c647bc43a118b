// What the daemon-driving guest programs (test/guest/*.guest.ts) share: one
// ok/FAIL line per step with the time since start, and the first failed
// step ends the program (exit 1) after the program's own cleanup, with the
// tail of the daemon's log to show what it did. Bounds sized for node under
// TCG emulation, 6-8× slower to start than on the host.

import { execFileSync } from 'node:child_process';
import type { TestDaemon } from './daemon';

export const GUEST_CLI_TIMEOUT_MS = 60_000;
export const GUEST_DAEMON_START_TIMEOUT_MS = 120_000;
export const GUEST_TOOL_TIMEOUT_MS = 180_000;
const DAEMON_LOG_TAIL_LINES = 40;

export function log(message: string): void {
  process.stdout.write(`[${process.uptime().toFixed(1)}s] ${message}\n`);
}

/** Runs a tool; its stdout, or an exception carrying its stderr. */
export function sh(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', timeout: GUEST_TOOL_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'] });
}

export function expect(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

/**
 * The step function of a program: runs body, prints `ok - name`, or prints
 * `FAIL - name: why` and the daemon's log tail, runs cleanup and exits 1.
 */
export function stepRunner(daemon: () => TestDaemon | undefined, cleanup: () => Promise<void>):
  (name: string, body: () => Promise<void> | void) => Promise<void> {
  return async (name, body) => {
    try {
      await body();
      log(`ok - ${name}`);
    } catch (error) {
      log(`FAIL - ${name}: ${(error as Error).message}`);
      const running = daemon();
      if (running) log(`daemon log tail:\n${running.logs.split('\n').slice(-DAEMON_LOG_TAIL_LINES).join('\n')}`);
      await cleanup();
      process.exit(1);
    }
  };
}

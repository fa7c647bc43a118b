// Goal: every guest program (dist/test/guest/*.guest.js: standalone node
// programs that need a kernel with ublk, exit 0 on success and print what they
// check) passes inside the ublk guest of test/vm/run-in-guest.sh.
// Method: prepare the guest (qemu, cached Debian kernel) with `--setup`; boot
// it ONCE and let test/vm/guest-driver.sh run every program there, each bounded
// by PROGRAM_BUDGET_S; parse its `GUEST-RESULT <name> <verdict> <status>
// <seconds>` lines; one uvu test per program, failing with the program's output.
// Without root, qemu or the kernel the suite is skipped with the reason
// (failed in CI). UBLKSNAP_VM_KERNEL=trixie picks the 7.x kernel.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import { gateOn, missingPrerequisites } from '../lib/system';

const CHECKOUT = path.resolve(__dirname, '../../..');
const RUNNER = path.join(CHECKOUT, 'test/vm/run-in-guest.sh');
const DRIVER = path.join(CHECKOUT, 'test/vm/guest-driver.sh');
const PROGRAM_DIR = path.join(CHECKOUT, 'dist/test/guest');
const PROGRAM_SUFFIX = '.guest.js';
/**
 * What one guest program may take: node is 6-14x slower in the guest than on
 * the host; ublk-daemon.guest took 201 s on a machine loaded by other work.
 * ublk-recovery.guest, three daemon starts, 500 s at load 14. The whole file
 * has test/run.ts's budget (60 min, cold setup included): the nine programs
 * take 1-4 min each on a quiet machine, so this bound only catches a hang.
 */
const PROGRAM_BUDGET_S = 600;
/** guest-driver.sh's grace between TERM and KILL of a program over budget. */
const PROGRAM_KILL_AFTER_S = 10;
/** Boot (3-11 s measured), one boot retry and power-off, generously. */
const BOOT_MARGIN_S = 120;
/** Setup on an empty cache: qemu install + kernel download + depmod, 20-50 s measured; slow mirrors. */
const SETUP_TIMEOUT_MS = 10 * 60_000;
/** run-in-guest.sh's own exit statuses (see its header). */
const RUNNER_STATUS_MEANING: Record<number, string> = {
  120: 'setup failed',
  123: 'the guest ended without a status after the command started',
  124: 'the run timed out',
  125: 'the guest never reached the command',
};
/** How much of a log to quote in a failure. */
const LOG_TAIL_LINES = 40;
const KERNEL_CHOICE = process.env.UBLKSNAP_VM_KERNEL ?? 'bookworm';

interface ProgramResult {
  verdict: string;
  status: number;
  seconds: number;
  output: string;
}

interface SuiteRun {
  runner_status: number | null;
  runner_log: string;
  results: Map<string, ProgramResult>;
  /** Output of a program that began and never reported (the guest died or timed out). */
  unfinished?: { name: string; output: string };
}

function tail(text: string, lines = LOG_TAIL_LINES): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

function listPrograms(): string[] {
  if (!existsSync(PROGRAM_DIR)) return [];
  return readdirSync(PROGRAM_DIR).filter((entry) => entry.endsWith(PROGRAM_SUFFIX)).sort()
    .map((entry) => path.join(PROGRAM_DIR, entry));
}

function programName(file: string): string {
  return path.basename(file, '.js');
}

/** One phrase per missing prerequisite: root and tools, then the guest's own setup. */
function missingForGuest(): string[] {
  const missing = missingPrerequisites({ root: true, tools: ['bash', 'flock', 'timeout'] });
  if (missing.length > 0) return missing;
  const setup = spawnSync(RUNNER, ['--kernel', KERNEL_CHOICE, '--setup'], {
    encoding: 'utf8', timeout: SETUP_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'],
  });
  process.stdout.write(setup.stderr ?? '');
  if (setup.status === 0) return [];
  const why = setup.error?.message ?? `exit ${setup.status}`;
  return [`guest setup failed (${why}): ${tail(setup.stderr ?? '', 1)}`];
}

/** Parses guest-driver.sh's output into per-program results. */
function parseDriverOutput(stdout: string): Pick<SuiteRun, 'results' | 'unfinished'> {
  const results = new Map<string, ProgramResult>();
  let current: { name: string; lines: string[] } | undefined;
  for (const line of stdout.split('\n')) {
    const begin = /^GUEST-BEGIN (\S+)$/.exec(line);
    const result = /^GUEST-RESULT (\S+) (\S+) (\d+) ([\d.]+)$/.exec(line);
    if (begin) {
      current = { name: begin[1]!, lines: [] };
    } else if (result) {
      const [, name, verdict, status, seconds] = result;
      results.set(name!, { verdict: verdict!, status: Number(status), seconds: Number(seconds), output: current?.lines.join('\n') ?? '' });
      current = undefined;
    } else if (current) {
      current.lines.push(line);
    }
  }
  return { results, unfinished: current && { name: current.name, output: current.lines.join('\n') } };
}

/** Boots the guest once and runs every program in it. */
function runInGuest(programs: string[]): Promise<SuiteRun> {
  const run_timeout_s = BOOT_MARGIN_S + programs.length * (PROGRAM_BUDGET_S + PROGRAM_KILL_AFTER_S);
  const args = ['--kernel', KERNEL_CHOICE, '--timeout', String(run_timeout_s), '--',
    'bash', DRIVER, String(PROGRAM_BUDGET_S), ...programs];
  return new Promise((resolve) => {
    const child = spawn(RUNNER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    // This file ending early (SIGTERM from the test runner) must not leave qemu behind:
    // the runner's trap kills qemu by its PID when it gets TERM.
    const stopChild = (): void => { if (child.exitCode === null) child.kill('SIGTERM'); };
    process.once('exit', stopChild);
    let stdout = '';
    let runner_log = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      runner_log += text;
      process.stdout.write(text);   // the kernel version and timings belong in the CI log
    });
    const finish = (status: number | null, extra = ''): void => {
      process.removeListener('exit', stopChild);
      resolve({ runner_status: status, runner_log: runner_log + extra, ...parseDriverOutput(stdout) });
    };
    child.on('error', (error) => finish(null, `\ncannot start ${RUNNER}: ${error.message}`));
    child.on('close', (code, signal) => finish(code, signal ? `\nrunner killed by ${signal}` : ''));
  });
}

function noResultMessage(run: SuiteRun, name: string): string {
  const meaning = run.runner_status === null ? 'did not run' : RUNNER_STATUS_MEANING[run.runner_status] ?? 'no result line';
  const parts = [`${name}: no result from the guest (runner exit ${run.runner_status}: ${meaning})`];
  if (run.unfinished?.name === name) parts.push(`its output so far:\n${tail(run.unfinished.output)}`);
  parts.push(`runner log:\n${tail(run.runner_log)}`);
  return parts.join('\n');
}

const guestSuite = suite('ublk guest programs');
const programs = listPrograms();

if (programs.length === 0) {
  guestSuite(`guest programs exist in ${PROGRAM_DIR}`, () => {
    throw new Error(`no *${PROGRAM_SUFFIX} in ${PROGRAM_DIR}: is test/guest compiled (tsc)?`);
  });
} else {
  const guard = gateOn(guestSuite, `ublk guest (${KERNEL_CHOICE})`, missingForGuest());
  let run: SuiteRun | undefined;
  guard.before(async () => {
    run = await runInGuest(programs);
  });
  for (const program of programs) {
    const name = programName(program);
    guard.test(name, () => {
      const result = run?.results.get(name);
      if (run === undefined) throw new Error(`${name}: the guest run did not happen (its before hook failed)`);
      if (result === undefined) throw new Error(noResultMessage(run, name));
      if (result.verdict !== 'pass') {
        const budget = result.verdict === 'timeout' ? ` (budget ${PROGRAM_BUDGET_S} s)` : '';
        throw new Error(`${name}: ${result.verdict}${budget}, exit ${result.status} after ${result.seconds} s; output:\n${tail(result.output)}`);
      }
      console.log(`  ${name}: passed in the guest in ${result.seconds} s (budget ${PROGRAM_BUDGET_S} s)`);
    });
  }
}

guestSuite.run();

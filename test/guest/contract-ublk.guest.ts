// Goal: the frontend contract suite (test/contract) holds through the ublk
// frontend in a real kernel: take quiesce and stamped isolation across
// takes here; overflow and destroy under load in contract-ublk-errors.guest.ts;
// unaligned/boundary and image writes in contract-ublk-patterns.guest.ts —
// pass with their I/O going through /dev/ublkbN (O_DIRECT, the kernel's
// block layer, ublk_drv) to the engine.
// Method: a standalone program run inside the guest by test/vm/guest-driver.sh
// (test/vm/guest-suite.test.ts). It runs the compiled scenario files
// (dist/test/contract/*.test.js) together in ONE node process
// (test/contract/run-files.ts: loading the modules costs about a minute per
// process in the guest) with UBLKSNAP_CONTRACT_DRIVERS=ublk, so the ublk
// driver alone runs and may not skip, UBLKSNAP_CONTRACT_SIZE=guest (the
// scenarios' smaller sizes) and a stretched hang bound
// (UBLKSNAP_TEST_TIME_SCALE, test/lib/slow-machine.ts). It reads what that
// process printed: the harness's result line per scenario, the driver's
// counters per scenario, uvu's totals; and prints one ok/FAIL line per
// scenario and one for the run. The run passes only when every scenario
// passed, none was skipped, and each scenario's driver opened a device and
// both read and wrote through it (a driver that silently ran nothing cannot
// pass). Exit 0 when all passed. It unloads ublk_drv at the end when it was
// not loaded at the start (the driver loads it), as the other guest
// programs leave it.
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/contract-ublk.guest.js [FILTER...]
// (FILTER: substrings of the scenario files to run, e.g. `isolation`).

import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import {
  DRIVER_SELECTION_ENV, SCENARIO_RESULT_PREFIX, UBLK_DRIVER_STATS_PREFIX, type UblkDriverStats,
} from '../contract/report-lines';
import { CONTRACT_SIZE_ENV, TIME_SCALE_ENV } from '../lib/slow-machine';

const CONTRACT_DIR = path.resolve(__dirname, '../contract');
const RUN_FILES = path.join(CONTRACT_DIR, 'run-files.js');
/**
 * The scenario files this program runs, quick ones first (a broken driver
 * shows early). The others run in contract-ublk-errors.guest.ts (overflow,
 * destroy under load) and contract-ublk-patterns.guest.ts (unaligned, image
 * writes): four in one program passed the guest suite's 420 s per program
 * on a loaded machine (the engine's start cost 35-60 s per scenario there).
 */
export const SCENARIO_FILES_DEFAULT = ['take-quiesce', 'isolation'];
/**
 * The whole run may take this long before it is killed: inside the guest
 * suite's 420 s per program, with room for loading and unloading ublk_drv.
 */
const RUN_TIMEOUT_MS = 380_000;
/** Hang bounds stretched this much (node is 6-14x slower under TCG). */
const TIME_SCALE = 4;
const CONTROL_DEVICE = '/dev/ublk-control';
const MODPROBE_TIMEOUT_MS = 30_000;
/** Lines of a failing run's output quoted. */
const TAIL_LINES = 60;
/** libuv threads for the run: the ublk driver's minimum (drivers/ublk.ts UV_THREADPOOL_SIZE_MIN). */
const UV_THREADPOOL_SIZE = 32;

let failures = 0;

function report(ok: boolean, line: string, detail = ''): void {
  if (!ok) failures += 1;
  console.log(`${ok ? 'ok' : 'FAIL'} - ${line}`);
  if (!ok && detail !== '') console.log(detail.trimEnd().split('\n').slice(-TAIL_LINES).map((l) => `    ${l}`).join('\n'));
}

interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  timed_out: boolean;
  output: string;
  seconds: number;
}

/** Runs the scenario files in one process with the ublk driver alone, bounded. */
function runFiles(files: string[]): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--enable-source-maps', RUN_FILES, ...files], {
      env: {
        ...process.env, [DRIVER_SELECTION_ENV]: 'ublk', [CONTRACT_SIZE_ENV]: 'guest', [TIME_SCALE_ENV]: String(TIME_SCALE),
        UV_THREADPOOL_SIZE: String(UV_THREADPOOL_SIZE), NO_COLOR: '1', FORCE_COLOR: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    const collect = (chunk: Buffer): void => {
      output += chunk.toString();
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    let timed_out = false;
    const timer = setTimeout(() => {
      timed_out = true;
      // Its own process group: the engine's workers go with it.
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { child.kill('SIGKILL'); }
    }, RUN_TIMEOUT_MS);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, timed_out, output, seconds: (Date.now() - started) / 1000 });
    });
  });
}

function uvuNumber(output: string, label: string): number | undefined {
  const match = new RegExp(`^\\s*${label}:\\s+(\\d+)`, 'm').exec(output);
  return match ? Number(match[1]) : undefined;
}

/** Checks the run: a line per scenario (with the driver's counters of that scenario), then one for the run. */
function judge(run: Run): UblkDriverStats[] {
  const all_stats: UblkDriverStats[] = [];
  let stats: UblkDriverStats | undefined;
  let scenarios = 0;
  let phases = '';
  for (const line of run.output.split('\n')) {
    const phase_line = /^\s+(set-up \d+ ms, scenario \d+ ms, clean-up \d+ ms)$/.exec(line);
    if (phase_line) {
      phases = `: ${phase_line[1]}`;
      continue;
    }
    if (line.startsWith(UBLK_DRIVER_STATS_PREFIX)) {
      stats = JSON.parse(line.slice(UBLK_DRIVER_STATS_PREFIX.length)) as UblkDriverStats;
      all_stats.push(stats);
      continue;
    }
    if (!line.startsWith(SCENARIO_RESULT_PREFIX)) continue;
    // The driver prints its counters at close, before the harness prints the result.
    const [verdict, ms, ...rest] = line.slice(SCENARIO_RESULT_PREFIX.length).split(' ');
    const name = rest.join(' ');
    scenarios += 1;
    const through = stats === undefined ? 'no driver counters'
      : `${stats.devices_opened} devices (${(stats.publish_ms / 1000).toFixed(1)} s to create, ${(stats.unpublish_ms / 1000).toFixed(1)} s to delete), `
        + `${stats.reads} reads, ${stats.writes} writes, ${stats.flushes} flushes, ${stats.failed} failed`;
    report(verdict === 'pass', `${name} (${(Number(ms) / 1000).toFixed(1)} s${phases}; ${through})`);
    const used = stats !== undefined && stats.devices_opened > 0 && stats.reads > 0 && stats.writes > 0;
    if (!used) report(false, `${name} went through /dev/ublkbN: ${through}`);
    stats = undefined;
    phases = '';
  }
  const total = uvuNumber(run.output, 'Total');
  const passed = uvuNumber(run.output, 'Passed');
  const skipped = uvuNumber(run.output, 'Skipped') ?? 0;
  const problems: string[] = [];
  if (run.timed_out) problems.push(`killed after ${RUN_TIMEOUT_MS / 1000} s`);
  else if (run.status !== 0) problems.push(`exit ${run.status ?? run.signal}`);
  if (total === undefined || passed === undefined) problems.push('no uvu summary');
  else if (passed !== total) problems.push(`${total - passed} of ${total} failed`);
  if (total === 0) problems.push('no scenario ran');
  if (skipped > 0) problems.push(`${skipped} skipped`);
  if (total !== undefined && scenarios !== total) problems.push(`${scenarios} result lines for ${total} scenarios`);
  report(problems.length === 0, `${scenarios} scenarios via ublk in one process, ${run.seconds.toFixed(1)} s${problems.length > 0 ? `: ${problems.join(', ')}` : ''}`,
    problems.length > 0 ? run.output : '');
  return all_stats;
}

/** Runs `scenario_files` (or those of them the command line names) through ublk and exits. */
export async function runContractInGuest(scenario_files: string[]): Promise<void> {
  const filters = process.argv.slice(2);
  const names = scenario_files.filter((f) => filters.length === 0 || filters.some((filter) => f.includes(filter)));
  const files = names.map((name) => path.join(CONTRACT_DIR, `${name}.test.js`));
  const missing = files.filter((file) => !existsSync(file));
  if (names.length === 0 || missing.length > 0) {
    report(false, names.length === 0 ? `no scenario file matches ${filters.join(' ')} (files: ${scenario_files.join(', ')})`
      : `missing (is test/contract compiled?): ${missing.join(' ')}`);
    process.exit(1);
  }
  const loaded_before = existsSync(CONTROL_DEVICE);
  const run = await runFiles(files);
  const totals = { devices_opened: 0, reads: 0, writes: 0, failed: 0, bytes_read: 0, bytes_written: 0 };
  for (const s of judge(run)) {
    for (const key of Object.keys(totals) as (keyof typeof totals)[]) totals[key] += s[key];
  }
  const mib = (bytes: number): string => (bytes / (1 << 20)).toFixed(0);
  console.log(`contract via ublk: ${names.join(', ')} in ${run.seconds.toFixed(1)} s; ${totals.devices_opened} devices, `
    + `${totals.reads} reads (${mib(totals.bytes_read)} MiB), ${totals.writes} writes (${mib(totals.bytes_written)} MiB), `
    + `${totals.failed} failed requests (some scenarios expect failures)`);
  if (!loaded_before && existsSync(CONTROL_DEVICE)) {
    const unload = spawnSync('modprobe', ['-r', 'ublk_drv'], { encoding: 'utf8', timeout: MODPROBE_TIMEOUT_MS });
    report(unload.status === 0, 'ublk_drv unloaded again, as it was found', unload.stderr ?? '');
  }
  process.exit(failures === 0 ? 0 : 1);
}

// Run as a program (not when contract-ublk-patterns.guest imports it).
if (require.main === module) void runContractInGuest(SCENARIO_FILES_DEFAULT);

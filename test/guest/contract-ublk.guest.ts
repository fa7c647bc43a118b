// Goal: the frontend contract suite (test/contract) holds through the ublk
// frontend in a real kernel: every scenario — isolation across takes,
// unaligned and boundary writes, overflow, destroy under load, image writes,
// take quiesce — passes with its I/O going through /dev/ublkbN (O_DIRECT,
// the kernel's block layer, ublk_drv) to the engine.
// Method: a standalone program run inside the guest by test/vm/guest-driver.sh
// (test/vm/guest-suite.test.ts). It runs each compiled scenario file
// (dist/test/contract/*.test.js) in its own node process with
// UBLKSNAP_CONTRACT_DRIVERS=ublk, so the ublk driver alone runs and may not
// skip, and reads what the process printed: the harness's one result line
// per scenario, the driver's counters per scenario, uvu's totals. It prints
// one ok/FAIL line per scenario and per file; a file passes only when every
// scenario passed, none was skipped, and each scenario's driver opened a
// device and both read and wrote through it (a driver that silently ran
// nothing cannot pass). Exit 0 when all passed. It unloads ublk_drv at the
// end when it was not loaded at the start (the driver loads it), as the
// other guest programs leave it.
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/contract-ublk.guest.js [FILTER...]
// (FILTER: substrings of the scenario files to run, e.g. `isolation`).

import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import {
  DRIVER_SELECTION_ENV, SCENARIO_RESULT_PREFIX, UBLK_DRIVER_STATS_PREFIX, type UblkDriverStats,
} from '../contract/report-lines';

const CONTRACT_DIR = path.resolve(__dirname, '../contract');
/** Quick ones first: a broken driver shows within seconds. */
const SCENARIO_FILES = ['take-quiesce', 'unaligned', 'overflow', 'image-writes', 'isolation', 'destroy-load'];
/**
 * One scenario file may take this long in the guest before it is killed:
 * node runs 6-14x slower under TCG. The sum of the measured times stays
 * well inside the guest suite's 420 s per program (README of this run).
 */
const FILE_TIMEOUT_MS = 200_000;
const CONTROL_DEVICE = '/dev/ublk-control';
const MODPROBE_TIMEOUT_MS = 30_000;
/** Lines of a failing file's output quoted. */
const TAIL_LINES = 40;

let failures = 0;

function report(ok: boolean, line: string, detail = ''): void {
  if (!ok) failures += 1;
  console.log(`${ok ? 'ok' : 'FAIL'} - ${line}`);
  if (!ok && detail !== '') console.log(detail.trimEnd().split('\n').slice(-TAIL_LINES).map((l) => `    ${l}`).join('\n'));
}

interface FileRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  timed_out: boolean;
  output: string;
  seconds: number;
}

/** Runs one scenario file with the ublk driver alone, bounded. */
function runFile(file: string): Promise<FileRun> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--enable-source-maps', file], {
      env: { ...process.env, [DRIVER_SELECTION_ENV]: 'ublk', NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    let timed_out = false;
    const timer = setTimeout(() => {
      timed_out = true;
      // Its own process group: the file's workers go with it.
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { child.kill('SIGKILL'); }
    }, FILE_TIMEOUT_MS);
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

/** Checks one file's run: a line per scenario, then one for the file. */
function judge(name: string, run: FileRun): UblkDriverStats[] {
  const lines = run.output.split('\n');
  const scenarios = lines.filter((l) => l.startsWith(SCENARIO_RESULT_PREFIX)).map((l) => {
    const [verdict, ms, ...rest] = l.slice(SCENARIO_RESULT_PREFIX.length).split(' ');
    return { verdict, seconds: Number(ms) / 1000, name: rest.join(' ') };
  });
  const stats = lines.filter((l) => l.startsWith(UBLK_DRIVER_STATS_PREFIX))
    .map((l) => JSON.parse(l.slice(UBLK_DRIVER_STATS_PREFIX.length)) as UblkDriverStats);
  for (const [i, scenario] of scenarios.entries()) {
    const s = stats[i];
    const through = s === undefined ? 'no driver counters'
      : `${s.devices_opened} devices, ${s.reads} reads, ${s.writes} writes, ${s.flushes} flushes, ${s.failed} failed`;
    report(scenario.verdict === 'pass', `${scenario.name} (${scenario.seconds.toFixed(1)} s; ${through})`);
    const used = s !== undefined && s.devices_opened > 0 && s.reads > 0 && s.writes > 0;
    if (!used) report(false, `${scenario.name} went through /dev/ublkbN: ${through}`);
  }
  const total = uvuNumber(run.output, 'Total');
  const passed = uvuNumber(run.output, 'Passed');
  const skipped = uvuNumber(run.output, 'Skipped') ?? 0;
  const problems: string[] = [];
  if (run.timed_out) problems.push(`killed after ${FILE_TIMEOUT_MS / 1000} s`);
  else if (run.status !== 0) problems.push(`exit ${run.status ?? run.signal}`);
  if (total === undefined || passed === undefined) problems.push('no uvu summary');
  else if (passed !== total) problems.push(`${total - passed} of ${total} failed`);
  if (total === 0) problems.push('no scenario ran');
  if (skipped > 0) problems.push(`${skipped} skipped`);
  if (total !== undefined && scenarios.length !== total) problems.push(`${scenarios.length} result lines for ${total} scenarios`);
  if (stats.length !== scenarios.length) problems.push(`${stats.length} driver counter lines for ${scenarios.length} scenarios`);
  report(problems.length === 0, `${name}: ${total ?? '?'} scenarios via ublk in ${run.seconds.toFixed(1)} s${problems.length > 0 ? `: ${problems.join(', ')}` : ''}`,
    problems.length > 0 ? run.output : '');
  return stats;
}

async function main(): Promise<void> {
  const filters = process.argv.slice(2);
  const files = SCENARIO_FILES.filter((f) => filters.length === 0 || filters.some((filter) => f.includes(filter)));
  if (files.length === 0) {
    report(false, `no scenario file matches ${filters.join(' ')} (files: ${SCENARIO_FILES.join(', ')})`);
    process.exit(1);
  }
  const loaded_before = existsSync(CONTROL_DEVICE);
  const started = Date.now();
  const totals = { devices_opened: 0, reads: 0, writes: 0, failed: 0, bytes_read: 0, bytes_written: 0 };
  for (const name of files) {
    const file = path.join(CONTRACT_DIR, `${name}.test.js`);
    if (!existsSync(file)) {
      report(false, `${name}: ${file} is missing (is test/contract compiled?)`);
      continue;
    }
    for (const s of judge(name, await runFile(file))) {
      for (const key of Object.keys(totals) as (keyof typeof totals)[]) totals[key] += s[key];
    }
  }
  const mib = (bytes: number): string => (bytes / (1 << 20)).toFixed(0);
  console.log(`contract via ublk: ${files.length} files in ${((Date.now() - started) / 1000).toFixed(1)} s; ${totals.devices_opened} devices, `
    + `${totals.reads} reads (${mib(totals.bytes_read)} MiB), ${totals.writes} writes (${mib(totals.bytes_written)} MiB), ${totals.failed} failed as expected or not`);
  if (!loaded_before && existsSync(CONTROL_DEVICE)) {
    const unload = spawnSync('modprobe', ['-r', 'ublk_drv'], { encoding: 'utf8', timeout: MODPROBE_TIMEOUT_MS });
    report(unload.status === 0, 'ublk_drv unloaded again, as it was found', unload.stderr ?? '');
  }
  process.exit(failures === 0 ? 0 : 1);
}

void main();

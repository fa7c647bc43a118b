// The ublk part of `npm run bench` (host side): boots the ublk guest once
// (test/vm/run-in-guest.sh) and runs ./guest.ts there — the kernel loop
// driver, ublksnap's /dev/ublkbN without and with a snapshot being filled,
// and a minimal C server, UBLKSNAP_UBLK_MINI_SOURCE (compiled here, into
// a temporary directory outside the checkout) on the same backing file —
// then turns its samples into a table of medians and ratios against loop,
// and the goal lines.
//
// Never fails the bench: without root, fio, qemu or the guest kernel it
// returns a SKIP line with the reason; a guest run that fails gives a FAIL
// line and no table.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { median, table } from '../lib';
import { verdictLine, verdicts, type Comparison, type GoalVerdict, type Sample } from '../nbd/goals';
import { comparisonTable } from '../nbd/report';
import { UBLK_HOSTING_DEFAULT } from '../../src/frontends/ublk/session';
import { JOBS, SYSTEMS, type SystemId, type UblkSample } from './guest';

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const RUNNER = path.join(REPO_ROOT, 'test', 'vm', 'run-in-guest.sh');
const GUEST_PROGRAM = path.join(REPO_ROOT, 'dist', 'bench', 'ublk', 'guest.js');
/** The minimal C server, next to the checkout (the shared notes); the row is skipped without it. */
export const UBLK_MINI_SOURCE = process.env.UBLKSNAP_UBLK_MINI_SOURCE ?? path.resolve(REPO_ROOT, '..', 'shared', 'ublk', 'ublk-mini.c');
/** Setup is a no-op once the kernel is cached; on an empty cache about 40 s. */
const SETUP_TIMEOUT_MS = 300_000;
/** The whole guest run; the part normally takes 9-12 minutes (three daemons). */
const GUEST_TIMEOUT_S = 1800;
/**
 * The guest's memory: four copies of the backing file (loop's and one per
 * daemon) and a snapshot's diff storage all live on its /dev/shm (half of it).
 */
const GUEST_MEM_MIB = 6144;
const MIB = 1024 * 1024;
/** Runner statuses that mean "no guest", not "the bench failed". */
const INFRASTRUCTURE_STATUS: Record<number, string> = {
  120: 'guest setup failed', 123: 'the guest died under the command', 124: 'the guest run timed out', 125: 'the guest never reached the command',
};

export const SYSTEM_LABELS: Record<SystemId, string> = {
  loop: 'loop (--direct-io=on)',
  ublksnap: 'ublksnap (actor)',
  'ublksnap-snap': 'ublksnap (actor) + snapshot',
  'ublk-mini': 'ublk-mini (C floor)',
  'ublksnap-thread': 'ublksnap (thread)',
  'ublksnap-thread-snap': 'ublksnap (thread) + snapshot',
  'ublksnap-slot': 'ublksnap (thread, no mapped writes)',
};

/** The rows of the hosting the daemon uses by default: the goals are about them. */
export const DEFAULT_PLAIN: SystemId = UBLK_HOSTING_DEFAULT === 'thread' ? 'ublksnap-thread' : 'ublksnap';
export const DEFAULT_SNAP: SystemId = UBLK_HOSTING_DEFAULT === 'thread' ? 'ublksnap-thread-snap' : 'ublksnap-snap';

const JOB_LABELS: Record<string, string> = {
  'randread-4k': '4 KiB randread QD32',
  'randwrite-4k': '4 KiB randwrite QD32',
  'seqwrite-1m': '1 MiB seq write QD32',
};

export interface UblkBenchOptions {
  quick: boolean;
  rounds?: number;
  runtime_s?: number;
  log: (line: string) => void;
}

export interface UblkBenchResult {
  /** Markdown for stdout ('' when skipped). */
  text: string;
  goal_lines: string[];
  json: Record<string, unknown>;
}

function skip(reason: string): UblkBenchResult {
  return { text: '', goal_lines: [`SKIP ublk: ${reason}`], json: { skipped: reason } };
}

function onPath(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

function tail(text: string, lines = 8): string {
  return text.trim().split('\n').slice(-lines).join(' | ');
}

/**
 * Where ublk-mini is built: outside the checkout, and somewhere the guest
 * sees (the host's root is its root; its /dev/shm and /run are its own).
 */
function hostTempDir(): string {
  const dir = os.tmpdir();
  return /^\/(dev\/shm|run)(\/|$)/.test(dir) ? '/var/tmp' : dir;
}

/** Compiles ublk-mini into a fresh temporary directory; the reason when it cannot. */
function buildMini(dir: string): { binary?: string; reason?: string } {
  if (!existsSync(UBLK_MINI_SOURCE)) return { reason: `${UBLK_MINI_SOURCE} not found` };
  if (!onPath('gcc')) return { reason: 'no gcc' };
  const binary = path.join(dir, 'ublk-mini');
  const result = spawnSync('gcc', ['-O2', '-o', binary, UBLK_MINI_SOURCE, '-lpthread'], { encoding: 'utf8' });
  if (result.status !== 0) return { reason: `gcc failed: ${tail(result.stderr, 3)}` };
  return { binary };
}

/** Runs the guest program; resolves with its exit status and the sample lines. */
function runGuest(args: string[], log: (line: string) => void): Promise<{ status: number; records: Record<string, unknown>[]; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(RUNNER, ['--mem', String(GUEST_MEM_MIB), '--timeout', String(GUEST_TIMEOUT_S), '--', 'node', GUEST_PROGRAM, ...args],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const records: Record<string, unknown>[] = [];
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      let newline: number;
      while ((newline = stdout.indexOf('\n')) >= 0) {
        const line = stdout.slice(0, newline);
        stdout = stdout.slice(newline + 1);
        if (line.startsWith('UBLKBENCH ')) records.push(JSON.parse(line.slice('UBLKBENCH '.length)));
        else if (line.trim() !== '') log(`ublk guest: ${line}`);
      }
    });
    child.stderr.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      stderr += text;
      for (const line of text.split('\n')) if (line.trim() !== '') log(line);
    });
    child.on('close', (code, signal) => resolve({ status: code ?? (signal !== null ? 128 : 1), records, stderr }));
  });
}

function formatValue(value: number, job: string): string {
  if (Number.isNaN(value)) return '—';
  return job === 'seqwrite-1m' ? `${(value / MIB).toFixed(0)} MiB/s` : `${(value / 1000).toFixed(2)} k IOPS`;
}

function medianOf(samples: UblkSample[], system: string, job: string): number {
  const values = samples.filter((s) => s.system === system && s.job === job).map((s) => s.value);
  return values.length > 0 ? median(values) : Number.NaN;
}

/** Median over rounds of system ÷ base within each round. */
function ratioOf(samples: UblkSample[], system: string, base: string, job: string): number {
  const ratios: number[] = [];
  for (const sample of samples.filter((s) => s.system === system && s.job === job)) {
    const other = samples.find((s) => s.system === base && s.job === job && s.round === sample.round);
    if (other !== undefined && other.value > 0) ratios.push(sample.value / other.value);
  }
  return ratios.length > 0 ? median(ratios) : Number.NaN;
}

export function throughputTable(samples: UblkSample[], systems: SystemId[], rounds: number): string {
  const rows = JOBS.map((job) => [JOB_LABELS[job.id]!, ...systems.map((system) => {
    const value = formatValue(medianOf(samples, system, job.id), job.id);
    if (system === 'loop' || value === '—') return value;
    return `${value} (${ratioOf(samples, system, 'loop', job.id).toFixed(2)}×)`;
  })]);
  return table([`job (median of ${rounds} rounds; ×loop)`, ...systems.map((s) => SYSTEM_LABELS[s])], rows);
}

export function ublkComparisons(with_mini: boolean): Comparison[] {
  const comparisons: Comparison[] = [];
  for (const job of JOBS) {
    comparisons.push({
      goal: 'ublk: no snapshot ≥ 0.8× loop', label: JOB_LABELS[job.id]!, target: 0.8,
      numerator: { system: DEFAULT_PLAIN, workload: job.id }, denominator: { system: 'loop', workload: job.id },
    });
  }
  if (with_mini) {
    for (const job of JOBS) {
      comparisons.push({
        goal: 'ublk: no snapshot ≥ the minimal C server', label: JOB_LABELS[job.id]!, target: 1,
        numerator: { system: DEFAULT_PLAIN, workload: job.id }, denominator: { system: 'ublk-mini', workload: job.id },
      });
    }
  }
  return comparisons;
}

export async function runUblkBench(options: UblkBenchOptions): Promise<UblkBenchResult> {
  const { log } = options;
  if (process.platform !== 'linux') return skip('Linux only');
  if (process.getuid?.() !== 0) return skip('the guest runner (test/vm/run-in-guest.sh) needs root');
  if (!onPath('fio')) return skip('no fio on this machine (apt-get install fio)');
  if (!existsSync(GUEST_PROGRAM)) return skip(`${GUEST_PROGRAM} missing (npm run build)`);
  log('ublk: preparing the guest (test/vm/run-in-guest.sh --setup)');
  const setup = spawnSync(RUNNER, ['--setup'], { encoding: 'utf8', timeout: SETUP_TIMEOUT_MS });
  if (setup.status !== 0) {
    return skip(`no ublk guest: run-in-guest.sh --setup ended with ${setup.status ?? setup.signal} (${tail(`${setup.stdout}\n${setup.stderr}`, 3)})`);
  }
  const rounds = options.rounds ?? (options.quick ? 2 : 3);
  const runtime_s = options.runtime_s ?? (options.quick ? 3 : 5);
  const size_mib = options.quick ? 256 : 512;
  const temp = mkdtempSync(path.join(hostTempDir(), 'ublksnap-ublk-mini-'));
  try {
    const mini = buildMini(temp);
    if (mini.reason !== undefined) log(`ublk: no ublk-mini row: ${mini.reason}`);
    const systems = SYSTEMS.filter((s) => s !== 'ublk-mini' || mini.binary !== undefined);
    const args = [`--rounds=${rounds}`, `--runtime=${runtime_s}`, `--size-mib=${size_mib}`, `--systems=${systems.join(',')}`,
      ...(mini.binary !== undefined ? [`--mini=${mini.binary}`] : [])];
    log(`ublk: booting the guest: ${rounds} rounds × ${systems.length} systems × ${JOBS.length} jobs of ${runtime_s} s`);
    const started = Date.now();
    const run = await runGuest(args, log);
    const elapsed_s = (Date.now() - started) / 1000;
    const setup_record = run.records.find((r) => r.kind === 'setup');
    const samples = run.records.filter((r) => r.kind === 'sample') as unknown as UblkSample[];
    const done = run.records.find((r) => r.kind === 'done');
    if (run.status !== 0 || done === undefined) {
      const infrastructure = INFRASTRUCTURE_STATUS[run.status];
      const reason = `${infrastructure ?? 'the guest program failed'} (status ${run.status}): ${tail(run.stderr, 4)}`;
      const json = { failed: reason, setup: setup_record, samples };
      if (infrastructure !== undefined && samples.length === 0) return { ...skip(reason), json: { skipped: reason } };
      return { text: '', goal_lines: [`FAIL ublk: ${reason}`], json };
    }
    const goal_samples: Sample[] = samples.map((s) => ({ system: s.system, workload: s.job, round: s.round, value: s.value, server_cpu_seconds: 0 }));
    const results: GoalVerdict[] = verdicts(goal_samples, ublkComparisons(mini.binary !== undefined));
    const snap_vs_plain = JOBS.map((job) => `${JOB_LABELS[job.id]} ${ratioOf(samples, DEFAULT_SNAP, DEFAULT_PLAIN, job.id).toFixed(2)}×`);
    // The hosting comparison (issue 11): the native queue thread ÷ the actor-hosted queue, same round.
    const has_both = systems.includes('ublksnap') && systems.includes('ublksnap-thread');
    const thread_vs_actor = !has_both ? [] : JOBS.map((job) => `${JOB_LABELS[job.id]} ${ratioOf(samples, 'ublksnap-thread', 'ublksnap', job.id).toFixed(2)}×`
      + (systems.includes('ublksnap-thread-snap') && systems.includes('ublksnap-snap')
        ? ` (snapshot ${ratioOf(samples, 'ublksnap-thread-snap', 'ublksnap-snap', job.id).toFixed(2)}×)` : ''));
    // Mapped writes (issue 11): the default daemon ÷ the same with every write through the slot.
    const has_slot = systems.includes('ublksnap-slot') && systems.includes('ublksnap-thread');
    const mapped_vs_slot = !has_slot ? [] : JOBS.map((job) => `${JOB_LABELS[job.id]} ${ratioOf(samples, 'ublksnap-thread', 'ublksnap-slot', job.id).toFixed(2)}×`);
    const guest = setup_record as { kernel?: string; loadavg?: string } | undefined;
    const text = [
      throughputTable(samples, systems, rounds),
      '',
      comparisonTable(results),
      '',
      `snapshot ÷ no snapshot (${UBLK_HOSTING_DEFAULT} hosting, same round, median): ${snap_vs_plain.join(', ')}`,
      ...(has_both ? [`thread ÷ actor hosting (same round, median): ${thread_vs_actor.join(', ')}; default: ${UBLK_HOSTING_DEFAULT}`] : []),
      ...(has_slot ? [`mapped writes ÷ slot writes (thread hosting, same round, median): ${mapped_vs_slot.join(', ')}`] : []),
      `guest kernel ${guest?.kernel ?? '?'}, ${runtime_s} s per job, ${size_mib} MiB backing file on the guest's /dev/shm; `
        + `host load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; the part took ${elapsed_s.toFixed(0)} s. TCG emulation: ratios only.`,
    ].join('\n');
    const goal_lines = results.map(verdictLine);
    if (mini.binary === undefined) goal_lines.push(`SKIP ublk: no snapshot ≥ the minimal C server: ${mini.reason}`);
    return {
      text,
      goal_lines,
      json: { setup: setup_record, done, elapsed_s, rounds, runtime_s, size_mib, systems, samples, verdicts: results, mini: mini.reason ?? 'built' },
    };
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
}

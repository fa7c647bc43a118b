// The ublk bench inside the guest (run by ./suite.ts through
// test/vm/run-in-guest.sh; one boot for everything): the same backing file
// contents on the guest's /dev/shm served several ways, measured with fio,
// rounds alternating the systems. Each daemon serves a copy of its own:
// loop and ublk-mini open their file for writing, and on a daemon's volume
// file that open breaks the daemon's write lease (src/engine/writer-watch.ts),
// which a daemon stopped with SIGSTOP cannot release: the open then waits
// out the kernel's lease-break time (45 s).
//
//   loop           the kernel loop driver, `losetup --direct-io=on FILE`
//   ublksnap       a real daemon, `attach --ublk`: the volume's /dev/ublkbN, no
//                  snapshot; its queue hosted in the I/O actor (UBLKSNAP_UBLK_HOSTING=actor)
//   ublksnap-snap  the same device with a snapshot being filled: a fresh
//                  snapshot_create (diff storage: a directory on /dev/shm)
//                  + take right before each job, destroy right after
//   ublksnap-thread, ublksnap-thread-snap
//                  the same two on a second daemon whose queue runs on a
//                  native queue thread (UBLKSNAP_UBLK_HOSTING=thread)
//   ublksnap-slot  a third daemon, thread hosting, mapped writes off
//                  (UBLKSNAP_UBLK_MAPPED_WRITES=0): what mapped writes bring
//   ublk-mini      a minimal C server (UBLKSNAP_UBLK_MINI_SOURCE), compiled by the host (the floor)
//
// Only the system being measured runs: the daemons not in use are stopped
// with SIGSTOP (their idle actors would otherwise take guest CPU from the
// system under test), and continued with SIGCONT for their own jobs.
//
// fio does the timing; this program only sets up, starts fio and reports.
// Node starts 6-8× slower in the guest, so there is one node process (this
// one) plus the daemon, and the daemon is driven over its socket, not by
// CLI processes. Every sample goes to stdout as one line
// `UBLKBENCH {json}`; progress goes to stderr.
//
// usage (in the guest, as root, from the checkout):
//   node dist/bench/ublk/guest.js [--rounds=N] [--runtime=S] [--size-mib=N] [--mini=BINARY] [--systems=a,b]

import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { IpcClient } from '../../src/ipc/client';

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const CLI_PATH = path.join(REPO_ROOT, 'bin', 'ublksnap.js');
const MIB = 1024 * 1024;
/** Node and the daemon's workers start slowly under TCG. */
const DAEMON_START_TIMEOUT_MS = 120_000;
const MINI_START_TIMEOUT_MS = 30_000;
/** fio gets its runtime plus this much before it is killed. */
const FIO_GRACE_S = 60;
/** A snapshot call (take reserves the first diff-storage step). */
const CALL_TIMEOUT_MS = 60_000;
const ATTACH_ATTEMPTS = 3;
const ATTACH_RETRY_MS = 15_000;
/** UBLKSNAP_UBLK_STATS=1 (passed into the guest by the runner): the daemon logs requests per wake-up. */
const STATS = process.env.UBLKSNAP_UBLK_STATS === '1';

export const SYSTEMS = ['loop', 'ublksnap', 'ublksnap-snap', 'ublk-mini', 'ublksnap-thread', 'ublksnap-thread-snap', 'ublksnap-slot'] as const;
export type SystemId = typeof SYSTEMS[number];
/**
 * A daemon of the bench: its queue hosting, and `thread-slot` the thread
 * hosting with mapped writes off (UBLKSNAP_UBLK_MAPPED_WRITES=0: every
 * write's data goes into the tag's slot, then pwrite), to measure what
 * mapped writes bring.
 */
export type Variant = 'actor' | 'thread' | 'thread-slot';
const VARIANT_ENV: Record<Variant, Record<string, string>> = {
  actor: { UBLKSNAP_UBLK_HOSTING: 'actor' },
  thread: { UBLKSNAP_UBLK_HOSTING: 'thread' },
  'thread-slot': { UBLKSNAP_UBLK_HOSTING: 'thread', UBLKSNAP_UBLK_MAPPED_WRITES: '0' },
};
/** The daemon systems: which daemon variant each runs, and whether it fills a snapshot. */
export const DAEMON_SYSTEMS: Partial<Record<SystemId, { variant: Variant; snapshot: boolean }>> = {
  ublksnap: { variant: 'actor', snapshot: false },
  'ublksnap-snap': { variant: 'actor', snapshot: true },
  'ublksnap-thread': { variant: 'thread', snapshot: false },
  'ublksnap-thread-snap': { variant: 'thread', snapshot: true },
  'ublksnap-slot': { variant: 'thread-slot', snapshot: false },
};
/** After SIGCONT, the daemon's threads get this long to settle before fio starts. */
const RESUME_SETTLE_MS = 300;

export interface JobSpec {
  id: string;
  rw: string;
  bs: string;
  /** I/Os per second (4 KiB) or bytes per second (1 MiB). */
  unit: 'IOPS' | 'MiB/s';
}

export const JOBS: JobSpec[] = [
  { id: 'randread-4k', rw: 'randread', bs: '4k', unit: 'IOPS' },
  { id: 'randwrite-4k', rw: 'randwrite', bs: '4k', unit: 'IOPS' },
  { id: 'seqwrite-1m', rw: 'write', bs: '1m', unit: 'MiB/s' },
];

/** One fio job on one system in one round. */
export interface UblkSample {
  system: SystemId;
  job: string;
  round: number;
  /** IOPS for 4 KiB jobs, bytes/s for the 1 MiB job. */
  value: number;
  iops: number;
  bytes_per_second: number;
  runtime_ms: number;
  /** Mean completion latency, µs. */
  clat_mean_us: number;
}

interface Options {
  rounds: number;
  runtime_s: number;
  size_mib: number;
  mini: string | undefined;
  systems: SystemId[];
}

function progress(message: string): void {
  process.stderr.write(`[ublk-bench ${process.uptime().toFixed(1)}s] ${message}\n`);
}

function emit(kind: string, body: unknown): void {
  process.stdout.write(`UBLKBENCH ${JSON.stringify({ kind, ...(body as object) })}\n`);
}

function sh(command: string, args: string[], timeout_ms = 120_000): string {
  return execFileSync(command, args, { encoding: 'utf8', timeout: timeout_ms, stdio: ['ignore', 'pipe', 'pipe'] });
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      runtime: { type: 'string', default: '5' },
      'size-mib': { type: 'string', default: '512' },
      mini: { type: 'string' },
      systems: { type: 'string' },
    },
  });
  const systems = (values.systems?.split(',') ?? [...SYSTEMS]) as SystemId[];
  for (const system of systems) if (!SYSTEMS.includes(system)) throw new Error(`unknown system ${system}`);
  return {
    rounds: Number(values.rounds),
    runtime_s: Number(values.runtime),
    size_mib: Number(values['size-mib']),
    mini: values.mini === undefined || values.mini === '' ? undefined : values.mini,
    systems,
  };
}

// ── fio ─────────────────────────────────────────────────────────────────

interface FioFigures {
  iops: number;
  bytes_per_second: number;
  runtime_ms: number;
  clat_mean_us: number;
  /** fio's own CPU (user + system, the kernel's submission and completion work included), % of one CPU. */
  fio_cpu_percent: number;
}

/**
 * One fio job, io_uring, O_DIRECT, QD32. `one_pass`: stop after writing
 * the device once (or at the runtime), so that on a fresh snapshot every
 * write of a sequential job is a first touch; else time-based.
 */
function fio(device: string, job: JobSpec, options: Options, one_pass: boolean): FioFigures {
  const args = [
    '--name=job', `--filename=${device}`, '--ioengine=io_uring', '--direct=1', `--rw=${job.rw}`, `--bs=${job.bs}`,
    '--iodepth=32', `--runtime=${options.runtime_s}`, `--size=${options.size_mib}m`, '--output-format=json',
    ...(one_pass ? [] : ['--time_based']),
  ];
  const result = spawnSync('fio', args, { encoding: 'utf8', timeout: (options.runtime_s + FIO_GRACE_S) * 1000, maxBuffer: 16 * MIB });
  if (result.status !== 0) throw new Error(`fio ${job.id} on ${device}: status ${result.status} ${result.signal ?? ''}: ${result.stderr}`);
  // fio may print warnings before the JSON.
  const json = JSON.parse(result.stdout.slice(result.stdout.indexOf('{')));
  const side = job.rw.includes('read') ? json.jobs[0].read : json.jobs[0].write;
  if (json.jobs[0].error !== 0) throw new Error(`fio ${job.id} on ${device}: error ${json.jobs[0].error}`);
  return {
    iops: side.iops,
    bytes_per_second: side.bw_bytes,
    runtime_ms: side.runtime,
    clat_mean_us: (side.clat_ns?.mean ?? 0) / 1000,
    fio_cpu_percent: Number(((json.jobs[0].usr_cpu ?? 0) + (json.jobs[0].sys_cpu ?? 0)).toFixed(1)),
  };
}

// ── the systems ─────────────────────────────────────────────────────────

class Daemon {
  private child: ChildProcess | null = null;
  private client: IpcClient | null = null;
  logs = '';
  readonly socket: string;

  constructor(private readonly dir: string, readonly variant: Variant) {
    this.socket = path.join(dir, 'ctl.sock');
  }

  /** Spawns the daemon; ready() waits until it answers. */
  spawn(): void {
    // UBLKSNAP_BENCH_CPU_PROF=DIR: one .cpuprofile per daemon thread (node dist/bench/profile-summary.js DIR).
    const profile = process.env.UBLKSNAP_BENCH_CPU_PROF;
    const node_args = profile === undefined || profile === '' ? [] : ['--cpu-prof', '--cpu-prof-interval=5000', `--cpu-prof-dir=${profile}`];
    const child = spawn(process.execPath, [...node_args, CLI_PATH, 'daemon', '--socket', this.socket, '--state-dir', path.join(this.dir, 'state'),
      '--nbd-socket', path.join(this.dir, 'nbd.sock'), '--log-level', STATS ? 'info' : 'warn'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...VARIANT_ENV[this.variant] } });
    this.child = child;
    child.stdout?.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      this.logs += text;
      // The session's wake-up statistics, next to the job they belong to.
      if (STATS) for (const line of text.split('\n')) if (line.includes('ublk queue stats')) progress(`daemon: ${line}`);
    });
    child.stderr?.on('data', (chunk: Buffer) => { this.logs += chunk.toString(); });
  }

  /**
   * A fresh control connection: the daemon closes one idle for 2 minutes
   * (src/ipc/server.ts IDLE_TIMEOUT_MS), and a daemon waits stopped while
   * the others run.
   */
  async reconnect(): Promise<void> {
    this.client?.close();
    this.client = null;
    await this.ready();
  }

  async ready(): Promise<void> {
    if (this.client !== null) return;
    const child = this.child!;
    const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`daemon exited during start:\n${this.logs}`);
      try {
        const client = await IpcClient.connect(this.socket);
        await client.call('version', {});
        this.client = client;
        return;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`daemon did not answer: ${(error as Error).message}\n${this.logs}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** SIGSTOP / SIGCONT: a daemon not under test takes no CPU. */
  pause(): void {
    this.signal('SIGSTOP');
  }

  async resume(): Promise<void> {
    if (this.signal('SIGCONT')) await new Promise((resolve) => setTimeout(resolve, RESUME_SETTLE_MS));
  }

  private signal(signal: NodeJS.Signals): boolean {
    const child = this.child;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return false;
    return child.kill(signal);
  }

  get ipc(): IpcClient {
    if (this.client === null) throw new Error('daemon not started');
    return this.client;
  }

  async stop(): Promise<void> {
    this.client?.close();
    this.client = null;
    const child = this.child;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  }
}

/** CPU seconds per thread name of a process (utime + stime, /proc/PID/task/TID/stat); {} once it is gone. */
function threadCpu(pid: number | undefined): Record<string, number> {
  const result: Record<string, number> = {};
  if (pid === undefined) return result;
  const ticks = 100;  // USER_HZ on Linux
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Node's worker threads are all "node": the thread id tells them apart (the lowest is the main thread).
      const name = task === String(pid) ? `${comm}:main` : `${comm}:${task}`;
      result[name] = (Number(fields[11]) + Number(fields[12])) / ticks;
    }
  } catch {
    // The process ended.
  }
  return result;
}

function cpuDelta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const [name, seconds] of Object.entries(after)) {
    const used = seconds - (before[name] ?? 0);
    if (used >= 0.01) delta[name] = Number(used.toFixed(2));
  }
  return delta;
}

/** ublk-mini: prints "ublk-mini: /dev/ublkbN started" once it serves. */
async function startMini(binary: string, backing: string): Promise<{ device: string; pid: number | undefined; stop: () => Promise<string> }> {
  const child = spawn(binary, [backing], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { out += chunk.toString(); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + MINI_START_TIMEOUT_MS;
  let device = '';
  while (device === '') {
    const match = /(\/dev\/ublkb\d+) started/.exec(out);
    if (match !== null) device = match[1]!;
    else if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`ublk-mini did not start: ${out}`);
    } else await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    device,
    pid: child.pid,
    stop: async () => {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
      return out.trim().split('\n').pop() ?? '';
    },
  };
}

/**
 * attach --ublk; again after a pause when it fails: right after start, on a
 * loaded host (or under --cpu-prof), the daemon's actors may still be
 * starting and its 10 s control calls time out.
 */
async function attachWithRetries(daemon: Daemon, backing: string): Promise<{ ublk?: string }> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await daemon.ipc.call('attach', { path: backing, ublk: true }, CALL_TIMEOUT_MS);
    } catch (error) {
      if (attempt >= ATTACH_ATTEMPTS) throw error;
      progress(`attach failed (${(error as Error).message}); again in ${ATTACH_RETRY_MS / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, ATTACH_RETRY_MS));
    }
  }
}

/** A daemon of one variant with its own copy of the backing file, attached. */
interface Served {
  daemon: Daemon;
  backing: string;
  diff_dir: string;
  device: string;
}

/** Starts the daemon, attaches its backing file and warms it up; leaves it paused. */
async function attachAndWarm(served: Served, options: Options, limit_bytes: number, started: number): Promise<void> {
  const { daemon } = served;
  await daemon.resume();
  await daemon.ready();
  const attached = await attachWithRetries(daemon, served.backing);
  served.device = attached.ublk ?? '';
  if (!/^\/dev\/ublkb\d+$/.test(served.device)) throw new Error(`attach --ublk gave ${JSON.stringify(attached)}`);
  progress(`daemon (${daemon.variant}) up, ${served.device} attached in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  // Untimed warm-up: the daemon is JIT-compiled; a daemon in service is warm.
  const warm: Options = { ...options, runtime_s: 2 };
  for (const job of JOBS) fio(served.device, job, warm, false);
  const { id } = await daemon.ipc.call('snapshot_create', { devices: [served.backing], storage: served.diff_dir, limit_bytes }, CALL_TIMEOUT_MS);
  await daemon.ipc.call('snapshot_take', { id }, CALL_TIMEOUT_MS);
  fio(served.device, JOBS[1]!, warm, false);
  fio(served.device, JOBS[2]!, warm, true);
  await daemon.ipc.call('snapshot_destroy', { id }, CALL_TIMEOUT_MS);
  progress(`warm-up (${daemon.variant}) done`);
  daemon.pause();
}

async function main(): Promise<void> {
  const options = parseOptions();
  const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  progress(`kernel ${kernel}, ${options.rounds} rounds × ${options.systems.join(', ')}, ${options.runtime_s} s per job, ${options.size_mib} MiB`);
  sh('modprobe', ['loop']);
  sh('modprobe', ['ublk_drv']);
  const work = mkdtempSync('/dev/shm/ublk-bench-');
  const backing = path.join(work, 'backing.img');
  const variants = [...new Set(options.systems.flatMap((s) => DAEMON_SYSTEMS[s]?.variant ?? []))];
  const served = new Map<Variant, Served>();
  const started = Date.now();
  // The daemons start slowly under TCG (node, its worker threads): while the files are written.
  for (const variant of variants) {
    const dir = path.join(work, variant);
    mkdirSync(dir);
    const diff_dir = path.join(dir, 'diff');
    mkdirSync(diff_dir);
    // Not the file loop and ublk-mini write (see the top).
    const file = path.join(dir, 'backing.img');
    const daemon = new Daemon(dir, variant);
    daemon.spawn();
    served.set(variant, { daemon, backing: file, diff_dir, device: '' });
  }
  // Written fully: every tmpfs page exists before anyone measures.
  for (const file of new Set([backing, ...[...served.values()].map((s) => s.backing)])) {
    sh('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${options.size_mib}`, 'status=none']);
  }
  progress(`backing file(s) written in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const fio_version = sh('fio', ['--version']).trim();
  emit('setup', { kernel, fio: fio_version, nproc: Number(sh('nproc', []).trim()), options, variants, loadavg: readFileSync('/proc/loadavg', 'utf8').trim() });

  // Each snapshot is destroyed before the next; its storage may grow to the volume's size.
  const limit_bytes = (options.size_mib + 64) * MIB;
  /** Continues `current` (if any) and stops every other daemon. */
  const activate = async (current: Served | undefined): Promise<void> => {
    for (const other of served.values()) if (other !== current) other.daemon.pause();
    await current?.daemon.resume();
    await current?.daemon.reconnect();
  };
  try {
    // The daemons start together; then one at a time attaches and warms up, the others stopped.
    await Promise.all([...served.values()].map((one) => one.daemon.ready()));
    for (const one of served.values()) one.daemon.pause();
    for (const one of served.values()) await attachAndWarm(one, options, limit_bytes, started);

    for (let round = 1; round <= options.rounds; round += 1) {
      // Rotate the order by one each round: no system always follows the same neighbour.
      const order = options.systems.map((_, i) => options.systems[(i + round - 1) % options.systems.length]!);
      for (const system of order) {
        const record = (job: JobSpec, figures: FioFigures, extra: Record<string, unknown> = {}): void => {
          const value = job.unit === 'IOPS' ? figures.iops : figures.bytes_per_second;
          const sample: UblkSample = { system, job: job.id, round, value, ...figures };
          emit('sample', { ...sample, ...extra });
          const shown = job.unit === 'IOPS' ? `${(figures.iops / 1000).toFixed(1)}k IOPS` : `${(figures.bytes_per_second / MIB).toFixed(0)} MiB/s`;
          const cpu = extra.server_cpu === undefined ? '' : `; server CPU s ${JSON.stringify(extra.server_cpu)}`;
          progress(`round ${round} ${system} ${job.id}: ${shown} (fio ${figures.fio_cpu_percent}% CPU${cpu})`);
        };
        const daemon_system = DAEMON_SYSTEMS[system];
        const one = daemon_system === undefined ? undefined : served.get(daemon_system.variant)!;
        await activate(one);
        if (system === 'loop') {
          const device = sh('losetup', ['-f', '--show', '--direct-io=on', backing]).trim();
          try {
            const dio = readFileSync(`/sys/block/${path.basename(device)}/loop/dio`, 'utf8').trim();
            for (const job of JOBS) record(job, fio(device, job, options, false), { dio });
          } finally {
            sh('losetup', ['-d', device]);
          }
        } else if (system === 'ublk-mini') {
          if (options.mini === undefined || !existsSync(options.mini)) {
            progress(`no ublk-mini row: ${options.mini ?? 'no binary given'} not visible in the guest`);
            continue;
          }
          const mini = await startMini(options.mini, backing);
          try {
            for (const job of JOBS) {
              const before = threadCpu(mini.pid);
              const figures = fio(mini.device, job, options, false);
              record(job, figures, { server_cpu: cpuDelta(before, threadCpu(mini.pid)) });
            }
          } finally {
            progress(`ublk-mini: ${await mini.stop()}`);
          }
        } else if (!daemon_system!.snapshot) {
          const { daemon, device } = one!;
          for (const job of JOBS) {
            const before = threadCpu(daemon.pid);
            const figures = fio(device, job, options, false);
            record(job, figures, { variant: daemon.variant, server_cpu: cpuDelta(before, threadCpu(daemon.pid)) });
          }
        } else {
          const { daemon, device, backing: file, diff_dir } = one!;
          for (const job of JOBS) {
            const ipc = daemon.ipc;
            const { id } = await ipc.call('snapshot_create', { devices: [file], storage: diff_dir, limit_bytes }, CALL_TIMEOUT_MS);
            const before_take = Date.now();
            await ipc.call('snapshot_take', { id }, CALL_TIMEOUT_MS);
            const take_ms = Date.now() - before_take;
            // Sequential: one pass, so every write is a first touch of its chunk.
            const before = threadCpu(daemon.pid);
            const figures = fio(device, job, options, job.rw === 'write');
            const server_cpu = cpuDelta(before, threadCpu(daemon.pid));
            await ipc.call('snapshot_destroy', { id }, CALL_TIMEOUT_MS);
            record(job, figures, { variant: daemon.variant, take_ms, server_cpu });
          }
        }
      }
    }
    emit('done', { loadavg: readFileSync('/proc/loadavg', 'utf8').trim() });
  } catch (error) {
    for (const one of served.values()) progress(`daemon (${one.daemon.variant}) log tail:\n${one.daemon.logs.split('\n').slice(-30).join('\n')}`);
    throw error;
  } finally {
    for (const one of served.values()) {
      await one.daemon.resume();
      try {
        await one.daemon.reconnect();
        if (one.device !== '') await one.daemon.ipc.call('detach', { device: one.backing, force: true }, CALL_TIMEOUT_MS);
      } catch (error) {
        progress(`detach (${one.daemon.variant}): ${(error as Error).message}`);
      }
      await one.daemon.stop();
    }
    rmSync(work, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`ublk-bench: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  });
}

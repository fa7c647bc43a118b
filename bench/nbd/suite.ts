// The NBD comparison (issue 6): ublksnap through its real NBD frontend,
// side by side with nbdkit's file plugin, a plain qemu-storage-daemon
// export and qemu-storage-daemon copy-before-write fleecing, on the same
// image of random data on /dev/shm, over Unix sockets; and the TLS rows
// (tls-systems.ts) over loopback TCP.
//
//   set-up      install missing tools (tools.ts); fill the image; as root,
//               make an XFS (reflink=1) with an image of its own for the
//               -xfs systems (../xfs-mount.ts)
//   rounds      every system once per round (systems.ts), the order
//               rotated by one each round so no system always runs first
//               or last; samples, server CPU and RSS, image checksums
//   take        snapshot take latency, 4 volumes under write load
//   verdicts    per-round ratios → medians → one verdict per docs/design.md §10
//               goal (goals.ts); tables and chart (report.ts)

import { closeSync, fdatasyncSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chunkGeometry } from '../../src/shared/geometry';
import { mountXfsReflink, type XfsMount } from '../xfs-mount';
import { DEFAULT_PARAMS } from '../../src/shared/params';
import { clientStallLine } from './client-stalls';
import { evaluate, verdictLine, verdicts as judge, type Comparison, type GoalVerdict, type Sample } from './goals';
import { fillRandom } from './image';
import { amplificationTable, chartSvg, comparisonTable, resourceTable, takeTable, throughputTable, type ReportInput } from './report';
import type { ServerUsage } from './servers';
import {
  QEMU_COPY_UNIT_BYTES, RANDOM_BLOCK_BYTES, WORKLOADS, nbdkitFile, qsdFleecing, qsdPlain, strideWorkload, ublksnapPlain,
  XFS_LABEL, ublksnapSnapshot, ublksnapSnapshot64k, type RoundContext, type SampleRecord, type SystemSpec, type Verification,
  type WorkloadSpec, type XfsSite,
} from './systems';
import { probeQemuCopyMethod, type QemuCopyMethod } from './qemu-copy-method';
import { measureTakeLatency, type TakeLatencyResult } from './take-latency';
import { WRITE_4K_TLS, nbdkitTls, ublksnapTcp, ublksnapTls } from './tls-systems';
import { ensureTools } from './tools';

const KiB = 1024;
const MiB = 1024 * KiB;
const SECTOR_BYTES = 512;
/** The image: 1 GiB of random data on tmpfs. --quick uses a smaller one. */
export const IMAGE_MIB_FULL = 1024;
export const IMAGE_MIB_QUICK = 256;
/** Rounds at most; fewer when the time budget would be passed (never fewer than ROUNDS_MIN). */
export const ROUNDS_FULL = 5;
export const ROUNDS_QUICK = 4;
export const ROUNDS_MIN = 2;
/**
 * The rounds' share of `npm run bench`'s promise (bench/README.md: full
 * under 22 minutes plus the ublk part, quick under 3): another round
 * starts only if, at the pace of the rounds so far, it ends within this.
 * A round takes 3.5-4.8 min at 1 GiB (the XFS and TLS rows and three
 * sequential first touches per snapshot system included) and ~30 s at
 * 256 MiB on two loaded cores. The full budget fits three rounds or four:
 * with two, the median is their mean, and one round whose tmpfs first
 * touch burst in server CPU decided a goal (bench/README.md, "Three rounds").
 * An explicit --rounds has no budget.
 */
export const ROUNDS_BUDGET_S_FULL = 960;
export const ROUNDS_BUDGET_S_QUICK = 105;
/** The random-write job: 65 536 I/Os of 4 KiB over a 1 GiB device; scaled with the image. */
const RANDOM_IOS_PER_GIB = 65_536;
const RANDOM_IOS_MIN = 4096;
const TAKE_VOLUME_MIB_FULL = 256;
const TAKE_VOLUME_MIB_QUICK = 32;
const TAKES_FULL = 10;
const TAKES_QUICK = 5;
const SHM_DIR = '/dev/shm';
/** The minimal I/O size the engine assumes for a regular file. */
const FILE_MIN_IO_BYTES = 4096;
/**
 * The XFS of the -xfs systems, in image sizes: the image, a diff storage or
 * QEMU target of up to one image, the new blocks the volume's overwrites
 * get while the storage keeps the old ones, the last snapshot's storage
 * while XFS frees it in the background, metadata. Sparse: memory is taken
 * only as XFS writes blocks (never returned before the end: no discard).
 */
const XFS_IMAGES = 6;

export interface NbdBenchOptions {
  quick: boolean;
  rounds?: number;
  image_mib?: number;
  /** Run the ublksnap servers under --cpu-prof, profiles in this directory. */
  profile_dir?: string;
  /** Only these system ids (debugging); the verdicts then say "not measured" where a side is missing. */
  systems?: string[];
  /** Skip the take-latency step. */
  skip_take?: boolean;
  log: (line: string) => void;
}

export interface NbdBenchResult {
  text: string;
  svg: string;
  goal_lines: string[];
  verdicts: GoalVerdict[];
  json: Record<string, unknown>;
}

export function defaultChunkBytes(image_bytes: number): number {
  return 2 ** chunkGeometry(image_bytes / SECTOR_BYTES, FILE_MIN_IO_BYTES, DEFAULT_PARAMS).shift;
}

export const GOALS = {
  plain: 'no snapshot ≥ 0.8× nbdkit file plugin',
  versus_qemu: 'first-touch writes ≥ 2× QEMU fleecing',
  versus_self: 'first-touch writes ≥ 0.5× our no-snapshot',
  image_reads: 'image reads ≥ 1.0× QEMU snapshot-access',
  xfs_versus_self: 'XFS reflink: first-touch seq writes ≥ 0.9× our no-snapshot',
  xfs_versus_qemu: 'XFS reflink: first-touch seq writes ≥ 3× QEMU fleecing',
} as const;

/** Every comparison behind the four docs/design.md §10 speed goals. */
export function goalComparisons(snapshot_systems: { id: string; copy_unit_bytes: number; on_xfs?: boolean }[]): Comparison[] {
  const compare = (goal: string, label: string, target: number, top: [string, string], bottom: [string, string]): Comparison =>
    ({ goal, label, target, numerator: { system: top[0], workload: top[1] }, denominator: { system: bottom[0], workload: bottom[1] } });
  const qemu_stride = strideWorkload(QEMU_COPY_UNIT_BYTES).id;
  const list: Comparison[] = [
    compare(GOALS.plain, 'seq write', 0.8, ['ublksnap', WORKLOADS.seq_write.id], ['nbdkit', WORKLOADS.seq_write.id]),
    compare(GOALS.plain, 'rand write', 0.8, ['ublksnap', WORKLOADS.rand_write.id], ['nbdkit', WORKLOADS.rand_write.id]),
    compare(GOALS.plain, 'seq read', 0.8, ['ublksnap', WORKLOADS.seq_read.id], ['nbdkit', WORKLOADS.seq_read.id]),
  ];
  for (const { id, copy_unit_bytes, on_xfs } of snapshot_systems) {
    const chunk = `${copy_unit_bytes / KiB} KiB chunk`;
    if (on_xfs === true) {
      // Issue 15: on a filesystem where chunks are cloned, against the same server's write just before take and QEMU on the same XFS.
      list.push(
        compare(GOALS.xfs_versus_self, `seq write, ${chunk}`, 0.9, [id, WORKLOADS.seq_write.id], [id, WORKLOADS.seq_write_before_take.id]),
        compare(GOALS.xfs_versus_qemu, `seq write, ${chunk}`, 3, [id, WORKLOADS.seq_write.id], ['qsd-fleece-xfs', WORKLOADS.seq_write.id]),
      );
      continue;
    }
    const stride = strideWorkload(copy_unit_bytes).id;
    list.push(
      compare(GOALS.versus_qemu, `seq write, ${chunk}`, 2, [id, WORKLOADS.seq_write.id], ['qsd-fleece', WORKLOADS.seq_write.id]),
      compare(GOALS.versus_qemu, `rand write, ${chunk}`, 2, [id, WORKLOADS.rand_write.id], ['qsd-fleece', WORKLOADS.rand_write.id]),
      compare(GOALS.versus_qemu, `write per copy unit, ${chunk}`, 2, [id, stride], ['qsd-fleece', qemu_stride]),
      compare(GOALS.versus_self, `seq write, ${chunk}`, 0.5, [id, WORKLOADS.seq_write.id], ['ublksnap', WORKLOADS.seq_write.id]),
      compare(GOALS.versus_self, `rand write, ${chunk}`, 0.5, [id, WORKLOADS.rand_write.id], ['ublksnap', WORKLOADS.rand_write.id]),
      compare(GOALS.versus_self, `write per chunk, ${chunk}`, 0.5, [id, stride], ['ublksnap', stride]),
      compare(GOALS.image_reads, `image read before copy, ${chunk}`, 1, [id, WORKLOADS.image_read_before.id], ['qsd-fleece', WORKLOADS.image_read_before.id]),
      compare(GOALS.image_reads, `image read after overwrite, ${chunk}`, 1, [id, WORKLOADS.image_read_after.id], ['qsd-fleece', WORKLOADS.image_read_after.id]),
    );
  }
  const order = Object.values(GOALS) as string[];
  return list.sort((a, b) => order.indexOf(a.goal) - order.indexOf(b.goal));
}

/**
 * Not a goal: the XFS first touches against the no-snapshot system, a
 * server of its own that ran at another time in the round. The goal pairs
 * them with their own server's write just before take instead; this line
 * shows what the cross-server ratio said (bench/README.md, "First touch
 * against the same server"). Empty when the no-snapshot system did not run.
 */
export function xfsCrossServerLine(samples: Sample[], snapshot_systems: { id: string; copy_unit_bytes: number; on_xfs?: boolean }[]): string {
  const parts = snapshot_systems.filter((s) => s.on_xfs === true).map((s) => {
    const result = evaluate(samples, {
      goal: '', label: '', target: 0,
      numerator: { system: s.id, workload: WORKLOADS.seq_write.id }, denominator: { system: 'ublksnap-xfs', workload: WORKLOADS.seq_write.id },
    });
    return result.ratios.length === 0 ? '' : `${s.copy_unit_bytes / KiB} KiB chunk ${result.ratios.map((r) => r.toFixed(2)).join(' ')} (median ${result.median.toFixed(2)}×)`;
  }).filter((part) => part !== '');
  return parts.length === 0 ? '' : `Not a goal: XFS first-touch seq writes ÷ the no-snapshot system's (another server, another time in the round): ${parts.join('; ')}.`;
}

/** Round r runs the systems starting at index r mod n. */
export function rotate<T>(items: T[], round: number): T[] {
  const shift = items.length === 0 ? 0 : round % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

function allSystems(image_bytes: number): SystemSpec[] {
  const default_chunk = defaultChunkBytes(image_bytes);
  const systems = [ublksnapPlain()];
  systems.push(ublksnapSnapshot('ublksnap-snap', `ublksnap, snapshot, ${default_chunk / KiB} KiB chunk (default)`, default_chunk));
  if (default_chunk !== QEMU_COPY_UNIT_BYTES) systems.push(ublksnapSnapshot64k());
  systems.push(nbdkitFile(), qsdPlain(), qsdFleecing());
  // Issue 15: the volume and the diff storage (QEMU: the target) on an XFS with reflink=1.
  systems.push(ublksnapPlain(true),
    ublksnapSnapshot('ublksnap-snap-xfs', `ublksnap, snapshot, ${default_chunk / KiB} KiB chunk (default)${XFS_LABEL}`, default_chunk, undefined, true));
  if (default_chunk !== QEMU_COPY_UNIT_BYTES) systems.push(ublksnapSnapshot64k(true));
  systems.push(qsdFleecing(true));
  // The TLS rows: ours over plain TCP and over TLS, nbdkit over TLS (tls-systems.ts).
  systems.push(ublksnapTcp(), ublksnapTls(), nbdkitTls());
  return systems;
}

/** What a run will do, decided before it starts. */
interface Plan {
  quick: boolean;
  image_bytes: number;
  rounds_max: number;
  /** undefined: no budget (--rounds given). */
  budget_s: number | undefined;
  systems: SystemSpec[];
  /** The ublksnap snapshot systems, for the goal comparisons (whether or not --systems kept them). */
  snapshot_systems: { id: string; copy_unit_bytes: number; on_xfs?: boolean }[];
  copy_units_bytes: number[];
  rand_ios: number;
  profile_dir: string | undefined;
  skip_take: boolean;
}

/** What a run gathered. */
interface Collected {
  rounds_done: number;
  samples: SampleRecord[];
  verifications: Verification[];
  usage: { system: string; round: number; usage: ServerUsage }[];
  errors: { system: string; round: number; error: string }[];
  take?: TakeLatencyResult;
  /** How QEMU saved clusters on the XFS (strace), or why it was not measured. */
  qemu_copy_method?: QemuCopyMethod | string;
}

function plan(options: NbdBenchOptions): Plan {
  const image_bytes = (options.image_mib ?? (options.quick ? IMAGE_MIB_QUICK : IMAGE_MIB_FULL)) * MiB;
  const every = allSystems(image_bytes);
  const systems = options.systems === undefined ? every : every.filter((s) => options.systems!.includes(s.id));
  if (systems.length === 0) throw new Error(`--systems matched none of ${every.map((s) => s.id).join(', ')}`);
  return {
    quick: options.quick,
    image_bytes,
    rounds_max: options.rounds ?? (options.quick ? ROUNDS_QUICK : ROUNDS_FULL),
    budget_s: options.rounds !== undefined ? undefined : (options.quick ? ROUNDS_BUDGET_S_QUICK : ROUNDS_BUDGET_S_FULL),
    systems,
    snapshot_systems: every.filter((s) => s.kind === 'snapshot' && s.id.startsWith('ublksnap'))
      .map((s) => ({ id: s.id, copy_unit_bytes: s.copy_unit_bytes!, on_xfs: s.on_xfs === true })),
    copy_units_bytes: [...new Set(every.flatMap((s) => (s.copy_unit_bytes === undefined ? [] : [s.copy_unit_bytes])))].sort((a, b) => a - b),
    rand_ios: Math.max(RANDOM_IOS_MIN, Math.round(RANDOM_IOS_PER_GIB * image_bytes / (1024 * MiB))),
    profile_dir: options.profile_dir,
    skip_take: options.skip_take === true,
  };
}

function elapsedS(started: number): number {
  return (Date.now() - started) / 1000;
}

/** Rounds until rounds_max, or until another round would end past the budget. */
async function runRounds(run: Plan, collected: Collected, work_dir: string, image_path: string, xfs: XfsSite | string | undefined,
  started: number, log: (line: string) => void): Promise<void> {
  for (let round = 0; round < run.rounds_max; round += 1) {
    const elapsed_s = elapsedS(started);
    if (run.budget_s !== undefined && round >= ROUNDS_MIN && elapsed_s + elapsed_s / round > run.budget_s) {
      log(`nbd: stopping after ${round} rounds: another would end past the ${run.budget_s} s budget`);
      return;
    }
    collected.rounds_done = round + 1;
    for (const system of rotate(run.systems, round)) {
      log(`round ${round + 1}/${run.rounds_max}: ${system.label} (${elapsedS(started).toFixed(0)} s)`);
      const context: RoundContext = {
        round, image_path, image_bytes: run.image_bytes, work_dir, copy_units_bytes: run.copy_units_bytes, xfs,
        profile_dir: run.profile_dir, log, rand_write_bytes: run.rand_ios * RANDOM_BLOCK_BYTES,
        record: (sample) => collected.samples.push(sample),
        verified: (verification) => collected.verifications.push(verification),
        usage: (id, measured) => collected.usage.push({ system: id, round, usage: measured }),
      };
      try {
        await system.run(context);
      } catch (error) {
        // One broken system must not hide the others' figures: its goals read "n/a" and FAIL.
        collected.errors.push({ system: system.id, round, error: (error as Error).message });
        log(`  ${system.id} round ${round + 1} FAILED: ${(error as Error).message}`);
      }
    }
  }
}

async function runTake(run: Plan, collected: Collected, work_dir: string, log: (line: string) => void): Promise<void> {
  try {
    collected.take = await measureTakeLatency({
      work_dir, log, volume_bytes: (run.quick ? TAKE_VOLUME_MIB_QUICK : TAKE_VOLUME_MIB_FULL) * MiB,
      takes: run.quick ? TAKES_QUICK : TAKES_FULL,
      node_flags: run.profile_dir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${path.join(run.profile_dir, 'take')}`],
    });
  } catch (error) {
    collected.errors.push({ system: 'ublksnap-take', round: 0, error: (error as Error).message });
    log(`  take latency FAILED: ${(error as Error).message}`);
  }
}

export async function runNbdBench(options: NbdBenchOptions): Promise<NbdBenchResult> {
  const log = options.log;
  const tools = ensureTools(log);
  const run = plan(options);
  const loadavg_start = os.loadavg();
  const started = Date.now();
  const collected: Collected = { rounds_done: 0, samples: [], verifications: [], usage: [], errors: [] };
  const work_dir = mkdtempSync(path.join(SHM_DIR, 'ublksnap-nbd-bench-'));
  if (run.profile_dir !== undefined) mkdirSync(run.profile_dir, { recursive: true });
  let xfs_mount: XfsMount | undefined;
  try {
    const image_path = path.join(work_dir, 'image.raw');
    log(`nbd: ${run.image_bytes / MiB} MiB image of random data in ${work_dir}, up to ${run.rounds_max} rounds, systems: ${run.systems.map((s) => s.id).join(' ')}`);
    fillRandom(image_path, run.image_bytes);
    let xfs: XfsSite | string | undefined;
    if (run.systems.some((s) => s.on_xfs === true)) {
      const mounted = mountXfsReflink('ublksnap-nbd-bench-xfs-', XFS_IMAGES * run.image_bytes);
      if (typeof mounted === 'string') {
        xfs = mounted;
        log(`nbd: the -xfs systems cannot run: ${mounted}`);
      } else {
        xfs_mount = mounted;
        xfs = { dir: mounted.dir, image_path: path.join(mounted.dir, 'image.raw') };
        fillRandom(xfs.image_path, run.image_bytes);
        // Written back now, not during the first -xfs system's workloads.
        const fd = openSync(xfs.image_path, 'r+');
        fdatasyncSync(fd);
        closeSync(fd);
        log(`nbd: XFS (reflink=1) for the -xfs systems at ${mounted.dir}`);
        if (run.systems.some((s) => s.id === 'qsd-fleece-xfs')) {
          try {
            collected.qemu_copy_method = await probeQemuCopyMethod(mounted.dir, work_dir);
          } catch (error) {
            collected.qemu_copy_method = `not measured: ${(error as Error).message}`;
          }
          log(`nbd: QEMU's copy method on XFS: ${qemuMethodLine(collected.qemu_copy_method)}`);
        }
      }
    }
    await runRounds(run, collected, work_dir, image_path, xfs, started, log);
    if (!run.skip_take && run.systems.some((s) => s.id.startsWith('ublksnap'))) {
      log(`take latency (${elapsedS(started).toFixed(0)} s)`);
      await runTake(run, collected, work_dir, log);
    }
  } finally {
    xfs_mount?.release();
    rmSync(work_dir, { recursive: true, force: true });
  }
  const loadavg_end = os.loadavg();
  const machine = { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, kernel: os.release(), node: process.version, loadavg_start, loadavg_end };
  return summarize(run, collected, { tools, machine, duration_s: elapsedS(started) });
}

function qemuMethodLine(probe: QemuCopyMethod | string): string {
  if (typeof probe === 'string') return probe;
  return `${probe.method} (strace of a ${probe.written_bytes / MiB} MiB sequential write: ${probe.copy_file_range_calls} copy_file_range, `
    + `${probe.write_calls} write calls; the target holds ${(probe.target_allocated_bytes / MiB).toFixed(0)} MiB)`;
}

function summarize(run: Plan, collected: Collected, context: {
  tools: Record<string, string>; machine: { cpus: number; loadavg_start: number[]; loadavg_end: number[] } & Record<string, unknown>; duration_s: number;
}): NbdBenchResult {
  const { samples, verifications, usage, take, errors, rounds_done } = collected;
  const verdicts = judge(samples, goalComparisons(run.snapshot_systems));
  const workloads: WorkloadSpec[] = [WORKLOADS.seq_read, WORKLOADS.seq_write, WORKLOADS.seq_write_before_take, WORKLOADS.rand_write,
    ...run.copy_units_bytes.map(strideWorkload), WORKLOADS.image_read_before, WORKLOADS.image_read_after, WRITE_4K_TLS];
  const input: ReportInput = { systems: run.systems, workloads, samples, usage, verdicts, take };
  const { machine } = context;
  const equal = verifications.filter((v) => v.equal).length;
  const cross_server = xfsCrossServerLine(samples, run.snapshot_systems);
  const client_stalls = clientStallLine(samples, new Map(run.systems.map((s) => [s.id, s.kind])));
  const loads = (values: number[]): string => values.map((l) => l.toFixed(2)).join(' ');
  const load = `load average ${loads(machine.loadavg_start)} at start, ${loads(machine.loadavg_end)} at end, ${machine.cpus} CPUs`;
  const subtitle = `${run.image_bytes / MiB} MiB image on ${SHM_DIR}, NBD over Unix sockets (the TCP and TLS rows: loopback TCP), ${rounds_done} rounds (order rotated), ${load}`;
  const verification_line = `${verifications.length > 0 && equal === verifications.length ? 'PASS' : 'FAIL'} snapshot images equal the volume at take: ${equal}/${verifications.length} checksums`;
  const text = [
    `NBD throughput, median of ${rounds_done} rounds (fio nbd engine, nbdcopy); snapshot columns: a fresh snapshot per workload, so writes are first touches`,
    '', throughputTable(input), '',
    'Write amplification of first touches: bytes copy-before-write copied ÷ bytes written (median; 0.00 where every chunk was cloned)',
    '', amplificationTable(input, [WORKLOADS.seq_write, WORKLOADS.rand_write, ...run.copy_units_bytes.map(strideWorkload)]), '',
    'Server processes: CPU seconds during each workload (median), peak RSS', '', resourceTable(input), '',
    'Goals: per-round ratios and their median', '', comparisonTable(verdicts), '',
    ...(cross_server === '' ? [] : [cross_server, '']),
    ...(client_stalls === '' ? [] : [client_stalls, '']),
    ...(take !== undefined ? [takeTable(take), ''] : []),
    `${subtitle}; ${Math.round(context.duration_s)} s.`,
    `Image checksums (sha256, nbdcopy of the image vs the volume file before take): ${equal}/${verifications.length} equal.`,
    ...(collected.qemu_copy_method === undefined ? [] : [`QEMU's copy-before-write on the XFS: ${qemuMethodLine(collected.qemu_copy_method)}.`]),
    ...errors.map((e) => `ERROR ${e.system} round ${e.round + 1}: ${e.error}`),
  ].join('\n');
  const json = {
    config: {
      image_bytes: run.image_bytes, rounds_max: run.rounds_max, rounds: rounds_done, budget_s: run.budget_s, rand_ios: run.rand_ios,
      copy_units_bytes: run.copy_units_bytes, quick: run.quick, systems: run.systems.map((s) => ({ id: s.id, label: s.label, kind: s.kind })),
    },
    tools: context.tools, machine, duration_s: context.duration_s, samples, usage, verifications, take, verdicts, errors,
    qemu_copy_method: collected.qemu_copy_method,
  };
  return { text, svg: chartSvg(input, subtitle), verdicts, json, goal_lines: [...verdicts.map(verdictLine), verification_line] };
}

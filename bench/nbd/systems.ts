// The systems under comparison and what one round of each does. Two kinds:
//
//   plain     one server for the round: seq read, seq write, rand write,
//             stride writes at every copy unit in play
//             (ublksnap without snapshot, nbdkit file, qemu-storage-daemon)
//   snapshot  a fresh snapshot per workload, so every write is a first touch:
//               1. ublksnap: the seq write with no snapshot, the anchor of
//                  the XFS goal; checksum the volume, take; image read (nothing copied);
//                  seq write over the whole volume; image read (all copied);
//                  the image's checksum must equal the one before take;
//                  then twice more: the write with no snapshot, take, the
//                  seq write (SEQ_FIRST_TOUCHES_PER_ROUND)
//               2. checksum, take; rand write; verify the image
//               3. checksum, take; one 4 KiB write per copy unit; verify
//             (ublksnap at its default chunk and at 64 KiB; QEMU fleecing,
//             where "take" is a fresh daemon with a fresh target)
//
// Every first-touch write step also records the bytes the system copied
// for it (ublksnap: chunks saved by copy × chunk size, from the snapshot's
// info; QEMU: the blocks its fresh target holds afterwards), for the write
// amplification beside the throughput.
//
// The XFS variants (`-xfs`, issue 15) run the same rounds with the volume
// and the diff storage (QEMU: the target) on an XFS with reflink=1 the
// suite made (RoundContext.xfs), where ublksnap clones chunks.
//
// Every measured step samples the server's CPU seconds before and after.

import { rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { QSD_IMAGE_EXPORT, QSD_VOLUME_EXPORT, nbdkitArgs, qsdFleecingArgs, qsdPlainArgs, unixUri } from './commands';
import { runFio, type FioJob } from './fio';
import type { Sample } from './goals';
import { fileChecksum } from './image';
import { exportChecksum, readExport } from './nbdcopy';
import { cpuByThreadName, type NamedCpu } from './proc';
import { ServerProcess, UblksnapServer, type ServerUsage, type UblksnapServerOptions } from './servers';
import { syncFilesystem } from '../xfs-mount';
import type { SnapshotInfo } from '../../src/engine/api';

const KiB = 1024;
const MiB = 1024 * KiB;
/** fio reports its CPU use in percent of one core. */
const PERCENT = 100;
export const SEQ_BLOCK_BYTES = MiB;
export const SEQ_IODEPTH = 16;
export const RANDOM_BLOCK_BYTES = 4 * KiB;
export const RANDOM_IODEPTH = 32;
/** QEMU's copy-before-write cluster: the like-for-like chunk size. */
export const QEMU_COPY_UNIT_BYTES = 64 * KiB;
export const UBLKSNAP_VOLUME_NAME = 'bench';
const CHUNK_SHIFT_64K = 16;
/** st_blocks counts units of this many bytes, whatever the filesystem's block. */
const STAT_BLOCK_BYTES = 512;
/** Label suffix of the systems that run on the suite's XFS. */
export const XFS_LABEL = ', XFS reflink';
/** How much of a failed server's stderr an error message carries. */
const SERVER_LOG_TAIL_CHARS = 800;
/** Untimed random writes after a server starts (fio I/Os of 4 KiB): about a second. */
const WARM_UP_RANDOM_IOS = 131_072;
/**
 * Sequential first touches per round on ublksnap's snapshot systems, each
 * after its own write before take and on its own snapshot: a round's ratio
 * is the median of its three pairs' ratios (or of each side, against
 * another system), so one stalled write (a burst of server CPU on tmpfs, a
 * stalled client) no longer decides that round (bench/README.md, "Three
 * first touches a round, judged in pairs").
 */
export const SEQ_FIRST_TOUCHES_PER_ROUND = 3;

export interface WorkloadSpec {
  id: string;
  label: string;
  unit: 'MiB/s' | 'IOPS';
}

export function strideWorkload(copy_unit_bytes: number): WorkloadSpec {
  const kib = copy_unit_bytes / KiB;
  return { id: `stride-${kib}k`, label: `4 KiB write per ${kib} KiB, QD${RANDOM_IODEPTH}`, unit: 'IOPS' };
}

export const WORKLOADS = {
  seq_read: { id: 'seq-read', label: 'seq read, nbdcopy → null:', unit: 'MiB/s' },
  seq_write: { id: 'seq-write', label: `seq write 1 MiB, QD${SEQ_IODEPTH}`, unit: 'MiB/s' },
  seq_write_before_take: { id: 'seq-write-before-take', label: `seq write 1 MiB, QD${SEQ_IODEPTH}, before take`, unit: 'MiB/s' },
  rand_write: { id: 'rand-write', label: `rand write 4 KiB, QD${RANDOM_IODEPTH}`, unit: 'IOPS' },
  image_read_before: { id: 'image-read-before', label: 'image read, nothing copied yet', unit: 'MiB/s' },
  image_read_after: { id: 'image-read-after', label: 'image read after full overwrite', unit: 'MiB/s' },
} as const satisfies Record<string, WorkloadSpec>;

export interface SampleRecord extends Sample {
  unit: WorkloadSpec['unit'];
  bytes: number;
  ios: number;
  seconds: number;
  clat_p50_us?: number;
  clat_p99_us?: number;
  /** GCs on the ublksnap server's main thread during the workload. */
  server_gc_count?: number;
  /** Of server_cpu_seconds, the time in the kernel (stime). */
  server_system_seconds?: number;
  /**
   * server_cpu_seconds by thread name (proc.ts cpuByThreadName): which of
   * ublksnap's actors, or which of another server's threads, burnt it.
   */
  server_cpu_by_thread?: Record<string, NamedCpu>;
  /** fio's CPU seconds (user and system) and the system part: a stalled client shows here. */
  client_cpu_seconds?: number;
  client_system_seconds?: number;
  /** CLOCK_MONOTONIC seconds at the workload's start and end, to find it in a perf or trace recording. */
  monotonic_start_s?: number;
  monotonic_end_s?: number;
  /** Snapshot systems' write steps: bytes copy-before-write copied (not cloned) for this workload. */
  copied_bytes?: number;
}

export interface Verification {
  system: string;
  round: number;
  workload: string;
  before: string;
  after: string;
  equal: boolean;
}

export interface RoundContext {
  round: number;
  image_path: string;
  image_bytes: number;
  /** Scratch space on /dev/shm: sockets, diff storage, QEMU targets. */
  work_dir: string;
  rand_write_bytes: number;
  /** The copy units of the snapshot systems; plain systems run a stride workload at each. */
  copy_units_bytes: number[];
  profile_dir?: string;
  log: (line: string) => void;
  record: (sample: SampleRecord) => void;
  verified: (verification: Verification) => void;
  usage: (system: string, usage: ServerUsage) => void;
  /** The XFS (reflink=1) the `-xfs` systems run on, with their own image; or why there is none. */
  xfs?: XfsSite | string;
  /** Settles the filesystem of an -xfs system (onXfs): syncfs writes its dirty pages back and finishes XFS's freeing of deleted files' extents. */
  settle?: () => void;
  /** Set for the paired writes (before take, first touch): which pair of the round (Sample.pair). */
  pair?: number;
}

export interface XfsSite {
  /** The mounted XFS: diff storages, QEMU targets and sockets of the -xfs systems. */
  dir: string;
  /** The -xfs systems' image (random data like the tmpfs one), on the XFS. */
  image_path: string;
}

/**
 * The context of an -xfs system: the same round, with image and scratch
 * space on the XFS, settled first. The systems share that XFS, and the one
 * before may leave work behind that the next would pay for: dirty pages to
 * write back (with XFS's copy-on-write remapping), and the extents of
 * destroyed storages, which XFS frees in the background. syncfs does both
 * (XFS flushes its background inode work in it), so every system starts on
 * a quiet filesystem. Within a system the same holds for every snapshot it
 * deletes (the warm-up's, each workload's): `settle` after the delete, or
 * the next workload's first touches share the two cores with XFS freeing
 * the old storage's extents (1 MiB seq writes unsettled: 0.93× settled;
 * bench/README.md, "Deleted storages settle").
 */
export function onXfs(context: RoundContext): RoundContext {
  const xfs = context.xfs;
  if (xfs === undefined) throw new Error('no XFS for the -xfs systems: the suite made none');
  if (typeof xfs === 'string') throw new Error(`no XFS for the -xfs systems: ${xfs}`);
  const settle = (): void => syncFilesystem(xfs.dir);
  settle();
  return { ...context, image_path: xfs.image_path, work_dir: xfs.dir, settle };
}

export interface SystemSpec {
  id: string;
  label: string;
  kind: 'plain' | 'snapshot';
  /** The snapshot systems' copy unit, in bytes. */
  copy_unit_bytes?: number;
  /** Runs on the suite's XFS with reflink (RoundContext.xfs). */
  on_xfs?: boolean;
  run: (context: RoundContext) => Promise<void>;
}

// ── measuring ───────────────────────────────────────────────────────────

export type Measured = Omit<SampleRecord, 'system' | 'workload' | 'round' | 'server_cpu_seconds' | 'unit' | 'server_gc_count'
  | 'server_system_seconds' | 'server_cpu_by_thread' | 'monotonic_start_s' | 'monotonic_end_s'>;

export async function measure(context: RoundContext, system: string, workload: WorkloadSpec, server: ServerProcess,
  body: () => Promise<Measured>): Promise<void> {
  const gc = server instanceof UblksnapServer ? server : undefined;
  const gc_before = gc ? await gc.gcCount() : 0;
  const cpu_before = server.cpu();
  const threads_before = server.threads();
  const monotonic_start_s = monotonicSeconds();
  const measured = await body();
  const monotonic_end_s = monotonicSeconds();
  const cpu_after = server.cpu();
  const by_thread = cpuByThreadName(server.pid, threads_before, server.threads());
  const server_cpu_seconds = cpu_after.seconds - cpu_before.seconds;
  const server_system_seconds = cpu_after.system_seconds - cpu_before.system_seconds;
  addEndedThreads(by_thread, server_cpu_seconds, server_system_seconds);
  const sample: SampleRecord = {
    system, workload: workload.id, round: context.round, unit: workload.unit, server_cpu_seconds, server_system_seconds,
    server_cpu_by_thread: by_thread, monotonic_start_s, monotonic_end_s, ...measured,
  };
  if (gc) sample.server_gc_count = (await gc.gcCount()) - gc_before;
  if (context.pair !== undefined) sample.pair = context.pair;
  context.record(sample);
  const shown = workload.unit === 'MiB/s' ? `${(sample.value / MiB).toFixed(0)} MiB/s` : `${sample.value.toFixed(0)} IOPS`;
  const client = sample.client_cpu_seconds === undefined ? ''
    : `, client CPU ${sample.client_cpu_seconds.toFixed(2)} s (system ${(sample.client_system_seconds ?? 0).toFixed(2)})`;
  context.log(`  ${system} ${workload.id}: ${shown} in ${sample.seconds.toFixed(2)} s, server CPU ${server_cpu_seconds.toFixed(2)} s `
    + `(system ${server_system_seconds.toFixed(2)}; ${busiestThreads(by_thread)})${client}`);
}

/** Below this many CPU seconds, what the live threads do not explain is /proc's rounding, not a thread. */
const ENDED_THREADS_SECONDS_MIN = 0.05;

/**
 * The CPU of threads that ended during the workload (nbdkit's threads of a
 * connection end with it), under "ended": what the whole process spent
 * beyond what its live threads account for.
 */
function addEndedThreads(by_thread: Record<string, NamedCpu>, seconds: number, system_seconds: number): void {
  const named = Object.values(by_thread);
  const unexplained = seconds - named.reduce((sum, cpu) => sum + cpu.seconds, 0);
  if (unexplained < ENDED_THREADS_SECONDS_MIN) return;
  const unexplained_system = system_seconds - named.reduce((sum, cpu) => sum + cpu.system_seconds, 0);
  by_thread.ended = { seconds: unexplained, system_seconds: Math.max(0, unexplained_system) };
}

/** How many thread names a sample's log line shows, busiest first. */
const THREAD_NAMES_SHOWN = 3;

/** "ublksnap-cow 0.62 (system 0.40), ublksnap-store 0.31 (…), main 0.10 (…)": the busiest thread names. */
function busiestThreads(by_thread: Record<string, NamedCpu>): string {
  return Object.entries(by_thread)
    .sort(([, a], [, b]) => b.seconds - a.seconds)
    .slice(0, THREAD_NAMES_SHOWN)
    .map(([name, cpu]) => `${name} ${cpu.seconds.toFixed(2)} (system ${cpu.system_seconds.toFixed(2)})`)
    .join(', ');
}

/** CLOCK_MONOTONIC in seconds (libuv's hrtime reads it), the clock `perf record -k CLOCK_MONOTONIC` stamps with. */
function monotonicSeconds(): number {
  return Number(process.hrtime.bigint()) / 1e9;
}

/** copied: for a first-touch step, the bytes the snapshot copied so far (each step has a fresh snapshot). */
function fioStep(context: RoundContext, system: string, workload: WorkloadSpec, server: ServerProcess, uri: string, job: FioJob,
  copied?: () => Promise<number>): Promise<void> {
  return measure(context, system, workload, server, async () => {
    const result = await runFio(uri, job, path.join(context.work_dir, `fio-${system}-${workload.id}.json`));
    return {
      value: workload.unit === 'MiB/s' ? result.bytes_per_second : result.iops,
      bytes: result.io_bytes, ios: result.ios, seconds: result.runtime_ms / 1000,
      clat_p50_us: result.clat_p50_us, clat_p99_us: result.clat_p99_us,
      client_cpu_seconds: (result.client_cpu_percent / PERCENT) * (result.runtime_ms / 1000),
      client_system_seconds: (result.client_system_percent / PERCENT) * (result.runtime_ms / 1000),
      ...(copied === undefined ? {} : { copied_bytes: await copied() }),
    };
  });
}

export function readStep(context: RoundContext, system: string, workload: WorkloadSpec, server: ServerProcess, uri: string): Promise<void> {
  return measure(context, system, workload, server, async () => {
    const result = await readExport(uri, context.image_bytes);
    return { value: result.bytes_per_second, bytes: result.bytes, ios: 0, seconds: result.seconds };
  });
}

export function seqWriteJob(size_bytes: number): FioJob {
  return { pattern: 'write', block_bytes: SEQ_BLOCK_BYTES, iodepth: SEQ_IODEPTH, size_bytes };
}

export function randWriteJob(size_bytes: number, io_bytes: number): FioJob {
  return { pattern: 'randwrite', block_bytes: RANDOM_BLOCK_BYTES, iodepth: RANDOM_IODEPTH, size_bytes, io_bytes };
}

/** One pass: fio counts io_size in bytes written (default: size), wrapping around, so it is set to one block per stride. */
export function strideJob(size_bytes: number, stride_bytes: number): FioJob {
  const io_bytes = (size_bytes / stride_bytes) * RANDOM_BLOCK_BYTES;
  return { pattern: 'stride', block_bytes: RANDOM_BLOCK_BYTES, iodepth: RANDOM_IODEPTH, size_bytes, stride_bytes, io_bytes };
}

// ── the two kinds of round ──────────────────────────────────────────────

/** The server's last words (ublksnap: the engine's warnings, e.g. why a snapshot broke) belong with a failed step. */
function withServerLog(error: unknown, server: ServerProcess): Error {
  const log = server.stderr.trim();
  const message = (error as Error).message;
  return new Error(log === '' ? message : `${message}; ${server.label} stderr: ${log.slice(-SERVER_LOG_TAIL_CHARS)}`);
}

/** Runs body; when it fails, the server is killed and the error carries its last words. */
async function killOnFailure<T>(server: ServerProcess, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    await server.kill();
    throw withServerLog(error, server);
  }
}

interface Started { server: ServerProcess; uri: string; }

/**
 * Untimed I/O right after a long-lived server starts — every system that
 * serves several workloads gets the same: a daemon in service is warm, and
 * a JIT-compiled server (ublksnap) otherwise pays its compilation and heap
 * sizing in whichever workload happens to come first. Workloads of half a
 * second (quick runs) measured the warm-up more than the server.
 */
async function warmUp(context: RoundContext, system: string, uri: string, image_uri?: string): Promise<void> {
  // More I/Os than the device has blocks: fio starts over when it covered them all.
  await runFio(uri, randWriteJob(context.image_bytes, WARM_UP_RANDOM_IOS * RANDOM_BLOCK_BYTES), path.join(context.work_dir, `fio-${system}-warm-up-rand.json`));
  await runFio(uri, seqWriteJob(context.image_bytes), path.join(context.work_dir, `fio-${system}-warm-up-seq.json`));
  await readExport(image_uri ?? uri, context.image_bytes);
}

/**
 * A plain round. On XFS every workload starts settled, as a snapshot
 * workload does: there take flushes the volume (and the suite settled the
 * filesystem after the last delete), so first touches dirty clean pages.
 * Unsettled, the no-snapshot writes would overwrite pages the warm-up or
 * the previous workload left dirty, which costs less (1 MiB writes onto
 * clean pages: 0.94× as fast; bench/README.md, "First touch against the
 * same server"), and the ratio would charge that to the snapshot.
 */
async function plainRound(context: RoundContext, system: string, start: () => Promise<Started>): Promise<void> {
  const { server, uri } = await start();
  const settled = <T>(step: () => Promise<T>): Promise<T> => {
    context.settle?.();
    return step();
  };
  await killOnFailure(server, async () => {
    await warmUp(context, system, uri);
    await settled(() => readStep(context, system, WORKLOADS.seq_read, server, uri));
    await settled(() => fioStep(context, system, WORKLOADS.seq_write, server, uri, seqWriteJob(context.image_bytes)));
    await settled(() => fioStep(context, system, WORKLOADS.rand_write, server, uri, randWriteJob(context.image_bytes, context.rand_write_bytes)));
    for (const unit of context.copy_units_bytes) {
      await settled(() => fioStep(context, system, strideWorkload(unit), server, uri, strideJob(context.image_bytes, unit)));
    }
  });
  context.usage(system, await server.stop());
}

/** One snapshot from take to destroy: the server that serves it, the two exports, and how it ends. */
interface Session {
  server: ServerProcess;
  volume_uri: string;
  image_uri: string;
  /** Bytes copy-before-write copied (not cloned) since take. */
  copiedBytes: () => Promise<number>;
  end: () => Promise<void>;
}

async function verifyImage(context: RoundContext, system: string, workload: string, session: Session, before: string): Promise<void> {
  const { checksum } = await exportChecksum(session.image_uri);
  context.verified({ system, round: context.round, workload, before, after: checksum, equal: checksum === before });
  if (checksum !== before) context.log(`  ${system} ${workload}: IMAGE CHECKSUM DIFFERS from the volume at take`);
}

/**
 * unsnapped: the long-lived server (ublksnap) and its volume, for the same
 * sequential write with no snapshot, measured just before the seq-write
 * step's take: the first touches' own anchor, paired in time and process
 * (bench/README.md, "First touch against the same server").
 */
async function snapshotRound(context: RoundContext, system: string, copy_unit_bytes: number, open: () => Promise<Session>,
  unsnapped?: Started): Promise<void> {
  // The write before take and the first touch after it are one pair (goals.ts takes the median of the pairs' ratios).
  const paired = (pair: number): RoundContext => (unsnapped === undefined ? context : { ...context, pair });
  const steps: { workload: string; body: (session: Session) => Promise<void> }[] = [
    {
      workload: WORKLOADS.seq_write.id,
      body: async (session) => {
        await readStep(context, system, WORKLOADS.image_read_before, session.server, session.image_uri);
        await fioStep(paired(0), system, WORKLOADS.seq_write, session.server, session.volume_uri, seqWriteJob(context.image_bytes), session.copiedBytes);
        await readStep(context, system, WORKLOADS.image_read_after, session.server, session.image_uri);
      },
    },
    {
      workload: WORKLOADS.rand_write.id,
      body: (session) => fioStep(context, system, WORKLOADS.rand_write, session.server, session.volume_uri,
        randWriteJob(context.image_bytes, context.rand_write_bytes), session.copiedBytes),
    },
    {
      workload: strideWorkload(copy_unit_bytes).id,
      body: (session) => fioStep(context, system, strideWorkload(copy_unit_bytes), session.server, session.volume_uri,
        strideJob(context.image_bytes, copy_unit_bytes), session.copiedBytes),
    },
  ];
  const writeBeforeTake = async (pair: number): Promise<void> => {
    if (unsnapped === undefined) return;
    // Settled before and after, as the first touches are: they write clean pages.
    await killOnFailure(unsnapped.server, () =>
      fioStep(paired(pair), system, WORKLOADS.seq_write_before_take, unsnapped.server, unsnapped.uri, seqWriteJob(context.image_bytes)));
    context.settle?.();
  };
  const inSession = async (body: (session: Session) => Promise<void>): Promise<void> => {
    const session = await open();
    await killOnFailure(session.server, () => body(session));
    await session.end();
    context.settle?.();
  };
  for (const step of steps) {
    const sequential = unsnapped !== undefined && step.workload === WORKLOADS.seq_write.id;
    if (sequential) await writeBeforeTake(0);
    // The volume is idle here: its file is what the image must show after take.
    const before = fileChecksum(context.image_path);
    await inSession(async (session) => {
      await step.body(session);
      await verifyImage(context, system, step.workload, session, before);
    });
    // The further pairs measure the two writes only: the first pair's image was verified.
    for (let pair = 1; sequential && pair < SEQ_FIRST_TOUCHES_PER_ROUND; pair += 1) {
      await writeBeforeTake(pair);
      await inSession((session) =>
        fioStep(paired(pair), system, WORKLOADS.seq_write, session.server, session.volume_uri, seqWriteJob(context.image_bytes), session.copiedBytes));
    }
  }
}

// ── the systems ─────────────────────────────────────────────────────────

function profileFlags(context: RoundContext, system: string): string[] {
  if (context.profile_dir === undefined) return [];
  return ['--cpu-prof', `--cpu-prof-dir=${path.join(context.profile_dir, `${system}-round${context.round}`)}`];
}

export function launchUblksnap(context: RoundContext, system: string, params: Record<string, number>, extra: Partial<UblksnapServerOptions> = {}): Promise<UblksnapServer> {
  return UblksnapServer.launch(system, {
    socket_path: path.join(context.work_dir, `${system}.sock`),
    storage_dir: context.work_dir,
    volumes: [{ name: UBLKSNAP_VOLUME_NAME, file: context.image_path }],
    params,
    node_flags: profileFlags(context, system),
    ...extra,
  });
}

export function ublksnapPlain(on_xfs = false): SystemSpec {
  const id = on_xfs ? 'ublksnap-xfs' : 'ublksnap';
  return {
    id, label: `ublksnap, no snapshot${on_xfs ? XFS_LABEL : ''}`, kind: 'plain', on_xfs,
    run: (round_context) => {
      const context = on_xfs ? onXfs(round_context) : round_context;
      return plainRound(context, id, async () => {
        const server = await launchUblksnap(context, id, {});
        return { server, uri: unixUri(server.socket_path, UBLKSNAP_VOLUME_NAME) };
      });
    },
  };
}

/** ublksnap with a fresh snapshot per workload; chunk_shift undefined = the engine's default geometry. */
export function ublksnapSnapshot(id: string, label: string, copy_unit_bytes: number, chunk_shift?: number, on_xfs = false): SystemSpec {
  const params: Record<string, number> = chunk_shift === undefined ? {} : { chunk_minimum_shift: chunk_shift };
  return {
    id, label, kind: 'snapshot', copy_unit_bytes, on_xfs,
    run: async (round_context) => {
      const context = on_xfs ? onXfs(round_context) : round_context;
      const server = await launchUblksnap(context, id, params);
      try {
        // Through a throwaway snapshot, so the copy-on-write and image paths are warm too.
        const warm = await server.take();
        await warmUp(context, id, unixUri(server.socket_path, UBLKSNAP_VOLUME_NAME), unixUri(server.socket_path, warm.images[UBLKSNAP_VOLUME_NAME]!));
        await server.destroy(warm.id);
        rmSync(warm.storage, { force: true });
        context.settle?.();
        const volume_uri = unixUri(server.socket_path, UBLKSNAP_VOLUME_NAME);
        await snapshotRound(context, id, copy_unit_bytes, async () => {
          const taken = await server.take();
          if (taken.chunk_bytes !== copy_unit_bytes) throw new Error(`${id}: chunk is ${taken.chunk_bytes} bytes, expected ${copy_unit_bytes}`);
          return {
            server,
            volume_uri,
            image_uri: unixUri(server.socket_path, taken.images[UBLKSNAP_VOLUME_NAME]!),
            copiedBytes: async () => {
              const area = ((await server.command(`info ${taken.id}`)).info as SnapshotInfo).chunks[0]!;
              return area.copied * area.chunk_bytes;
            },
            end: async () => {
              await server.destroy(taken.id);
              rmSync(taken.storage, { force: true });
            },
          };
        }, { server, uri: volume_uri });
      } catch (error) {
        await server.kill();
        throw error;
      }
      context.usage(id, await server.stop());
    },
  };
}

export function ublksnapSnapshot64k(on_xfs = false): SystemSpec {
  return ublksnapSnapshot(`ublksnap-snap-64k${on_xfs ? '-xfs' : ''}`, `ublksnap, snapshot, 64 KiB chunk${on_xfs ? XFS_LABEL : ''}`,
    QEMU_COPY_UNIT_BYTES, CHUNK_SHIFT_64K, on_xfs);
}

export function nbdkitFile(): SystemSpec {
  const id = 'nbdkit';
  return {
    id, label: 'nbdkit file plugin', kind: 'plain',
    run: (context) => plainRound(context, id, async () => {
      const socket_path = path.join(context.work_dir, `${id}.sock`);
      const server = await ServerProcess.start(id, 'nbdkit', nbdkitArgs(context.image_path, socket_path), socket_path);
      return { server, uri: unixUri(socket_path, '') };
    }),
  };
}

export function qsdPlain(): SystemSpec {
  const id = 'qsd';
  return {
    id, label: 'qemu-storage-daemon export', kind: 'plain',
    run: (context) => plainRound(context, id, async () => {
      const socket_path = path.join(context.work_dir, `${id}.sock`);
      const server = await ServerProcess.start(id, 'qemu-storage-daemon', qsdPlainArgs(context.image_path, socket_path), socket_path);
      return { server, uri: unixUri(socket_path, QSD_VOLUME_EXPORT) };
    }),
  };
}

/** Usage of several short-lived daemons as one: CPU adds up, the peak is the largest. */
function addUsage(total: ServerUsage | undefined, usage: ServerUsage): ServerUsage {
  if (total === undefined) return usage;
  return {
    cpu_seconds: total.cpu_seconds + usage.cpu_seconds,
    peak_rss_bytes: Math.max(total.peak_rss_bytes, usage.peak_rss_bytes),
    threads: [...total.threads, ...usage.threads],
  };
}

export function qsdFleecing(on_xfs = false): SystemSpec {
  const id = on_xfs ? 'qsd-fleece-xfs' : 'qsd-fleece';
  return {
    id, label: `qemu-storage-daemon fleecing${on_xfs ? XFS_LABEL : ''}`, kind: 'snapshot', copy_unit_bytes: QEMU_COPY_UNIT_BYTES, on_xfs,
    run: async (round_context) => {
      const context = on_xfs ? onXfs(round_context) : round_context;
      let total: ServerUsage | undefined;
      let session_index = 0;
      await snapshotRound(context, id, QEMU_COPY_UNIT_BYTES, async () => {
        const socket_path = path.join(context.work_dir, `${id}.sock`);
        const target_path = path.join(context.work_dir, `${id}-target-${session_index++}.raw`);
        writeFileSync(target_path, '');
        truncateSync(target_path, context.image_bytes); // sparse, like a fresh fallocate-less diff file
        const server = await ServerProcess.start(id, 'qemu-storage-daemon', qsdFleecingArgs(context.image_path, target_path, socket_path), socket_path);
        return {
          server,
          volume_uri: unixUri(socket_path, QSD_VOLUME_EXPORT),
          image_uri: unixUri(socket_path, QSD_IMAGE_EXPORT),
          // The target starts sparse and QEMU writes each cluster it saves: what it holds was
          // copied, unless QEMU cloned it with copy_file_range, which the suite's probe reports
          // for the XFS (qemu-copy-method.ts; QEMU 7.2 never did).
          copiedBytes: async () => statSync(target_path).blocks * STAT_BLOCK_BYTES,
          end: async () => {
            total = addUsage(total, await server.stop());
            rmSync(target_path, { force: true });
          },
        };
      });
      context.usage(id, total!);
    },
  };
}

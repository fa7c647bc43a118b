// fio's nbd engine as the write load: the job of each workload as
// command-line options, and the figures we keep from fio's JSON output.
//
// Design notes
// - One job, one NBD connection, `iodepth` requests in flight: what a guest
//   or a backup agent on one connection does. fio's fixed random seed gives
//   every system the same offsets in the same order.
// - A stride job is fio's `rw=write:SKIP`: a write of `bs`, then a hole of
//   SKIP bytes. With stride = the copy unit every write lands in a new unit:
//   the worst case for a copy-on-write server, each 4 KiB write costs a
//   whole chunk copied.
// - fio prints "fio: connected to NBD server" on stdout before the JSON;
//   `--output=FILE` keeps the JSON clean, and the parser skips to the first
//   "{" anyway.

import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';

export interface FioJob {
  /** rw=write, randwrite, or write with a hole after each block (stride). */
  pattern: 'write' | 'randwrite' | 'stride';
  block_bytes: number;
  iodepth: number;
  /** The region the job covers: the whole device. */
  size_bytes: number;
  /** randwrite: bytes to write (I/Os × block); default the whole region. */
  io_bytes?: number;
  /** stride: the distance between the starts of two writes. */
  stride_bytes?: number;
}

export interface FioResult {
  io_bytes: number;
  ios: number;
  runtime_ms: number;
  bytes_per_second: number;
  iops: number;
  clat_p50_us: number;
  clat_p99_us: number;
  /** fio's own CPU use, percent of one core over the job's run time… */
  client_cpu_percent: number;
  /** …and the part of it in the kernel. */
  client_system_percent: number;
}

/** A stuck server must not hang the harness: a whole-device job takes seconds, never this long. */
export const FIO_TIMEOUT_MS = 300_000;
const NS_PER_US = 1000;

export function fioArgs(uri: string, job: FioJob, output_file: string): string[] {
  if (job.block_bytes <= 0 || job.size_bytes % job.block_bytes !== 0) throw new Error(`fio job: size ${job.size_bytes} is not a multiple of the block ${job.block_bytes}`);
  const args = [
    '--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--bs=${job.block_bytes}`, `--iodepth=${job.iodepth}`,
    `--size=${job.size_bytes}`, '--output-format=json', `--output=${output_file}`,
  ];
  if (job.pattern === 'stride') {
    const stride = job.stride_bytes ?? 0;
    if (stride <= job.block_bytes) throw new Error(`fio stride job: stride ${stride} must exceed the block ${job.block_bytes}`);
    args.push(`--rw=write:${stride - job.block_bytes}`);
  } else {
    args.push(`--rw=${job.pattern}`);
  }
  if (job.io_bytes !== undefined) args.push(`--io_size=${job.io_bytes}`);
  return args;
}

/** I/Os the job must do: io_bytes (default: the whole region) in blocks. */
export function expectedIos(job: FioJob): number {
  return (job.io_bytes ?? job.size_bytes) / job.block_bytes;
}

/** The figures of the one job's write side (or read side) in fio's JSON output. */
export function parseFioJson(text: string, side: 'read' | 'write' = 'write'): FioResult {
  const start = text.indexOf('{');
  if (start < 0) throw new Error(`fio printed no JSON: ${text.slice(0, 200)}`);
  const report = JSON.parse(text.slice(start)) as { jobs?: Record<string, unknown>[] };
  const job = report.jobs?.[0];
  if (job === undefined) throw new Error('fio JSON has no jobs');
  if (job.error !== 0) throw new Error(`fio job failed with error ${String(job.error)}`);
  const figures = job[side] as {
    io_bytes: number; total_ios: number; runtime: number; bw_bytes: number; iops: number;
    clat_ns?: { percentile?: Record<string, number> };
  } | undefined;
  if (figures === undefined || figures.io_bytes === 0) throw new Error(`fio job did no ${side}s`);
  const percentile = figures.clat_ns?.percentile ?? {};
  return {
    io_bytes: figures.io_bytes,
    ios: figures.total_ios,
    runtime_ms: figures.runtime,
    bytes_per_second: figures.bw_bytes,
    iops: figures.iops,
    clat_p50_us: (percentile['50.000000'] ?? 0) / NS_PER_US,
    clat_p99_us: (percentile['99.000000'] ?? 0) / NS_PER_US,
    client_cpu_percent: Number(job.usr_cpu ?? 0) + Number(job.sys_cpu ?? 0),
    client_system_percent: Number(job.sys_cpu ?? 0),
  };
}

/** Runs one fio job against the export at uri; rejects on any error, with fio's own words. */
export function runFio(uri: string, job: FioJob, output_file: string): Promise<FioResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('fio', fioArgs(uri, job, output_file), { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), FIO_TIMEOUT_MS);
    child.on('error', (error) => { clearTimeout(timer); reject(error); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      try {
        if (code !== 0) throw new Error(`fio exited with ${signal ?? code}: ${output.trim().slice(-500)}`);
        const result = parseFioJson(readFileSync(output_file, 'utf8'));
        // A job that did more or fewer I/Os than asked measures something else (fio wraps around, or stopped early).
        if (result.ios !== expectedIos(job)) throw new Error(`fio did ${result.ios} I/Os, the job asks for ${expectedIos(job)}`);
        resolve(result);
      } catch (error) {
        reject(error);
      } finally {
        rmSync(output_file, { force: true });
      }
    });
  });
}

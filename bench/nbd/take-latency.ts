// Snapshot take latency with four volumes under write load (ublksnap only;
// QEMU has no coherent multi-volume take to compare with).
//
// One ublksnap server with four volumes; one fio process writes 4 KiB at
// random to all four exports (one job and one connection each) for the
// whole step; meanwhile the harness creates and takes a snapshot of the
// four, holds it a moment (the writes now copy on write), destroys it, and
// again. Take must quiesce the four volumes, drain their writes in flight,
// switch the CBT maps and arm copy-on-write: docs/design.md §3 wants milliseconds.
// fio must finish without one failed write.

import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { unixUri } from './commands';
import { FIO_TIMEOUT_MS } from './fio';
import { fillRandom } from './image';
import { UblksnapServer, type ServerUsage } from './servers';
import { median } from '../lib';

export const TAKE_VOLUME_COUNT = 4;
const LOAD_IODEPTH = 8;
const LOAD_BLOCK_BYTES = 4096;
/** fio runs this long before the first take, so the takes meet a steady load. */
const LOAD_RAMP_MS = 1000;
/** How long each snapshot lives (writes copy on write meanwhile) and the pause before the next take. */
const HOLD_MS = 300;

export interface TakeLatencyResult {
  volume_count: number;
  volume_bytes: number;
  take_ms: number[];
  /** take as the harness saw it: command sent to reply read (includes create). */
  round_trip_ms: number[];
  destroy_ms: number[];
  median_take_ms: number;
  max_take_ms: number;
  load_iops: number;
  usage: ServerUsage;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** fio's multi-job command line: global options first, then one --name/--uri per export. */
export function loadArgs(uris: string[], volume_bytes: number, runtime_s: number): string[] {
  return [
    '--ioengine=nbd', '--rw=randwrite', `--bs=${LOAD_BLOCK_BYTES}`, `--iodepth=${LOAD_IODEPTH}`, `--size=${volume_bytes}`,
    '--time_based', `--runtime=${runtime_s}`, '--norandommap', '--group_reporting', '--output-format=json',
    ...uris.flatMap((uri, index) => [`--name=volume${index}`, `--uri=${uri}`]),
  ];
}

function runLoad(args: string[]): { done: Promise<number> } {
  const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  const timer = setTimeout(() => child.kill('SIGKILL'), FIO_TIMEOUT_MS);
  const done = new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) { reject(new Error(`fio load exited with ${signal ?? code}: ${output.trim().slice(-500)}`)); return; }
      const report = JSON.parse(output.slice(output.indexOf('{'))) as { jobs: { error: number; write: { iops: number } }[] };
      const failed = report.jobs.find((job) => job.error !== 0);
      if (failed !== undefined) { reject(new Error(`fio load: a volume write failed (error ${failed.error})`)); return; }
      resolve(report.jobs.reduce((sum, job) => sum + job.write.iops, 0));
    });
  });
  return { done };
}

export async function measureTakeLatency(options: {
  work_dir: string; volume_bytes: number; takes: number; log: (line: string) => void; node_flags?: string[];
}): Promise<TakeLatencyResult> {
  const volumes = Array.from({ length: TAKE_VOLUME_COUNT }, (_, index) => ({ name: `take${index}`, file: path.join(options.work_dir, `take${index}.img`) }));
  for (const volume of volumes) fillRandom(volume.file, options.volume_bytes);
  const server = await UblksnapServer.launch('ublksnap-take', {
    socket_path: path.join(options.work_dir, 'take.sock'), storage_dir: options.work_dir, volumes, node_flags: options.node_flags,
  });
  const take_ms: number[] = [];
  const round_trip_ms: number[] = [];
  const destroy_ms: number[] = [];
  try {
    const runtime_s = Math.ceil((LOAD_RAMP_MS + options.takes * 2 * HOLD_MS) / 1000) + 2;
    const load = runLoad(loadArgs(volumes.map((v) => unixUri(server.socket_path, v.name)), options.volume_bytes, runtime_s));
    await delay(LOAD_RAMP_MS);
    for (let index = 0; index < options.takes; index += 1) {
      const started = process.hrtime.bigint();
      const taken = await server.take();
      round_trip_ms.push(Number(process.hrtime.bigint() - started) / 1e6);
      take_ms.push(taken.take_ms);
      await delay(HOLD_MS);
      destroy_ms.push(await server.destroy(taken.id));
      rmSync(taken.storage, { force: true });
      await delay(HOLD_MS);
    }
    const load_iops = await load.done;
    const usage = await server.stop();
    const result = {
      volume_count: TAKE_VOLUME_COUNT, volume_bytes: options.volume_bytes, take_ms, round_trip_ms, destroy_ms,
      median_take_ms: median(take_ms), max_take_ms: Math.max(...take_ms), load_iops, usage,
    };
    options.log(`  take of ${TAKE_VOLUME_COUNT} volumes under load: median ${result.median_take_ms.toFixed(1)} ms, max ${result.max_take_ms.toFixed(1)} ms`);
    return result;
  } catch (error) {
    await server.kill();
    throw error;
  }
}

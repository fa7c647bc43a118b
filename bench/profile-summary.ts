// Reads the V8 CPU profiles that `npm run bench -- --profile` makes (node
// --cpu-prof on ublksnap's server processes: one .cpuprofile per thread,
// main and workers) and prints, per profile, where the time went: the
// functions with the most self time, and the same summed per source file.
//
//   node dist/bench/profile-summary.js DIR [--top=N]
//
// Self time is what a function spent in itself, not in its callees;
// "(idle)" is a thread waiting in the event loop, "(garbage collector)"
// is GC, "(program)" is V8 and native code outside JavaScript (syscalls
// made through libuv show up under the JavaScript function that made them,
// e.g. writeSync).
//
// Caveats: samples are wall-clock slices of a thread's own execution, so a
// thread blocked in Atomics.wait (piscina's atomicsWaitLoop, the ring's
// sleep) shows that function as busy — those are counted as waiting here.
// And a thread descheduled right after a syscall (a futex wake that lets
// the woken thread run on a two-core machine) charges the gap to that
// call. /proc's per-thread CPU seconds (in the results JSON) are the truth
// for CPU; the profile says where within a thread.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { table } from './lib';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const TOP_DEFAULT = 20;
/** Functions whose self time is a thread blocked in Atomics.wait, not CPU. */
const WAITING_FUNCTIONS = new Set(['(idle)', 'atomicsWaitLoop', 'sleep']);
const US_PER_MS = 1000;

export interface SelfTime {
  name: string;
  file: string;
  ms: number;
}

function shortUrl(url: string): string {
  if (url === '') return '';
  const marker = url.lastIndexOf('/dist/');
  if (marker >= 0) return url.slice(marker + '/dist/'.length);
  return url.replace(/^file:\/\//, '').replace(/^.*\/node_modules\//, 'node_modules/');
}

/** Self time per function (ms), from the samples and their time deltas; sorted, largest first. */
export function selfTimes(profile: CpuProfile): { total_ms: number; functions: SelfTime[] } {
  const by_id = new Map(profile.nodes.map((node) => [node.id, node]));
  const ms_by_key = new Map<string, SelfTime>();
  let total_us = 0;
  profile.samples.forEach((id, index) => {
    // timeDeltas[i] is the time since the previous sample: charge it to sample i.
    const delta_us = profile.timeDeltas[index] ?? 0;
    total_us += delta_us;
    const frame = by_id.get(id)?.callFrame;
    if (frame === undefined) return;
    const file = shortUrl(frame.url);
    const name = frame.functionName || '(anonymous)';
    const key = `${name}\u0000${file}:${frame.lineNumber + 1}`;
    const entry = ms_by_key.get(key) ?? { name, file: file === '' ? '' : `${file}:${frame.lineNumber + 1}`, ms: 0 };
    entry.ms += delta_us / US_PER_MS;
    ms_by_key.set(key, entry);
  });
  return { total_ms: total_us / US_PER_MS, functions: [...ms_by_key.values()].sort((a, b) => b.ms - a.ms) };
}

function findProfiles(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) found.push(...findProfiles(full));
    else if (entry.endsWith('.cpuprofile')) found.push(full);
  }
  return found;
}

function main(): void {
  const { values, positionals } = parseArgs({ options: { top: { type: 'string' } }, allowPositionals: true });
  const top = values.top === undefined ? TOP_DEFAULT : Number(values.top);
  if (positionals.length !== 1 || !Number.isInteger(top) || top < 1) {
    throw new Error('usage: node dist/bench/profile-summary.js DIR [--top=N]');
  }
  const profiles = findProfiles(positionals[0]!);
  if (profiles.length === 0) throw new Error(`no .cpuprofile files under ${positionals[0]}`);
  for (const file of profiles) {
    const { total_ms, functions } = selfTimes(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
    const busy = functions.filter((f) => !WAITING_FUNCTIONS.has(f.name));
    const busy_ms = busy.reduce((sum, f) => sum + f.ms, 0);
    console.log(`\n## ${path.relative(process.cwd(), file)}: ${(total_ms / 1000).toFixed(1)} s profiled, ${(busy_ms / 1000).toFixed(2)} s not idle or waiting\n`);
    const share = (ms: number): string => `${((100 * ms) / Math.max(busy_ms, 1)).toFixed(1)}%`;
    console.log(table(['function (self time)', 'where', 'ms', 'of busy'],
      busy.slice(0, top).map((f) => [f.name, f.file, f.ms.toFixed(0), share(f.ms)])));
    const by_file = new Map<string, number>();
    for (const f of busy) {
      const key = f.file === '' ? f.name : f.file.slice(0, f.file.lastIndexOf(':'));
      by_file.set(key, (by_file.get(key) ?? 0) + f.ms);
    }
    console.log('');
    console.log(table(['file (self time)', 'ms', 'of busy'],
      [...by_file.entries()].sort((a, b) => b[1] - a[1]).slice(0, Math.ceil(top / 2)).map(([name, ms]) => [name, ms.toFixed(0), share(ms)])));
  }
}

if (require.main === module) {
  try {
    main();
  } catch (error) {
    console.error(`profile-summary: ${(error as Error).message}`);
    process.exit(1);
  }
}

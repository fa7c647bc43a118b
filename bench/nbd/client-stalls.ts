// How often fio itself stalled: a sequential write whose client spent far
// more time in the kernel than the usual 0.2 s per GiB. On the bench's VM
// fio's copy into the Unix socket turns slow at times (bench/README.md,
// "Whose CPU a first touch spends"), with the server at its usual CPU, and
// more often during first touches than during writes with no snapshot. The
// report prints the counts beside the goals, so that a ratio moved by the
// client is seen as such.

import type { SampleRecord } from './systems';

const GIB = 1024 ** 3;
/** fio's system time per GiB written above which a write counts as a client stall (usual: 0.16-0.23 s). */
export const CLIENT_STALL_SYSTEM_SECONDS_PER_GIB = 0.5;

interface Group {
  label: string;
  workload: string;
  kind?: 'plain' | 'snapshot';
}

const GROUPS: Group[] = [
  { label: 'seq writes with no snapshot', workload: 'seq-write', kind: 'plain' },
  { label: 'writes before take', workload: 'seq-write-before-take' },
  { label: 'seq first touches', workload: 'seq-write', kind: 'snapshot' },
];

export function isClientStall(sample: SampleRecord): boolean {
  if (sample.client_system_seconds === undefined || sample.bytes <= 0) return false;
  return sample.client_system_seconds / (sample.bytes / GIB) > CLIENT_STALL_SYSTEM_SECONDS_PER_GIB;
}

/** "Client stalls (…): seq writes with no snapshot 1 of 24, …"; empty when no sample says what fio spent. */
export function clientStallLine(samples: SampleRecord[], kinds: ReadonlyMap<string, 'plain' | 'snapshot'>): string {
  const parts: string[] = [];
  for (const group of GROUPS) {
    const members = samples.filter((s) => s.workload === group.workload && s.client_system_seconds !== undefined
      && (group.kind === undefined || kinds.get(s.system) === group.kind));
    if (members.length > 0) parts.push(`${group.label} ${members.filter(isClientStall).length} of ${members.length}`);
  }
  if (parts.length === 0) return '';
  return `Client stalls (fio over ${CLIENT_STALL_SYSTEM_SECONDS_PER_GIB} s of system time per GiB written): ${parts.join(', ')}.`;
}

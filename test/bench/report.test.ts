// Goal: the report a person reads is well formed — Markdown tables with one
// row per workload and one column per system, "—" where a system does not
// run a workload, and an SVG that is one well-formed document with every
// label escaped.
// Method: a hand-made result of two systems and two workloads.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { verdicts } from '../../bench/nbd/goals';
import { amplificationTable, chartSvg, formatValue, resourceTable, throughputTable, type ReportInput } from '../../bench/nbd/report';
import type { SampleRecord } from '../../bench/nbd/systems';

const MiB = 1024 * 1024;

function sample(system: string, workload: string, round: number, value: number, unit: SampleRecord['unit']): SampleRecord {
  return { system, workload, round, value, unit, server_cpu_seconds: 0.5, bytes: 0, ios: 0, seconds: 1 };
}

const samples = [
  sample('a', 'seq', 0, 500 * MiB, 'MiB/s'), sample('b', 'seq', 0, 1000 * MiB, 'MiB/s'),
  sample('a', 'seq', 1, 700 * MiB, 'MiB/s'), sample('b', 'seq', 1, 1000 * MiB, 'MiB/s'),
  sample('a', 'rand', 0, 20_000, 'IOPS'),
];
const input: ReportInput = {
  systems: [{ id: 'a', label: 'ours <fast> & co' }, { id: 'b', label: 'theirs' }],
  workloads: [{ id: 'seq', label: 'seq', unit: 'MiB/s' }, { id: 'rand', label: 'rand', unit: 'IOPS' }],
  samples,
  usage: [{ system: 'a', round: 0, usage: { cpu_seconds: 1, peak_rss_bytes: 100 * MiB, threads: [] } }],
  verdicts: verdicts(samples, [{ goal: 'a ≥ 0.8× b', label: 'seq', target: 0.8, numerator: { system: 'a', workload: 'seq' }, denominator: { system: 'b', workload: 'seq' } }]),
};

const report = suite('report');

report('values: MiB/s for sequential workloads, k IOPS for 4 KiB ones, — when missing', () => {
  assert.is(formatValue(600 * MiB, 'MiB/s'), '600 MiB/s');
  assert.is(formatValue(23_456, 'IOPS'), '23.5 k IOPS');
  assert.is(formatValue(Number.NaN, 'IOPS'), '—');
});

report('throughput table: medians, one row per workload, one column per system', () => {
  const lines = throughputTable(input).split('\n');
  assert.is(lines.length, 4);
  assert.match(lines[0]!, /ours <fast> & co/);
  assert.match(lines[2]!, /\| seq +\| 600 MiB\/s +\| 1000 MiB\/s/);
  assert.match(lines[3]!, /\| rand +\| 20\.0 k IOPS +\| — /);
  assert.match(resourceTable(input), /100 MiB/);
});

report('write amplification: bytes copied ÷ bytes written per snapshot system, median over rounds, — where not measured', () => {
  const written = (system: string, round: number, bytes: number, copied_bytes: number): SampleRecord =>
    ({ ...sample(system, 'seq', round, 100 * MiB, 'MiB/s'), bytes, copied_bytes });
  const amp_input: ReportInput = {
    ...input,
    samples: [written('a', 0, 100, 0), written('a', 1, 100, 0), written('b', 0, 100, 100), written('b', 1, 100, 300), sample('c', 'seq', 0, 1, 'MiB/s')],
    systems: [...input.systems, { id: 'c', label: 'plain' }],
  };
  const lines = amplificationTable(amp_input, input.workloads).split('\n');
  assert.not.match(lines[0]!, /plain/, 'a system that copies nothing before writes has no column');
  assert.match(lines[2]!, /\| seq +\| 0\.00 +\| 2\.00 +\|/);
  assert.match(lines[3]!, /\| rand +\| — +\| — +\|/);
});

report('chart: one well-formed SVG, labels escaped, the verdict shown', () => {
  const svg = chartSvg(input, 'subtitle <x>');
  assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  assert.ok(svg.trimEnd().endsWith('</svg>'));
  assert.not.match(svg, /<fast>/);
  assert.match(svg, /ours &lt;fast&gt; &amp; co/);
  assert.match(svg, /FAIL a ≥ 0\.8× b/); // median of 0.5 and 0.7 is 0.6
  const opened = (svg.match(/<text /g) ?? []).length;
  assert.is(opened, (svg.match(/<\/text>/g) ?? []).length);
});

report.run();

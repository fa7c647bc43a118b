// What a person reads: Markdown tables for stdout and the README, and an
// SVG chart written by hand (no dependencies) — goal ratios against their
// targets on top, throughput per workload below.

import { median, table } from '../lib';
import type { ComparisonResult, GoalVerdict } from './goals';
import type { SampleRecord, SystemSpec, WorkloadSpec } from './systems';
import type { ServerUsage } from './servers';
import type { TakeLatencyResult } from './take-latency';

const MiB = 1024 * 1024;

export interface ReportInput {
  systems: Pick<SystemSpec, 'id' | 'label'>[];
  workloads: WorkloadSpec[];
  samples: SampleRecord[];
  usage: { system: string; round: number; usage: ServerUsage }[];
  verdicts: GoalVerdict[];
  take?: TakeLatencyResult;
}

export function formatValue(value: number, unit: WorkloadSpec['unit']): string {
  if (Number.isNaN(value)) return '—';
  return unit === 'MiB/s' ? `${(value / MiB).toFixed(0)} MiB/s` : `${(value / 1000).toFixed(1)} k IOPS`;
}

/** Median over rounds of one system's figure on one workload (NaN when never measured). */
export function medianValue(samples: SampleRecord[], system: string, workload: string, pick: (s: SampleRecord) => number = (s) => s.value): number {
  const values = samples.filter((s) => s.system === system && s.workload === workload).map(pick);
  return values.length > 0 ? median(values) : Number.NaN;
}

export function throughputTable(input: ReportInput): string {
  const rows = input.workloads.map((w) => [w.label, ...input.systems.map((s) => formatValue(medianValue(input.samples, s.id, w.id), w.unit))]);
  return table(['workload (median)', ...input.systems.map((s) => s.label)], rows);
}

/**
 * Per first-touch write workload and snapshot system: the median over rounds
 * of bytes copied ÷ bytes written ("—" where not measured). A 4 KiB write
 * that copies a 64 KiB unit shows 16.00; a cloned chunk counts nothing.
 */
export function amplificationTable(input: ReportInput, write_workloads: WorkloadSpec[]): string {
  const snapshot_systems = input.systems.filter((s) => input.samples.some((sample) => sample.system === s.id && sample.copied_bytes !== undefined));
  const rows = write_workloads.map((w) => [w.label, ...snapshot_systems.map((s) => {
    const value = medianValue(input.samples, s.id, w.id, (sample) =>
      (sample.copied_bytes === undefined || sample.bytes <= 0 ? Number.NaN : sample.copied_bytes / sample.bytes));
    return Number.isNaN(value) ? '—' : value.toFixed(2);
  })]);
  return table(['bytes copied ÷ bytes written (median)', ...snapshot_systems.map((s) => s.label)], rows);
}

export function resourceTable(input: ReportInput): string {
  const cpu = input.workloads.map((w) => [w.label, ...input.systems.map((s) => {
    const value = medianValue(input.samples, s.id, w.id, (sample) => sample.server_cpu_seconds);
    if (Number.isNaN(value)) return '—';
    // ublksnap's server counts the GCs of its main thread (the NBD frontend); the others have no GC.
    const gcs = medianValue(input.samples, s.id, w.id, (sample) => sample.server_gc_count ?? Number.NaN);
    return Number.isNaN(gcs) ? value.toFixed(2) : `${value.toFixed(2)} (${gcs.toFixed(0)} GC)`;
  })]);
  const peak = ['peak RSS of the server (max over rounds)', ...input.systems.map((s) => {
    const peaks = input.usage.filter((u) => u.system === s.id).map((u) => u.usage.peak_rss_bytes);
    return peaks.length > 0 ? `${(Math.max(...peaks) / MiB).toFixed(0)} MiB` : '—';
  })];
  return table(['server CPU seconds per workload (median)', ...input.systems.map((s) => s.label)], [...cpu, peak]);
}

export function comparisonTable(verdicts: GoalVerdict[]): string {
  const rows = verdicts.flatMap((v) => v.comparisons.map((c: ComparisonResult) => [
    v.goal, c.label, c.ratios.map((r) => r.toFixed(2)).join(' '), Number.isNaN(c.median) ? 'n/a' : `${c.median.toFixed(2)}×`,
    `${c.target}×`, c.pass ? 'pass' : 'FAIL',
  ]));
  return table(['goal', 'compared', 'per-round ratios', 'median', 'target', ''], rows);
}

export function takeTable(take: TakeLatencyResult): string {
  const ms = (values: number[]): string =>
    (values.length > 0 ? `${median(values).toFixed(1)} / ${Math.max(...values).toFixed(1)}` : '—');
  return table(['snapshot of 4 volumes under 4 KiB random writes', 'median / max'], [
    ['take (engine: from created to taken), ms', ms(take.take_ms)],
    ['take command round trip (create + take), ms', ms(take.round_trip_ms)],
    ['destroy, ms', ms(take.destroy_ms)],
    ['writes during the step (all 4 volumes), IOPS', take.load_iops.toFixed(0)],
  ]);
}

// ── SVG ─────────────────────────────────────────────────────────────────

const CHART_WIDTH = 960;
const LABEL_WIDTH = 330;
const BAR_HEIGHT = 16;
const BAR_GAP = 4;
const GROUP_GAP = 14;
const MARGIN = 16;
const TITLE_HEIGHT = 28;
const VALUE_WIDTH = 110;
const LEGEND_SWATCH_WIDTH = 16;
/** Average glyph width of 12 px sans-serif: enough to keep legend entries apart. */
const LEGEND_CHAR_WIDTH = 6.6;
const LEGEND_GAP = 18;
const LEGEND_ROW_HEIGHT = 18;
const SYSTEM_COLOURS = ['#1f77b4', '#2ca02c', '#17becf', '#ff7f0e', '#9467bd', '#d62728', '#8c564b'];

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function text(x: number, y: number, content: string, attributes = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attributes}>${escapeXml(content)}</text>`;
}

/** Ratios against targets (one bar per comparison), then throughput bars per workload scaled to the fastest system. */
export function chartSvg(input: ReportInput, subtitle: string): string {
  const parts: string[] = [];
  const plot_width = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH - 2 * MARGIN;
  let y = MARGIN;
  parts.push(text(MARGIN, y + 14, 'ublksnap vs nbdkit and QEMU over NBD — goal ratios (median of per-round ratios)', 'font-weight="bold" font-size="15"'));
  parts.push(text(MARGIN, y + 30, subtitle, 'font-size="11" fill="#555"'));
  y += TITLE_HEIGHT + 14;
  const comparisons = input.verdicts.flatMap((v) => v.comparisons);
  const ratio_max = Math.max(3, ...comparisons.map((c) => (Number.isNaN(c.median) ? 0 : c.median))) * 1.05;
  const x_of = (ratio: number): number => LABEL_WIDTH + (ratio / ratio_max) * plot_width;
  const goals_top = y;
  for (const verdict of input.verdicts) {
    parts.push(text(MARGIN, y + 12, `${verdict.pass ? 'PASS' : 'FAIL'} ${verdict.goal}`, `font-weight="bold" fill="${verdict.pass ? '#2a7d2a' : '#b22222'}"`));
    y += BAR_HEIGHT + BAR_GAP;
    for (const c of verdict.comparisons) {
      const ratio = Number.isNaN(c.median) ? 0 : c.median;
      parts.push(text(LABEL_WIDTH - 6, y + 12, c.label, 'text-anchor="end"'));
      parts.push(`<rect x="${LABEL_WIDTH}" y="${y}" width="${(x_of(ratio) - LABEL_WIDTH).toFixed(1)}" height="${BAR_HEIGHT}" fill="${c.pass ? '#6fbf6f' : '#e07070'}"/>`);
      parts.push(`<line x1="${x_of(c.target).toFixed(1)}" x2="${x_of(c.target).toFixed(1)}" y1="${y - 2}" y2="${y + BAR_HEIGHT + 2}" stroke="#000" stroke-width="2"/>`);
      // The value goes right of both the bar and the target mark, so neither hides it.
      parts.push(text(Math.max(x_of(ratio), x_of(c.target)) + 6, y + 12, Number.isNaN(c.median) ? 'n/a' : `${c.median.toFixed(2)}×  (target ${c.target}×)`));
      y += BAR_HEIGHT + BAR_GAP;
    }
    y += GROUP_GAP / 2;
  }
  parts.push(`<line x1="${x_of(1).toFixed(1)}" x2="${x_of(1).toFixed(1)}" y1="${goals_top}" y2="${y}" stroke="#999" stroke-dasharray="3,3"/>`);
  parts.push(text(x_of(1), y + 12, '1×', 'text-anchor="middle" fill="#777"'));
  y += GROUP_GAP + 14;

  parts.push(text(MARGIN, y + 14, 'Throughput per workload (median; bars scaled to the fastest system of each workload)', 'font-weight="bold" font-size="15"'));
  y += TITLE_HEIGHT;
  // Legend entries flow left to right and wrap; widths estimated from the label length.
  let legend_x = MARGIN;
  input.systems.forEach((system, index) => {
    const width = LEGEND_SWATCH_WIDTH + system.label.length * LEGEND_CHAR_WIDTH + LEGEND_GAP;
    if (legend_x + width > CHART_WIDTH - MARGIN && legend_x > MARGIN) {
      legend_x = MARGIN;
      y += LEGEND_ROW_HEIGHT;
    }
    parts.push(`<rect x="${legend_x}" y="${y}" width="12" height="12" fill="${SYSTEM_COLOURS[index % SYSTEM_COLOURS.length]}"/>`);
    parts.push(text(legend_x + LEGEND_SWATCH_WIDTH, y + 11, system.label));
    legend_x += width;
  });
  y += LEGEND_ROW_HEIGHT + 8;
  for (const workload of input.workloads) {
    const values = input.systems.map((s) => medianValue(input.samples, s.id, workload.id));
    const best = Math.max(...values.filter((v) => !Number.isNaN(v)));
    if (!Number.isFinite(best) || best <= 0) continue;
    parts.push(text(MARGIN, y + 12, workload.label, 'font-weight="bold"'));
    y += BAR_HEIGHT + BAR_GAP;
    input.systems.forEach((system, index) => {
      const value = values[index]!;
      if (Number.isNaN(value)) return;
      parts.push(text(LABEL_WIDTH - 6, y + 12, system.label, 'text-anchor="end"'));
      const width = (value / best) * plot_width;
      parts.push(`<rect x="${LABEL_WIDTH}" y="${y}" width="${width.toFixed(1)}" height="${BAR_HEIGHT}" fill="${SYSTEM_COLOURS[index % SYSTEM_COLOURS.length]}"/>`);
      parts.push(text(LABEL_WIDTH + width + 4, y + 12, formatValue(value, workload.unit)));
      y += BAR_HEIGHT + BAR_GAP;
    });
    y += GROUP_GAP;
  }
  const height = y + MARGIN;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${CHART_WIDTH}" height="${height}" viewBox="0 0 ${CHART_WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${CHART_WIDTH}" height="${height}" fill="#fff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

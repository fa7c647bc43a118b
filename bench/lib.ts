// Small helpers shared by the benchmarks: medians of repeated runs, GC
// counting, and a fixed-width table.

import { PerformanceObserver } from 'node:perf_hooks';

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Runs `body` `rounds` times and returns the median of what it returns. */
export async function medianOf(rounds: number, body: () => Promise<number> | number): Promise<{ median: number; runs: number[] }> {
  const runs: number[] = [];
  for (let i = 0; i < rounds; i += 1) runs.push(await body());
  return { median: median(runs), runs };
}

/** Counts garbage collections on this thread while it is open. */
export class GcCounter {
  count = 0;
  private readonly observer = new PerformanceObserver((list) => {
    this.count += list.getEntries().length;
  });

  constructor() {
    this.observer.observe({ entryTypes: ['gc'] });
  }

  stop(): number {
    this.observer.disconnect();
    return this.count;
  }
}

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((row) => row.map(String))];
  const widths = headers.map((_, column) => Math.max(...cells.map((row) => row[column]!.length)));
  const line = (row: string[]): string => `| ${row.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`;
  return [line(cells[0]!), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...cells.slice(1).map(line)].join('\n');
}

export function formatRate(value: number, unit: string): string {
  if (value >= 1e9) return `${(value / 1e9).toFixed(2)} G${unit}`;
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)} M${unit}`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(2)} k${unit}`;
  return `${value.toFixed(2)} ${unit}`;
}

// From samples to verdicts: per-round ratios between two systems on one
// workload, their median, and one verdict per docs/design.md §10 goal.
//
// Why per-round ratios: the machines are shared and noisy. Within a round
// the systems run back to back, so a burst of someone else's load hits
// neighbours alike; the ratio of two neighbours is steadier than either
// figure, and the median over rounds drops the round a burst hit hardest.
// A goal holds only if every comparison under it holds: its verdict quotes
// the worst median.

import { median } from '../lib';

export interface Sample {
  system: string;
  workload: string;
  round: number;
  /** Higher is better: bytes/s for sequential workloads, I/Os per second for 4 KiB ones. */
  value: number;
  /** CPU seconds the server process spent during the workload. */
  server_cpu_seconds: number;
  /**
   * Which of its round's pairs the sample belongs to, where two workloads
   * are measured in pairs, one right after the other (the write before
   * take and the first touch after it, systems.ts).
   */
  pair?: number;
}

export interface Comparison {
  goal: string;
  /** What is compared, for tables: "seq write". */
  label: string;
  numerator: { system: string; workload: string };
  denominator: { system: string; workload: string };
  target: number;
}

export interface ComparisonResult extends Comparison {
  /** One ratio per round in which both sides were measured, in round order. */
  ratios: number[];
  median: number;
  pass: boolean;
}

export interface GoalVerdict {
  goal: string;
  target: number;
  /** The worst median ratio among the goal's comparisons (NaN when none was measured). */
  ratio: number;
  worst: string;
  pass: boolean;
  comparisons: ComparisonResult[];
}

function samplesOf(samples: Sample[], side: { system: string; workload: string }, round: number): Sample[] {
  return samples.filter((s) => s.system === side.system && s.workload === side.workload && s.round === round);
}

/** The two sides' samples as pairs, when both were measured in the same pairs (Sample.pair); else undefined. */
function pairsOf(top: Sample[], bottom: Sample[]): [Sample, Sample][] | undefined {
  if (top.length !== bottom.length) return undefined;
  const pairs: [Sample, Sample][] = [];
  for (const t of top) {
    const b = bottom.find((s) => s.pair === t.pair);
    if (t.pair === undefined || b === undefined) return undefined;
    pairs.push([t, b]);
  }
  return pairs;
}

/**
 * One round's ratio. A workload measured several times in a round
 * (systems.ts, SEQ_FIRST_TOUCHES_PER_ROUND) counts with its median; where
 * both sides were measured in pairs, the round's ratio is the median of
 * the pairs' ratios: a pair shares its minute of the machine, and a stall
 * that slowed one pair's two writes alike cancels in its ratio.
 */
function roundRatio(top: Sample[], bottom: Sample[]): number | undefined {
  if (top.length === 0 || bottom.length === 0) return undefined;
  const pairs = pairsOf(top, bottom);
  if (pairs !== undefined) {
    const ratios = pairs.filter(([, b]) => b.value > 0).map(([t, b]) => t.value / b.value);
    return ratios.length > 0 ? median(ratios) : undefined;
  }
  const below = median(bottom.map((s) => s.value));
  return below > 0 ? median(top.map((s) => s.value)) / below : undefined;
}

export function roundRatios(samples: Sample[], comparison: Comparison): number[] {
  const rounds = [...new Set(samples.map((s) => s.round))].sort((a, b) => a - b);
  const ratios: number[] = [];
  for (const round of rounds) {
    const ratio = roundRatio(samplesOf(samples, comparison.numerator, round), samplesOf(samples, comparison.denominator, round));
    if (ratio !== undefined) ratios.push(ratio);
  }
  return ratios;
}

export function evaluate(samples: Sample[], comparison: Comparison): ComparisonResult {
  const ratios = roundRatios(samples, comparison);
  const middle = ratios.length > 0 ? median(ratios) : Number.NaN;
  return { ...comparison, ratios, median: middle, pass: ratios.length > 0 && middle >= comparison.target };
}

/** One verdict per goal, in the order the goals first appear among the comparisons. */
export function verdicts(samples: Sample[], comparisons: Comparison[]): GoalVerdict[] {
  const results = comparisons.map((c) => evaluate(samples, c));
  const goals = [...new Set(comparisons.map((c) => c.goal))];
  return goals.map((goal) => {
    const mine = results.filter((r) => r.goal === goal);
    const measured = mine.filter((r) => r.ratios.length > 0);
    const worst = measured.reduce<ComparisonResult | undefined>((w, r) => (w === undefined || r.median < w.median ? r : w), undefined);
    return {
      goal,
      target: mine[0]!.target,
      ratio: worst?.median ?? Number.NaN,
      worst: worst?.label ?? 'not measured',
      pass: measured.length === mine.length && mine.every((r) => r.pass),
      comparisons: mine,
    };
  });
}

/** `PASS goal: 1.23× (worst: seq write; rand write 1.40×, seq read 1.31×)` */
export function verdictLine(verdict: GoalVerdict): string {
  const others = verdict.comparisons.filter((c) => c.label !== verdict.worst)
    .map((c) => `${c.label} ${Number.isNaN(c.median) ? 'n/a' : `${c.median.toFixed(2)}×`}`);
  const ratio = Number.isNaN(verdict.ratio) ? 'n/a' : `${verdict.ratio.toFixed(2)}×`;
  const detail = verdict.comparisons.length > 1 ? ` (worst: ${verdict.worst}${others.length > 0 ? `; ${others.join(', ')}` : ''})` : '';
  return `${verdict.pass ? 'PASS' : 'FAIL'} ${verdict.goal}: ${ratio}${detail}`;
}

// Findings and reports: the kinds of bad sector, the ReportBuilder that
// merges findings into ranges over one ascending pass, and formatReport.
// Findings are counted always, kept as merged ranges up to RANGES_KEPT_MAX
// and in full for the first DETAILS_PER_KIND_MAX sectors of each kind.

import { assert } from '../../../src/shared/assert';
import type { StampHeader } from './decode';
import { DETAILS_PER_KIND_MAX, FORMAT_RANGES_MAX, RANGES_KEPT_MAX, hex } from './layout';

export type FindingKind = 'corrupt' | 'misaddressed' | 'leaked' | 'stale' | 'unwritten' | 'mismatch';
export const FINDING_KINDS: readonly FindingKind[] = ['corrupt', 'misaddressed', 'leaked', 'stale', 'unwritten', 'mismatch'];
export const KIND_CORRUPT = 0;
export const KIND_MISADDRESSED = 1;
export const KIND_LEAKED = 2;
export const KIND_STALE = 3;
export const KIND_UNWRITTEN = 4;
export const KIND_MISMATCH = 5;
export const KIND_COUNT = FINDING_KINDS.length;

export interface RangeFinding {
  kind: FindingKind;
  first_lba: number;
  sector_count: number;
}

export interface SectorFinding {
  kind: FindingKind;
  lba: number;
  /** What the sector held (null when it was all zero). */
  found: StampHeader | null;
  why: string;
  expected: string;
}

export interface Report {
  ok: boolean;
  first_lba: number;
  sector_count: number;
  bad_sector_count: number;
  counts: Record<FindingKind, number>;
  /** Runs of adjacent sectors of one kind, by first LBA; at most RANGES_KEPT_MAX. */
  ranges: RangeFinding[];
  /** Ranges past RANGES_KEPT_MAX, counted but not kept. */
  ranges_dropped_count: number;
  /** The first DETAILS_PER_KIND_MAX sectors of each kind, decoded. */
  details: SectorFinding[];
}

/**
 * Accumulates findings over one ascending pass (one call, or many pieces of
 * a file). Each kind keeps one open range; a sector that extends it costs
 * two number updates, anything else closes it into the list.
 */
export class ReportBuilder {
  private readonly counts = new Float64Array(KIND_COUNT);
  private readonly open_first_lba = new Float64Array(KIND_COUNT).fill(-1);
  private readonly open_sector_count = new Float64Array(KIND_COUNT);
  private readonly ranges: RangeFinding[] = [];
  private ranges_dropped_count = 0;
  private readonly details: SectorFinding[] = [];
  private readonly detail_counts = new Uint8Array(KIND_COUNT);
  private first_lba = -1;
  private next_lba = 0;
  private checked_count = 0;

  /** Notes that [first_lba, + sector_count) is being checked; pieces must come in ascending order. */
  begin(first_lba: number, sector_count: number): void {
    assert(first_lba >= this.next_lba, `report pieces must ascend: ${first_lba} after ${this.next_lba}`);
    if (this.first_lba < 0) this.first_lba = first_lba;
    this.next_lba = first_lba + sector_count;
    this.checked_count += sector_count;
  }

  /** True while details of this kind are still wanted (so the caller decodes only then). */
  wantsDetail(kind: number): boolean {
    return this.detail_counts[kind]! < DETAILS_PER_KIND_MAX;
  }

  add(kind: number, lba: number, detail?: SectorFinding): void {
    this.counts[kind] = this.counts[kind]! + 1;
    const open = this.open_first_lba[kind]!;
    if (open >= 0 && open + this.open_sector_count[kind]! === lba) {
      this.open_sector_count[kind] = this.open_sector_count[kind]! + 1;
    } else {
      this.close(kind);
      this.open_first_lba[kind] = lba;
      this.open_sector_count[kind] = 1;
    }
    if (detail !== undefined && this.wantsDetail(kind)) {
      this.detail_counts[kind] = this.detail_counts[kind]! + 1;
      this.details.push(detail);
    }
  }

  finish(): Report {
    for (let kind = 0; kind < KIND_COUNT; kind += 1) this.close(kind);
    this.ranges.sort((x, y) => x.first_lba - y.first_lba);
    this.details.sort((x, y) => x.lba - y.lba);
    const counts = {} as Record<FindingKind, number>;
    let bad_sector_count = 0;
    FINDING_KINDS.forEach((name, kind) => { counts[name] = this.counts[kind]!; bad_sector_count += this.counts[kind]!; });
    return {
      ok: bad_sector_count === 0,
      first_lba: Math.max(this.first_lba, 0),
      sector_count: this.checked_count,
      bad_sector_count,
      counts,
      ranges: this.ranges,
      ranges_dropped_count: this.ranges_dropped_count,
      details: this.details,
    };
  }

  private close(kind: number): void {
    const first_lba = this.open_first_lba[kind]!;
    if (first_lba < 0) return;
    if (this.ranges.length < RANGES_KEPT_MAX) {
      this.ranges.push({ kind: FINDING_KINDS[kind]!, first_lba, sector_count: this.open_sector_count[kind]! });
    } else {
      this.ranges_dropped_count += 1;
    }
    this.open_first_lba[kind] = -1;
  }
}

/** A short text: one summary line, the ranges, the detailed sectors. */
export function formatReport(report: Report): string {
  const last_lba = report.first_lba + report.sector_count - 1;
  const head = `stamp check of LBA ${report.first_lba}-${last_lba} (${report.sector_count} sectors): `;
  if (report.ok) return `${head}ok`;
  const by_kind = FINDING_KINDS.filter((k) => report.counts[k] > 0).map((k) => `${k} ${report.counts[k]}`).join(', ');
  const lines = [`${head}${report.bad_sector_count} bad (${by_kind})`];
  for (const range of report.ranges.slice(0, FORMAT_RANGES_MAX)) {
    const last = range.first_lba + range.sector_count - 1;
    const span = range.sector_count === 1 ? `${range.first_lba}` : `${range.first_lba}-${last}`;
    lines.push(`  ${range.kind.padEnd(12)} LBA ${span} (${range.sector_count})`);
  }
  const more = report.ranges.length - FORMAT_RANGES_MAX + report.ranges_dropped_count;
  if (more > 0) lines.push(`  … and ${more} more ranges`);
  for (const d of report.details) {
    const f = d.found;
    const found = f === null ? 'zeros'
      : `magic "${f.magic}" crc 0x${hex(f.checksum_stored)}/0x${hex(f.checksum_computed)} seq ${f.sequence} lba ${f.lba} time ${f.time_ns} writer ${f.writer_id} v${f.version}`;
    lines.push(`  LBA ${d.lba} ${d.kind}: ${d.why}, expected ${d.expected}; found ${found}`);
  }
  return lines.join('\n');
}

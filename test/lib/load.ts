// Shared machinery of the load tests (the frontend contract suite in
// test/contract, test/engine/multi-volume): stamped writers that keep many
// requests in flight on a block target, image readers that check every read
// they get back, whole-target checks, and bounded waits. Every I/O goes
// through a BlockTarget (block-target.ts), so the same load runs through
// any frontend. Not a test file itself (the runner only runs *.test.js).
//
//   writer lanes ──write(stamps)──► BlockTarget ──► frontend ──► engine ──ack──► model.record
//        │                                                               (exact per sector)
//        └─ in_flight set: what a take cuts through (marked uncertain)
//   reader lanes ──read──► BlockTarget ──► frontend ──► engine ──► verify(buffer) against a frozen model
//
// Design notes
// - Exactness under concurrency: SectorModel demands, per sector, the last
//   acknowledged write. Two writes in flight on one sector of one target
//   could land in either order, so a writer submits only a range none of
//   whose sectors is in flight on that target (Target.busy). Ranges of
//   different writers still share chunks, and a volume and its image are
//   separate targets (the engine keeps them apart; that is under test).
// - Every write is one fill(), so it carries one stamp identity (a frontend
//   may split it into several requests; all of them carry that identity).
// - A write is in WriteLoad.in_flight from its fill until its completion, so
//   a take can mark exactly the writes it cut through as uncertain.
// - Lanes interleave by completion timing, so a seed reproduces the mix of
//   operations, not their exact order.

import { setImmediate as yieldTurn, setTimeout as sleep } from 'node:timers/promises';
import type { EngineControl } from '../../src/engine/api';
import { assert } from '../../src/shared/assert';
import type { BlockTarget } from './block-target';
import { scaledTimeout } from './slow-machine';
import {
  SECTOR_BYTES, SectorModel, StampGenerator, checkAgainst, formatReport,
  type Report, type StampExpectation, type StampIdentity,
} from './stamp';

export const KiB = 1024;
export const MiB = 1024 * KiB;
/** Every test of these files takes seconds; past this it hangs. */
export const TEST_TIMEOUT_MS = 60_000;
/** Stopping the engine takes well under a second; past this it is stuck. */
export const CLOSE_TIMEOUT_MS = 30_000;
/** A lane tries this many random places for a free range before it yields a turn. */
const PICK_ATTEMPTS_MAX = 8;
/** Failures kept in full per load (the rest are counted). */
const FAILURES_KEPT_MAX = 8;
/** Sectors per 4 KiB block: half of the random runs are block-aligned. */
const BLOCK_SECTORS = 8;
/** A cleanup that timed out leaves workers alive: exit this long after, once uvu reported. */
const EXIT_AFTER_REPORT_MS = 1000;
/** Pieces of a whole-target read (each one request). */
const CHECK_PIECE_BYTES = MiB;

/** One thing writes go to: a volume or an image, with its model and its sectors in flight. */
export interface Target {
  label: string;
  /** Where its I/O goes (an image is opened anew at every take). */
  io: BlockTarget;
  /** What the target must hold: the last acknowledged write per sector. */
  model: SectorModel;
  /** 1 per sector with a write in flight. */
  busy: Uint8Array;
}

export function makeTarget(label: string, io: BlockTarget, model: SectorModel): Target {
  return { label, io, model, busy: new Uint8Array(model.sector_count) };
}

/** A part of a target that a writer or reader works on. */
export interface Region {
  target: Target;
  first_lba: number;
  sector_count: number;
}

export interface PendingWrite {
  target: Target;
  first_lba: number;
  sector_count: number;
  stamp: StampIdentity;
}

/** Bookkeeping shared by the writers of one test. */
export class WriteLoad {
  readonly in_flight = new Set<PendingWrite>();
  /** Called at every submission (a take window marks these uncertain). */
  onSubmit: ((write: PendingWrite) => void) | null = null;
  acknowledged_count = 0;
  failed_count = 0;
  sectors_acknowledged = 0;
  readonly failures: string[] = [];

  noteFailure(text: string): void {
    this.failed_count += 1;
    if (this.failures.length < FAILURES_KEPT_MAX) this.failures.push(text);
  }
}

function isFree(busy: Uint8Array, first_lba: number, sector_count: number): boolean {
  for (let lba = first_lba; lba < first_lba + sector_count; lba += 1) if (busy[lba] !== 0) return false;
  return true;
}

/**
 * Writes one stamped range and records it in the target's model once
 * acknowledged. The range must be free (not in flight); it is held busy
 * until the completion. Returns null, or the error of a failed write: that
 * range becomes uncertain and the failure is noted in `load` (a volume write
 * must never fail; an image write may, once its snapshot is gone).
 */
export async function writeStamped(generator: StampGenerator, target: Target,
  first_lba: number, sector_count: number, load: WriteLoad): Promise<unknown> {
  assert(isFree(target.busy, first_lba, sector_count), `${target.label} LBA ${first_lba}+${sector_count} overlaps a write in flight`);
  target.busy.fill(1, first_lba, first_lba + sector_count);
  const buffer = Buffer.allocUnsafe(sector_count * SECTOR_BYTES);
  generator.fill(buffer, first_lba, sector_count);
  const write: PendingWrite = { target, first_lba, sector_count, stamp: generator.lastStamp() };
  load.in_flight.add(write);
  load.onSubmit?.(write);
  try {
    await target.io.write(first_lba * SECTOR_BYTES, buffer);
    target.model.record(first_lba, sector_count, write.stamp);
    load.acknowledged_count += 1;
    load.sectors_acknowledged += sector_count;
    return null;
  } catch (error) {
    target.model.markUncertain(first_lba, sector_count);
    load.noteFailure(`write of ${target.label} LBA ${first_lba}+${sector_count}: ${(error as Error).message}`);
    return error;
  } finally {
    load.in_flight.delete(write);
    target.busy.fill(0, first_lba, first_lba + sector_count);
  }
}

export interface WriterOptions {
  generator: StampGenerator;
  regions: Region[];
  random: () => number;
  /** Requests this writer keeps in flight. */
  depth: number;
  /** Longest run, in sectors. */
  run_sectors_max: number;
  load: WriteLoad;
  /** Checked before every write; true ends the writer once its writes drained. */
  stop: () => boolean;
  /** Stop after this many sectors were submitted (optional). */
  budget_sectors?: number;
}

/** Random runs, half of them 4 KiB-aligned, never over a sector in flight. */
export async function runWriter(options: WriterOptions): Promise<void> {
  const { generator, regions, random, depth, run_sectors_max, load, stop, budget_sectors } = options;
  let submitted_sectors = 0;
  const budgetLeft = (): boolean => budget_sectors === undefined || submitted_sectors < budget_sectors;
  const lane = async (): Promise<void> => {
    while (!stop() && budgetLeft()) {
      const region = regions[Math.floor(random() * regions.length)]!;
      const aligned = random() < 0.5;
      let count = 1 + Math.floor(random() * run_sectors_max);
      if (aligned) count = Math.max(BLOCK_SECTORS, count - (count % BLOCK_SECTORS));
      count = Math.min(count, region.sector_count);
      let first = -1;
      for (let attempt = 0; attempt < PICK_ATTEMPTS_MAX && first < 0; attempt += 1) {
        let lba = region.first_lba + Math.floor(random() * (region.sector_count - count + 1));
        if (aligned) lba = Math.max(region.first_lba, lba - (lba % BLOCK_SECTORS));
        if (isFree(region.target.busy, lba, count)) first = lba;
      }
      if (first < 0) {
        await yieldTurn();
        continue;
      }
      submitted_sectors += count;
      await writeStamped(generator, region.target, first, count, load);
    }
  };
  await Promise.all(Array.from({ length: depth }, lane));
}

export interface ReaderOptions {
  /** The target to read now. */
  io: () => BlockTarget;
  first_lba: number;
  sector_count: number;
  random: () => number;
  depth: number;
  read_sectors_max: number;
  stop: () => boolean;
  /** Returns a failure text or null. */
  verify: (buffer: Buffer, first_lba: number, sector_count: number) => string | null;
  /** A failed read: return true to go on reading, false to stop this lane. */
  onError: (error: unknown, first_lba: number, sector_count: number) => boolean;
  failures: string[];
}

/** Random reads of a range, each checked as soon as it returns. Returns the reads done. */
export async function runReader(options: ReaderOptions): Promise<number> {
  const { io, first_lba, sector_count, random, depth, read_sectors_max, stop, verify, onError, failures } = options;
  let reads = 0;
  const lane = async (): Promise<void> => {
    while (!stop()) {
      const count = Math.min(sector_count, 1 + Math.floor(random() * read_sectors_max));
      const lba = first_lba + Math.floor(random() * (sector_count - count + 1));
      let buffer: Buffer;
      try {
        buffer = await io().read(lba * SECTOR_BYTES, count * SECTOR_BYTES);
      } catch (error) {
        if (!onError(error, lba, count)) return;
        continue;
      }
      reads += 1;
      const failure = verify(buffer, lba, count);
      if (failure !== null && failures.length < FAILURES_KEPT_MAX) failures.push(failure);
    }
  };
  await Promise.all(Array.from({ length: depth }, lane));
  return reads;
}

/** A reader's verify: exactly the model (usually frozen), within the expectation. */
export function verifyAgainst(model: SectorModel, expectation: StampExpectation, label: string) {
  return (buffer: Buffer, first_lba: number, sector_count: number): string | null => {
    const report = checkAgainst(buffer, first_lba, sector_count, model, expectation);
    return report.ok ? null : `${label}: ${formatReport(report)}`;
  };
}

/** Reads [offset, + length) bytes of a target in 1 MiB requests, all in flight at once. */
export async function readWhole(io: BlockTarget, offset_bytes: number, length_bytes: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length_bytes);
  const pieces: Promise<void>[] = [];
  for (let done = 0; done < length_bytes; done += CHECK_PIECE_BYTES) {
    const piece = Math.min(CHECK_PIECE_BYTES, length_bytes - done);
    pieces.push(io.read(offset_bytes + done, piece).then((data) => { data.copy(buffer, done); }));
  }
  await Promise.all(pieces);
  return buffer;
}

/** Reads [first_lba, + sector_count) of a target through its frontend and checks it against model. */
export async function checkTarget(io: BlockTarget, model: SectorModel,
  expectation: StampExpectation = {}, first_lba = 0, sector_count = model.sector_count - first_lba): Promise<Report> {
  const buffer = await readWhole(io, first_lba * SECTOR_BYTES, sector_count * SECTOR_BYTES);
  return checkAgainst(buffer, first_lba, sector_count, model, expectation);
}

/** Where two equal-length buffers first differ, as "none" or a sector number. */
export function firstDifferentSector(a: Uint8Array, b: Uint8Array): number {
  assert(a.length === b.length, 'compared buffers differ in length');
  for (let offset = 0; offset < a.length; offset += SECTOR_BYTES) {
    if (Buffer.compare(a.subarray(offset, offset + SECTOR_BYTES), b.subarray(offset, offset + SECTOR_BYTES)) !== 0) return offset / SECTOR_BYTES;
  }
  return -1;
}

/** Fills a whole target with stamps, 1 MiB per write, recording every piece in its model. */
export async function prefill(generator: StampGenerator, target: Target, load: WriteLoad): Promise<void> {
  const piece_sectors = MiB / SECTOR_BYTES;
  const writes: Promise<unknown>[] = [];
  for (let lba = 0; lba < target.model.sector_count; lba += piece_sectors) {
    writes.push(writeStamped(generator, target, lba, Math.min(piece_sectors, target.model.sector_count - lba), load));
  }
  await Promise.all(writes);
}

/** A live (writable) copy of any model, frozen or not: an image's model starts as the volume's at the take. */
export function liveCopy(model: SectorModel): SectorModel {
  const copy = new SectorModel(model.sector_count);
  for (let lba = 0; lba < model.sector_count; lba += 1) {
    const entry = model.entry(lba);
    if (entry === 'uncertain') copy.markUncertain(lba, 1);
    else if (entry !== 'zero') copy.record(lba, 1, entry);
  }
  return copy;
}

/** Fails with a clear message when `promise` does not settle within the timeout (scaled: slow-machine.ts): a hang is a failure. */
export async function within<T>(promise: Promise<T>, unscaled_timeout_ms: number, what: string): Promise<T> {
  const timeout_ms = scaledTimeout(unscaled_timeout_ms);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${timeout_ms} ms`)), timeout_ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A test body under a hard bound: a hang anywhere in it fails the test with the bound in the message. */
export function bounded(timeout_ms: number, body: () => Promise<void>): () => Promise<void> {
  return () => within(body(), timeout_ms, 'the test');
}

/**
 * Runs a cleanup (engine stop) under a hard bound. An engine that cannot
 * stop (a request stuck in an actor) must not hang the file: the failure is
 * reported, and the process exits shortly after uvu printed its summary.
 */
export async function closeWithin(close: () => Promise<void>, timeout_ms: number): Promise<void> {
  try {
    await within(close(), timeout_ms, 'cleanup (engine stop)');
  } catch (error) {
    console.error(`  ✘ ${(error as Error).message}; exiting with failure after the report`);
    process.exitCode = 1;
    setTimeout(() => process.exit(1), EXIT_AFTER_REPORT_MS).unref();
  }
}

/** Waits until every chunk of the snapshot left memory (the idle flush stored it), bounded. */
export async function waitStored(engine: EngineControl, id: string, unscaled_timeout_ms: number): Promise<void> {
  const timeout_ms = scaledTimeout(unscaled_timeout_ms);
  const deadline = Date.now() + timeout_ms;
  const POLL_MS = 50;
  for (;;) {
    const chunks = engine.snapshotInfo(id).chunks;
    if (chunks.every((c) => c.in_memory === 0 && c.queued === 0)) return;
    if (Date.now() > deadline) throw new Error(`chunks still in memory after ${timeout_ms} ms: ${JSON.stringify(chunks)}`);
    await sleep(POLL_MS);
  }
}

/** Fails with the first failures in full (readable, unlike an array diff) when there are any. */
export function assertNone(failures: string[], what: string): void {
  if (failures.length === 0) return;
  throw new Error(`${what}: ${failures.length} failure(s)${failures.length >= FAILURES_KEPT_MAX ? ' (or more)' : ''}\n${failures.slice(0, 3).join('\n')}`);
}

/** "ok" or the formatted report, for assert messages. */
export function describe(label: string, report: Report): string {
  return `${label}: ${formatReport(report)}`;
}

// The saved change tracking of each volume: one file per volume path in
// <state dir>/cbt/, modelled on QEMU's persistent dirty bitmaps (an in-use
// flag set while the bitmap may change, a map trusted only when the flag is
// clear at the next open).
//
//   file  <state dir>/cbt/<sha256(path), 32 hex>.cbt   mode 0600
//
//   ┌──────────────────────────────────────────────┬────────────────────────┐
//   │ header: one JSON line (≤ HEADER_BYTES_MAX)   │ clean only:            │
//   │  format, version, path, status,              │ ACTIVE[block_count]    │
//   │  clean:  cbt fields, evidence, map_sha256    │ SNAPSHOT[block_count]  │
//   │  in_use: since                               │                        │
//   │  lost:   reason                              │                        │
//   └──────────────────────────────────────────────┴────────────────────────┘
//
// Life of a volume's file (each write is durable: state-store.ts):
//
//   attach ──► in_use ──(clean stop)──► clean ──(attach, evidence equal)──► in_use (map continued)
//                │                        └────(attach, evidence moved)───► in_use (new generation)
//                └──(crash: stays in_use)──► next attach: new generation, "unclean stop"
//   attach failed ──► lost (reason)       detach ──► file removed
//
// A file that cannot be parsed, or whose map bytes do not match map_sha256,
// is reported as unreadable: a new generation, never a guess.

import { createHash } from 'node:crypto';
import path from 'node:path';
import type { CbtState, SavedCbt } from '../engine/api';
import { UblksnapError } from '../shared/errors';
import { isEvidence, type VolumeEvidence } from './volume-evidence';
import { readStateFile, removeFileDurably, writeFileDurably } from '../shared/state-file';

export const CBT_DIR_NAME = 'cbt';
const FORMAT = 'ublksnap-cbt';
const FORMAT_VERSION = 1;
/** The header is a few hundred bytes; this bounds what a reader parses. */
const HEADER_BYTES_MAX = 64 * 1024;
/** A map byte per tracking block, two copies; 2^28 blocks is past any geometry the params allow. */
const MAP_BYTES_MAX = 2 * 2 ** 28;
const NEWLINE = 0x0a;

export type SavedStatus = 'clean' | 'in_use' | 'lost';

/** What a volume's file says, read back. */
export type SavedRecord =
  | { status: 'clean'; cbt: SavedCbt; evidence: VolumeEvidence; saved_at: string }
  | { status: 'in_use'; since: string }
  | { status: 'lost'; reason: string }
  | { status: 'missing' }
  | { status: 'unreadable'; problem: string };

export function cbtFileOf(state_dir: string, volume_path: string): string {
  const key = createHash('sha256').update(volume_path).digest('hex').slice(0, 32);
  return path.join(state_dir, CBT_DIR_NAME, `${key}.cbt`);
}

function headerLine(header: Record<string, unknown>): Buffer {
  return Buffer.from(`${JSON.stringify({ format: FORMAT, version: FORMAT_VERSION, ...header })}\n`);
}

function mapDigest(active: Uint8Array, snapshot: Uint8Array): string {
  return createHash('sha256').update(active).update(snapshot).digest('hex');
}

export function writeInUse(file: string, volume_path: string): void {
  writeFileDurably(file, [headerLine({ path: volume_path, status: 'in_use', since: new Date().toISOString() })]);
}

export function writeLost(file: string, volume_path: string, reason: string): void {
  writeFileDurably(file, [headerLine({ path: volume_path, status: 'lost', reason })]);
}

export function writeClean(file: string, volume_path: string, saved: SavedCbt, evidence: VolumeEvidence): void {
  const { active, snapshot, ...numbers } = saved.state;
  writeFileDurably(file, [
    headerLine({
      path: volume_path, status: 'clean', saved_at: new Date().toISOString(),
      cbt: { ...numbers, generation_reason: saved.generation_reason }, evidence, map_sha256: mapDigest(active, snapshot),
    }),
    active, snapshot,
  ]);
}

export function removeCbtFile(file: string): void {
  removeFileDurably(file);
}

/** Reads and checks a volume's file; never throws for what the file holds, only says what is wrong. */
export function readSaved(file: string, volume_path: string): SavedRecord {
  let content: Buffer | null;
  try {
    content = readStateFile(file, HEADER_BYTES_MAX + MAP_BYTES_MAX);
  } catch (error) {
    return { status: 'unreadable', problem: error instanceof UblksnapError ? error.message : `cannot read ${file}: ${(error as Error).message}` };
  }
  if (content === null) return { status: 'missing' };
  const problem = (what: string): SavedRecord => ({ status: 'unreadable', problem: `${file}: ${what}` });
  const end = content.subarray(0, HEADER_BYTES_MAX).indexOf(NEWLINE);
  if (end < 0) return problem(content.length === 0 ? 'empty' : 'no header line');
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(content.subarray(0, end).toString('utf8')) as Record<string, unknown>;
  } catch (error) {
    return problem(`header is not JSON (${(error as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || header.format !== FORMAT) return problem('not a ublksnap CBT file');
  if (header.version !== FORMAT_VERSION) return problem(`format version ${String(header.version)}, this daemon reads ${FORMAT_VERSION}`);
  if (header.path !== volume_path) return problem(`saved for ${String(header.path)}, not ${volume_path}`);
  if (header.status === 'in_use') return { status: 'in_use', since: String(header.since) };
  if (header.status === 'lost') return { status: 'lost', reason: String(header.reason) };
  if (header.status !== 'clean') return problem(`unknown status ${JSON.stringify(header.status)}`);

  const cbt = header.cbt as Record<string, unknown> | undefined;
  if (typeof cbt !== 'object' || cbt === null) return problem('no cbt fields');
  const numbers = ['block_shift', 'block_count', 'capacity_sectors', 'active_number', 'changes_number'] as const;
  for (const key of numbers) {
    if (!Number.isSafeInteger(cbt[key]) || (cbt[key] as number) < 0) return problem(`cbt.${key} is not a whole number`);
  }
  if (typeof cbt.generation_id !== 'string' || typeof cbt.generation_reason !== 'string') return problem('no generation id or reason');
  if (!isEvidence(header.evidence)) return problem('no evidence of the volume at the clean stop');
  const block_count = cbt.block_count as number;
  const maps = content.subarray(end + 1);
  if (maps.length !== 2 * block_count) return problem(`map holds ${maps.length} bytes, the header says ${2 * block_count} (truncated?)`);
  const active = Uint8Array.from(maps.subarray(0, block_count));
  const snapshot = Uint8Array.from(maps.subarray(block_count));
  if (mapDigest(active, snapshot) !== header.map_sha256) return problem('map bytes do not match their checksum');
  const state: CbtState = {
    block_shift: cbt.block_shift as number,
    block_count,
    capacity_sectors: cbt.capacity_sectors as number,
    generation_id: cbt.generation_id,
    active_number: cbt.active_number as number,
    changes_number: cbt.changes_number as number,
    active,
    snapshot,
  };
  return {
    status: 'clean', cbt: { state, generation_reason: cbt.generation_reason }, evidence: header.evidence, saved_at: String(header.saved_at),
  };
}

// The manifest of one backup of one volume: what was copied, from which
// point of the change tracking, and the checksums of what was written.
// It is the last thing a backup writes (temporary file, fsync, rename, fsync
// of the directory), so its presence is what makes a backup complete; a
// data file without one is an interrupted backup, never a base.
// docs/backup.md describes every field.

import { UblksnapError } from '../shared/errors';

export const MANIFEST_FORMAT = 'ublksnap-backup';
export const MANIFEST_FORMAT_VERSION = 1;

export type BackupKind = 'full' | 'incremental';

/** [offset_bytes, length_bytes] of the volume, sorted, disjoint. */
export type Extent = [number, number];

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  format_version: number;
  volume: string;
  seq: number;
  kind: BackupKind;
  /** The backup this one applies on (incremental), else null. */
  base_seq: number | null;
  /** Why a full backup was made: no base, --full, or what changed. Null for an incremental. */
  full_reason: string | null;
  /** The data file, relative to the volume's folder. */
  data_file: string;
  snapshot_id: string;
  /** ISO 8601, when the snapshot was taken. */
  taken_at: string;
  generation_id: string;
  /** The CBT changes_number of this take: the next incremental copies blocks whose map byte exceeds it. */
  changes_number: number;
  size_bytes: number;
  cbt_block_bytes: number;
  /** The ranges of the volume this backup holds; the whole volume for a full. */
  extents: Extent[];
  /** Bytes of volume data the backup read (the sum of the extents). */
  copied_bytes: number;
  checksum: {
    algorithm: 'sha256';
    /** Extents are cut at multiples of this (absolute volume offsets); one digest per piece, in order. */
    segment_bytes: number;
    digests: string[];
  };
}

function bad(file: string, why: string): never {
  throw new UblksnapError('EINVAL', `${file}: not a valid backup manifest: ${why}`);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Checks a parsed manifest's shape; throws EINVAL naming the file and the field. */
export function checkManifest(value: unknown, file: string): Manifest {
  if (typeof value !== 'object' || value === null) bad(file, 'not an object');
  const m = value as Record<string, unknown>;
  if (m.format !== MANIFEST_FORMAT) bad(file, `format is not ${MANIFEST_FORMAT}`);
  if (m.format_version !== MANIFEST_FORMAT_VERSION) bad(file, `format_version ${String(m.format_version)} (this tool reads ${MANIFEST_FORMAT_VERSION})`);
  for (const key of ['seq', 'changes_number', 'size_bytes', 'cbt_block_bytes', 'copied_bytes'] as const) {
    if (!isCount(m[key])) bad(file, `${key} is not a whole number`);
  }
  for (const key of ['volume', 'data_file', 'snapshot_id', 'taken_at', 'generation_id'] as const) {
    if (typeof m[key] !== 'string') bad(file, `${key} is not a string`);
  }
  if (m.kind !== 'full' && m.kind !== 'incremental') bad(file, 'kind is neither full nor incremental');
  if (m.kind === 'incremental' && !isCount(m.base_seq)) bad(file, 'an incremental without base_seq');
  if (String(m.data_file).includes('/')) bad(file, 'data_file is not a plain file name');
  if (!Array.isArray(m.extents)) bad(file, 'extents is not a list');
  let end = 0;
  for (const extent of m.extents as unknown[]) {
    if (!Array.isArray(extent) || extent.length !== 2 || !isCount(extent[0]) || !isCount(extent[1]) || extent[1] === 0) bad(file, 'an extent is not [offset, length]');
    if (extent[0] < end) bad(file, 'extents overlap or are not sorted');
    end = extent[0] + extent[1];
    if (end > (m.size_bytes as number)) bad(file, 'an extent ends past size_bytes');
  }
  const checksum = m.checksum as Record<string, unknown> | undefined;
  if (typeof checksum !== 'object' || checksum === null || checksum.algorithm !== 'sha256' || !isCount(checksum.segment_bytes)
    || checksum.segment_bytes === 0 || !Array.isArray(checksum.digests)) bad(file, 'checksum is not {algorithm: sha256, segment_bytes, digests}');
  const pieces = segmentPieces(m.extents as Extent[], checksum.segment_bytes as number);
  if (pieces.length !== (checksum.digests as unknown[]).length) bad(file, `${pieces.length} checksum pieces but ${(checksum.digests as unknown[]).length} digests`);
  return value as Manifest;
}

/**
 * The checksum pieces of a list of extents: each extent cut at multiples
 * of segment_bytes, in order. Copy, verify and restore all iterate these.
 */
export function segmentPieces(extents: readonly Extent[], segment_bytes: number): Extent[] {
  const pieces: Extent[] = [];
  for (const [offset, length_bytes] of extents) {
    let at = offset;
    const end = offset + length_bytes;
    while (at < end) {
      const next = Math.min(end, (Math.floor(at / segment_bytes) + 1) * segment_bytes);
      pieces.push([at, next - at]);
      at = next;
    }
  }
  return pieces;
}

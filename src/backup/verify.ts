// `ublksnap verify`: checks a backup directory. For every complete backup
// (of one volume or all, up to a point): its data file has the volume's
// size, every checksum piece hashes to its manifest's digest, and each
// incremental's chain resolves. Bad pieces are named by file and byte
// range (the data files are raw, so file offsets are volume offsets).
//
// With an export (--against-export URI), it also compares one point of a
// volume, rebuilt from its chain, with a live image read over NBD, piece by
// piece, and names the first range that differs.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { UblksnapError, fromSystemError } from '../shared/errors';
import { listVolumes, readVolumeBackups, seqText } from './backup-dir';
import { ChainReader, resolveChain } from './chain';
import { COPY_PIECE_BYTES } from './image-copier';
import { segmentPieces, type Manifest } from './manifest';
import { NbdReadClient } from './nbd-client';
import { parseNbdUri } from './nbd-uri';

export interface VerifyOptions {
  readonly dir: string;
  /** One volume, or every volume folder of dir. */
  readonly volume?: string;
  /** Check backups up to this seq (the chain of this point and everything before it). */
  readonly point?: number;
  readonly against_export?: string;
  readonly signal?: AbortSignal;
  readonly onProgress?: (done_bytes: number, total_bytes: number) => void;
}

export interface BadRange {
  file: string;
  offset: number;
  length_bytes: number;
  why: string;
}

export interface VerifySummary {
  dir: string;
  backups_checked: number;
  bytes_checked: number;
  incomplete: string[];
  bad: BadRange[];
  /** Set when --against-export compared a point. */
  export_compared?: { volume: string; point: number; uri: string; bytes: number };
}

function rangeText(bad: BadRange): string {
  return `${bad.file}: bytes ${bad.offset}-${bad.offset + bad.length_bytes - 1} ${bad.why}`;
}

/** The error verify ends with when anything is bad: the first range, and how many more. */
export function badError(bad: readonly BadRange[]): UblksnapError {
  const first = bad[0] as BadRange;
  const more = bad.length > 1 ? ` (and ${bad.length - 1} more bad range${bad.length > 2 ? 's' : ''})` : '';
  return new UblksnapError('EIO', `${rangeText(first)}${more}`);
}

export function badLine(bad: BadRange): string {
  return rangeText(bad);
}

function checkDataFile(folder: string, manifest: Manifest, bad: BadRange[], tick: (bytes: number) => void, signal?: AbortSignal): number {
  const file = path.join(folder, manifest.data_file);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    bad.push({ file, offset: 0, length_bytes: manifest.size_bytes, why: `cannot be read: ${fromSystemError(error, 'open').message}` });
    return 0;
  }
  try {
    const size = fstatSync(fd).size;
    if (size !== manifest.size_bytes) bad.push({ file, offset: 0, length_bytes: Math.max(1, size), why: `: the file has ${size} bytes, its manifest says ${manifest.size_bytes}` });
    const pieces = segmentPieces(manifest.extents, manifest.checksum.segment_bytes);
    const buffer = Buffer.alloc(manifest.checksum.segment_bytes);
    let checked = 0;
    pieces.forEach(([offset, length_bytes], index) => {
      if (signal?.aborted) throw new UblksnapError('ECANCELED', 'interrupted');
      const piece = buffer.subarray(0, length_bytes);
      piece.fill(0);
      let done = 0;
      while (done < length_bytes) {
        const got = readSync(fd, piece, done, length_bytes - done, offset + done);
        if (got === 0) break;
        done += got;
      }
      const digest = createHash('sha256').update(piece).digest('hex');
      if (digest !== manifest.checksum.digests[index]) bad.push({ file, offset, length_bytes, why: 'do not match their sha256 in the manifest' });
      checked += length_bytes;
      tick(length_bytes);
    });
    return checked;
  } finally {
    closeSync(fd);
  }
}

async function compareWithExport(options: VerifyOptions, volume: string, bad: BadRange[]): Promise<{ point: number; bytes: number }> {
  const backups = readVolumeBackups(options.dir, volume);
  const chain = resolveChain(backups, options.point);
  const point = (chain[chain.length - 1] as Manifest).seq;
  const reader = new ChainReader(backups.folder, chain);
  const source = await NbdReadClient.open(parseNbdUri(options.against_export as string));
  try {
    if (source.size_bytes !== reader.size_bytes) {
      throw new UblksnapError('EINVAL', `${options.against_export} has ${source.size_bytes} bytes, point ${seqText(point)} of ${volume} has ${reader.size_bytes}`);
    }
    const mine = Buffer.alloc(COPY_PIECE_BYTES);
    for (let offset = 0; offset < reader.size_bytes; offset += COPY_PIECE_BYTES) {
      if (options.signal?.aborted) throw new UblksnapError('ECANCELED', 'interrupted');
      const length_bytes = Math.min(COPY_PIECE_BYTES, reader.size_bytes - offset);
      const theirs = await source.read(offset, length_bytes);
      const piece = mine.subarray(0, length_bytes);
      piece.fill(0);
      reader.read(offset, length_bytes, piece);
      if (!piece.equals(theirs)) {
        bad.push({ file: `point ${seqText(point)} of ${volume}`, offset, length_bytes, why: `differ from ${options.against_export}` });
      }
    }
    return { point, bytes: reader.size_bytes };
  } finally {
    source.close();
    reader.close();
  }
}

export async function runVerify(options: VerifyOptions): Promise<VerifySummary> {
  const volumes = options.volume !== undefined ? [options.volume] : listVolumes(options.dir);
  if (options.against_export !== undefined && options.volume === undefined) {
    throw new UblksnapError('EINVAL', '--against-export needs -d VOLUME: the volume whose point is compared');
  }
  const summary: VerifySummary = { dir: options.dir, backups_checked: 0, bytes_checked: 0, incomplete: [], bad: [] };
  const plans: Array<{ folder: string; manifests: Manifest[] }> = [];
  for (const volume of volumes) {
    const backups = readVolumeBackups(options.dir, volume);
    if (options.volume !== undefined && backups.complete.length === 0) throw new UblksnapError('ENOENT', `no complete backup of ${volume} in ${options.dir}`);
    for (const seq of backups.incomplete) summary.incomplete.push(path.join(backups.folder, seqText(seq)));
    const manifests = backups.complete.filter((manifest) => options.point === undefined || manifest.seq <= options.point);
    // Every incremental's chain must resolve; a missing base is as bad as a bad byte.
    for (const manifest of manifests) {
      try {
        resolveChain(backups, manifest.seq);
      } catch (error) {
        summary.bad.push({ file: path.join(backups.folder, manifest.data_file), offset: 0, length_bytes: manifest.size_bytes, why: `: ${(error as Error).message}` });
      }
    }
    plans.push({ folder: backups.folder, manifests });
  }
  const total_bytes = plans.reduce((sum, plan) => sum + plan.manifests.reduce((inner, manifest) => inner + manifest.copied_bytes, 0), 0);
  let done_bytes = 0;
  const tick = (bytes: number): void => {
    done_bytes += bytes;
    options.onProgress?.(done_bytes, total_bytes);
  };
  for (const plan of plans) {
    for (const manifest of plan.manifests) {
      summary.bytes_checked += checkDataFile(plan.folder, manifest, summary.bad, tick, options.signal);
      summary.backups_checked += 1;
    }
  }
  if (options.against_export !== undefined) {
    const compared = await compareWithExport(options, options.volume as string, summary.bad);
    summary.export_compared = { volume: options.volume as string, point: compared.point, uri: options.against_export, bytes: compared.bytes };
  }
  return summary;
}

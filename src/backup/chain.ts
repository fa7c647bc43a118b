// A point of a volume's backup history and how to read it: the full backup
// it rests on and the incrementals applied on top, oldest first. Reading a
// range of the point reads the full backup's file, then overlays the
// extents of each incremental that cover the range: the newest write wins,
// as it did on the volume.

import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { UblksnapError, fromSystemError } from '../shared/errors';
import type { VolumeBackups } from './backup-dir';
import { seqText } from './backup-dir';
import type { Extent, Manifest } from './manifest';

/** A chain longer than this is a loop in hand-edited manifests, not a history (seq only grows). */
const CHAIN_LENGTH_MAX = 1_000_000;

/** The manifests that make point `point` (default: the newest complete backup), full first. */
export function resolveChain(backups: VolumeBackups, point?: number): Manifest[] {
  const by_seq = new Map(backups.complete.map((manifest) => [manifest.seq, manifest]));
  const seqs = backups.complete.map((manifest) => seqText(manifest.seq)).join(', ') || 'none';
  const last = backups.complete[backups.complete.length - 1];
  if (last === undefined) throw new UblksnapError('ENOENT', `no complete backup of ${backups.volume} in ${backups.folder}`);
  const top = point === undefined ? last : by_seq.get(point);
  if (top === undefined) throw new UblksnapError('ENOENT', `no complete backup ${seqText(point as number)} of ${backups.volume} (complete: ${seqs})`);
  const chain: Manifest[] = [top];
  let current = top;
  while (current.kind === 'incremental') {
    const base = by_seq.get(current.base_seq as number);
    if (base === undefined) {
      throw new UblksnapError('ENOENT', `backup ${seqText(current.seq)} of ${backups.volume} rests on ${seqText(current.base_seq as number)}, which is missing or incomplete`);
    }
    if (base.seq >= current.seq || chain.length >= CHAIN_LENGTH_MAX) throw new UblksnapError('EINVAL', `backup ${seqText(current.seq)} of ${backups.volume}: base_seq does not go back in time`);
    if (base.generation_id !== current.generation_id || base.size_bytes !== current.size_bytes) {
      throw new UblksnapError('EINVAL', `backup ${seqText(current.seq)} of ${backups.volume}: its base ${seqText(base.seq)} has another generation or size`);
    }
    chain.unshift(base);
    current = base;
  }
  return chain;
}

/** Index of the first extent that ends after offset (extents sorted and disjoint). */
function firstExtentAfter(extents: readonly Extent[], offset: number): number {
  let low = 0;
  let high = extents.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    const [start, length_bytes] = extents[middle] as Extent;
    if (start + length_bytes <= offset) low = middle + 1;
    else high = middle;
  }
  return low;
}

function readExactly(fd: number, buffer: Buffer, at: number, length_bytes: number, position: number, file: string): void {
  let done = 0;
  while (done < length_bytes) {
    let got: number;
    try {
      got = readSync(fd, buffer, at + done, length_bytes - done, position + done);
    } catch (error) {
      throw fromSystemError(error, `cannot read ${file}`);
    }
    // A sparse raw file shorter than its manifest says: truncated behind our back.
    if (got === 0) throw new UblksnapError('EIO', `${file} ends before byte ${position + length_bytes} (truncated?)`);
    done += got;
  }
}

/** Reads ranges of one point of a volume's history from its backup files. */
export class ChainReader {
  private readonly fds: number[] = [];
  readonly size_bytes: number;

  constructor(readonly folder: string, readonly chain: readonly Manifest[]) {
    this.size_bytes = (chain[0] as Manifest).size_bytes;
    try {
      for (const manifest of chain) {
        const file = path.join(folder, manifest.data_file);
        try {
          this.fds.push(openSync(file, 'r'));
        } catch (error) {
          throw fromSystemError(error, `cannot open ${file}`);
        }
      }
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /** Fills out[0, length_bytes) with the point's bytes at offset. */
  read(offset: number, length_bytes: number, out: Buffer): void {
    const end = offset + length_bytes;
    this.chain.forEach((manifest, index) => {
      const fd = this.fds[index] as number;
      const file = path.join(this.folder, manifest.data_file);
      for (let at = firstExtentAfter(manifest.extents, offset); at < manifest.extents.length; at += 1) {
        const [start, extent_bytes] = manifest.extents[at] as Extent;
        if (start >= end) break;
        const from = Math.max(start, offset);
        const to = Math.min(start + extent_bytes, end);
        readExactly(fd, out, from - offset, to - from, from, file);
      }
    });
  }

  close(): void {
    for (const fd of this.fds.splice(0)) closeSync(fd);
  }
}

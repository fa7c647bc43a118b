// Copies extents of an NBD export into a sparse file at the same offsets,
// hashing each checksum piece: the data path of `ublksnap backup`.
//
//   NBD export ──READs of 256 KiB, over COPY_CONNECTIONS──► piece buffers ──sha256──► digests[piece]
//                                       └──non-zero runs──► file (pwrite)
//
// Design notes
// - Pieces are the manifest's checksum pieces (extents cut at segment
//   boundaries, ≤ COPY_PIECE_BYTES); COPY_DEPTH workers each read one piece
//   as COPY_READ_BYTES READs at once, so the server's I/O actors stay busy;
//   replies complete in any order and each lands at its own offset.
// - Zeros are not written: the file was truncated to the volume's size,
//   its holes read as zeros, and the backup stays as sparse as the volume.
// - A rate limit (bytes per second) delays issuing, not completing: a slow
//   backup leaves the volume's users more of the disk.
// - Abort (Ctrl-C) stops issuing, waits for what is in flight, and throws
//   ECANCELED; the caller leaves the data file without a manifest.

import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { UblksnapError } from '../shared/errors';
import { MiB } from '../shared/units';
import type { Extent } from './manifest';
import { segmentPieces } from './manifest';
import type { NbdReadClient } from './nbd-client';
import { dataRuns } from './zero-runs';

/** The checksum segment: one digest per MiB keeps a manifest at ~70 bytes per MiB of data. */
export const COPY_PIECE_BYTES = 1 * MiB;
/**
 * One READ: a piece is read as two of these at once. Measured (docs/backup.md
 * "Speed"), whole backups of 512 MiB, interleaved runs: 512 KiB reads × 4
 * pieces took 2.3-3.0 s, 256 KiB × 8 pieces 2.9-4.1 s, 1 MiB × 8 pieces
 * 4.6-6.4 s (the daemon serves smaller requests with less waiting).
 */
export const COPY_READ_BYTES = 512 * 1024;
/** Pieces in progress (each read, hashed, written by one worker): 4 × 2 READs in flight, 4 MiB of buffers. */
export const COPY_DEPTH = 4;
/**
 * Connections to the image export: the daemon serves each connection in one
 * I/O actor (one thread), so two connections use both actors it starts at
 * least (docs/nbd.md "Threads"); the export offers multi-conn.
 */
export const COPY_CONNECTIONS = 2;
/** How often the rate limiter looks again when it holds a read back. */
const RATE_POLL_MS = 20;

export interface CopyOptions {
  /** One or more connections to the same export; reads are spread over them. */
  readonly sources: readonly NbdReadClient[];
  readonly file: FileHandle;
  /** Its name, for messages. */
  readonly file_name: string;
  readonly extents: readonly Extent[];
  readonly signal?: AbortSignal;
  /** Bytes per second; 0 or absent: as fast as the image reads. */
  readonly rate_bytes_per_s?: number;
  /** Called after each piece with the bytes done so far. */
  readonly onProgress?: (done_bytes: number) => void;
}

export interface CopyResult {
  readonly digests: string[];
  readonly copied_bytes: number;
  /** Bytes written to the file (the rest were zeros, left as holes). */
  readonly written_bytes: number;
}

export function interrupted(): UblksnapError {
  return new UblksnapError('ECANCELED', 'interrupted');
}

export async function copyExtents(options: CopyOptions): Promise<CopyResult> {
  const pieces = segmentPieces(options.extents, COPY_PIECE_BYTES);
  const digests: string[] = new Array<string>(pieces.length);
  const started_ms = Date.now();
  const rate = options.rate_bytes_per_s ?? 0;
  let issued_bytes = 0;
  let done_bytes = 0;
  let written_bytes = 0;
  let next_index = 0;
  let first_error: unknown = null;

  async function copyPiece(index: number, source: NbdReadClient, buffer: Buffer): Promise<void> {
    const [offset, length_bytes] = pieces[index] as Extent;
    const data = buffer.subarray(0, length_bytes);
    const reads: Array<Promise<Buffer>> = [];
    for (let at = 0; at < length_bytes; at += COPY_READ_BYTES) {
      const read_bytes = Math.min(COPY_READ_BYTES, length_bytes - at);
      reads.push(source.read(offset + at, read_bytes, data.subarray(at, at + read_bytes)));
    }
    await Promise.all(reads);
    digests[index] = createHash('sha256').update(data).digest('hex');
    for (const [start, end] of dataRuns(data)) {
      try {
        await options.file.write(data, start, end - start, offset + start);
      } catch (error) {
        throw new UblksnapError((error as NodeJS.ErrnoException).code === 'ENOSPC' ? 'ENOSPC' : 'EIO',
          `cannot write ${options.file_name} at ${offset + start}: ${(error as Error).message}`);
      }
      written_bytes += end - start;
    }
    done_bytes += length_bytes;
    options.onProgress?.(done_bytes);
  }

  async function worker(source: NbdReadClient): Promise<void> {
    // One buffer per worker, for all its pieces: the read lands in it, is hashed and written, then reused.
    const buffer = Buffer.allocUnsafe(COPY_PIECE_BYTES);
    while (next_index < pieces.length && first_error === null) {
      if (options.signal?.aborted) throw interrupted();
      if (rate > 0 && issued_bytes > (rate * (Date.now() - started_ms)) / 1000) {
        await new Promise((resolve) => setTimeout(resolve, RATE_POLL_MS));
        continue;
      }
      const index = next_index++;
      issued_bytes += (pieces[index] as Extent)[1];
      await copyPiece(index, source, buffer);
    }
  }

  const workers = Array.from({ length: Math.min(COPY_DEPTH, Math.max(1, pieces.length)) }, (_, at) => worker(options.sources[at % options.sources.length] as NbdReadClient).catch((error: unknown) => {
    first_error ??= error;
  }));
  await Promise.all(workers);
  if (first_error !== null) throw first_error;
  if (options.signal?.aborted) throw interrupted();
  return { digests, copied_bytes: done_bytes, written_bytes };
}

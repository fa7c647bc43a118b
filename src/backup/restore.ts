// `ublksnap restore`: rebuilds a volume image, at one point of its backup
// history, into a file or onto a block device. It needs no daemon.
//
// A file target is created (or truncated) and given the volume's size, and
// only non-zero data is written: the result is as sparse as the backup. A
// block device keeps whatever it held, so every byte is written, zeros too;
// it must be at least the volume's size, and not in use (mounted, held).

import { closeSync, constants, fdatasyncSync, ftruncateSync, openSync, statSync, writeSync } from 'node:fs';
import { UblksnapError, fromSystemError } from '../shared/errors';
import { readVolumeBackups } from './backup-dir';
import { ChainReader, resolveChain } from './chain';
import { COPY_PIECE_BYTES } from './image-copier';
import { dataRuns } from './zero-runs';
import { blockDeviceInfo } from '../native/index';

export interface RestoreOptions {
  readonly dir: string;
  readonly volume: string;
  readonly target: string;
  readonly point?: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: (done_bytes: number, total_bytes: number) => void;
}

export interface RestoreSummary {
  volume: string;
  point: number;
  chain: number[];
  target: string;
  target_kind: 'file' | 'block';
  size_bytes: number;
  written_bytes: number;
}

function writeAll(fd: number, data: Buffer, start: number, end: number, position: number, target: string): void {
  let done = start;
  while (done < end) {
    try {
      done += writeSync(fd, data, done, end - done, position + (done - start));
    } catch (error) {
      throw fromSystemError(error, `cannot write ${target}`);
    }
  }
}

export function runRestore(options: RestoreOptions): RestoreSummary {
  const backups = readVolumeBackups(options.dir, options.volume);
  const chain = resolveChain(backups, options.point);
  const reader = new ChainReader(backups.folder, chain);
  const size_bytes = reader.size_bytes;
  let existing: ReturnType<typeof statSync> | null = null;
  try {
    existing = statSync(options.target);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(error, `cannot stat ${options.target}`);
  }
  const is_block = existing?.isBlockDevice() === true;
  if (existing !== null && !is_block && !existing.isFile()) {
    reader.close();
    throw new UblksnapError('EINVAL', `${options.target} is neither a regular file nor a block device`);
  }
  let fd = -1;
  try {
    try {
      // A block device is opened O_EXCL: the kernel refuses (EBUSY) one that is mounted or held by
      // another exclusive opener (a daemon serving it), which a restore must never overwrite.
      fd = is_block ? openSync(options.target, constants.O_RDWR | constants.O_EXCL) : openSync(options.target, 'w', 0o644);
    } catch (error) {
      throw fromSystemError(error, `cannot open ${options.target}`);
    }
    if (is_block) {
      const device_bytes = blockDeviceInfo(fd).size_bytes;
      if (device_bytes < size_bytes) throw new UblksnapError('ENOSPC', `${options.target} holds ${device_bytes} bytes, the volume needs ${size_bytes}`);
    } else {
      ftruncateSync(fd, size_bytes);
    }
    const buffer = Buffer.alloc(COPY_PIECE_BYTES);
    let written_bytes = 0;
    for (let offset = 0; offset < size_bytes; offset += COPY_PIECE_BYTES) {
      if (options.signal?.aborted) throw new UblksnapError('ECANCELED', `interrupted; ${options.target} is incomplete`);
      const length_bytes = Math.min(COPY_PIECE_BYTES, size_bytes - offset);
      const piece = buffer.subarray(0, length_bytes);
      piece.fill(0);
      reader.read(offset, length_bytes, piece);
      const runs: Array<[number, number]> = is_block ? [[0, length_bytes]] : dataRuns(piece);
      for (const [start, end] of runs) {
        writeAll(fd, piece, start, end, offset + start, options.target);
        written_bytes += end - start;
      }
      options.onProgress?.(offset + length_bytes, size_bytes);
    }
    fdatasyncSync(fd);
    return {
      volume: options.volume, point: (chain[chain.length - 1] as { seq: number }).seq, chain: chain.map((manifest) => manifest.seq),
      target: options.target, target_kind: is_block ? 'block' : 'file', size_bytes, written_bytes,
    };
  } finally {
    if (fd !== -1) closeSync(fd);
    reader.close();
  }
}

// How copy-before-write saves a volume's chunks in one snapshot: by
// cloning the chunk's extents into the difference storage (`reflink`), or
// by reading the chunk and writing it (`copy`). Decided once per volume at
// take, by trying a clone, and reported in `status` with the reason when
// the copy path is taken.
//
// Cloning needs what FICLONERANGE needs: a regular-file volume and a
// file (or O_TMPFILE) storage on one filesystem with shared extents (XFS
// with reflink=1, Btrfs), and chunk and storage slots aligned to that
// filesystem's block. Everything else (block devices, tmpfs, ext4, two
// filesystems) copies, as before.
//
// The probe clones the volume's first block into a fresh O_TMPFILE beside
// the storage rather than into the storage itself: the storage's slots
// belong to the counters, and the probe must leave no trace.

import { closeSync } from 'node:fs';
import path from 'node:path';
import { cloneRange, openTmpfile, type FileInfo } from '../native';
import { STORAGE_SLOT_ALIGN_BYTES } from '../cow/diff-area';
import type { DiffStorage } from './diff-storage';

export type CowPath =
  | { kind: 'reflink' }
  | { kind: 'copy'; reason: string };

export interface ProbedVolume {
  fd: number;
  info: FileInfo;
}

export function chooseCowPath(volume: ProbedVolume, storage: DiffStorage, chunk_bytes: number): CowPath {
  if (volume.info.kind !== 'file') return copy('the volume is a block device');
  if (storage.kind === 'block') return copy('the difference storage is a block device');
  if (volume.info.dev_major !== storage.info.dev_major || volume.info.dev_minor !== storage.info.dev_minor) {
    return copy('the volume and the difference storage are on different filesystems');
  }
  const block_bytes = storage.info.block_bytes;
  if (!(block_bytes > 0) || STORAGE_SLOT_ALIGN_BYTES % block_bytes !== 0 || chunk_bytes % block_bytes !== 0) {
    return copy(`the filesystem block (${block_bytes} bytes) does not divide the chunk and the storage slots`);
  }
  const probe_dir = storage.kind === 'tmpfile' ? storage.path : path.dirname(storage.path);
  let probe_fd: number;
  try {
    probe_fd = openTmpfile(probe_dir);
  } catch (error) {
    return copy(`no probe file beside the storage (${codeOf(error)})`);
  }
  try {
    // A volume shorter than a block is cloned to its end, which the kernel allows unaligned.
    const length_bytes = Math.min(block_bytes, volume.info.size_bytes);
    if (length_bytes === 0) return copy('the volume file is empty');
    cloneRange(probe_fd, 0, volume.fd, 0, length_bytes);
    return { kind: 'reflink' };
  } catch (error) {
    return copy(`the filesystem does not clone ranges (${codeOf(error)})`);
  } finally {
    closeSync(probe_fd);
  }
}

function copy(reason: string): CowPath {
  return { kind: 'copy', reason };
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : String(error);
}

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
// The probe clones one block between two fresh O_TMPFILEs beside the
// storage, never from the volume nor into the storage: the storage's slots
// belong to the counters, and a block of the volume shared with a probe
// file (until the filesystem frees the closed file, in the background)
// would move at the volume's next write there, and XFS's copy-on-write
// reservation around it would move the writes after it too, splitting the
// volume's extent at every take.

import { closeSync, ftruncateSync } from 'node:fs';
import path from 'node:path';
import { cloneRange, openTmpfile, type FileInfo } from '../native';
import { STORAGE_SLOT_ALIGN_BYTES } from '../cow/diff-area';
import type { DiffStorage } from './diff-storage';

export type CowPath =
  | { kind: 'reflink' }
  | { kind: 'copy'; reason: string };

export interface ProbedVolume {
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
  if (volume.info.size_bytes === 0) return copy('the volume file is empty');
  const probe_dir = storage.kind === 'tmpfile' ? storage.path : path.dirname(storage.path);
  const probes: number[] = [];
  try {
    for (let i = 0; i < 2; i += 1) probes.push(openTmpfile(probe_dir));
  } catch (error) {
    probes.forEach((fd) => closeSync(fd));
    return copy(`no probe file beside the storage (${codeOf(error)})`);
  }
  const [source, target] = probes as [number, number];
  try {
    // A hole clones as well as data: the filesystem's support is what is asked.
    ftruncateSync(source, block_bytes);
    cloneRange(target, 0, source, 0, block_bytes);
    return { kind: 'reflink' };
  } catch (error) {
    return copy(`the filesystem does not clone ranges (${codeOf(error)})`);
  } finally {
    probes.forEach((fd) => closeSync(fd));
  }
}

function copy(reason: string): CowPath {
  return { kind: 'copy', reason };
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : String(error);
}

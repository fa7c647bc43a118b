// Durable state files (the daemon's volumes and change maps, a frontend's device records): a reader after any crash, power
// cut included, finds either the old content or the new, never a mix and
// never an empty file.
//
//   write:  FILE.PID.tmp (O_EXCL, mode 0600) ─ write ─ fsync ─ close
//           rename over FILE ─ fsync the directory (the rename itself)
//   read:   the whole file, refused past a size bound; ENOENT is "none"
//
// The temporary file lives in FILE's directory, so the rename never
// crosses a filesystem. A temporary left by a crash is removed by the next
// write of the same file, and ignored by readers.

import { closeSync, constants, fstatSync, fsyncSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { UblksnapError } from '../shared/errors';

/** State files hold a user's volumes list and change maps: owner only. */
export const STATE_FILE_MODE = 0o600;

function temporaryOf(file: string): string {
  return `${file}.${process.pid}.tmp`;
}

/** fsync on a directory makes the entries changed in it (a rename, an unlink) durable. */
export function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Replaces file with the concatenation of pieces, durably (see the top of this file). */
export function writeFileDurably(file: string, pieces: readonly Uint8Array[]): void {
  const temporary = temporaryOf(file);
  // ENOENT: no temporary left behind, the normal case; anything else is a real failure.
  try {
    unlinkSync(temporary);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, STATE_FILE_MODE);
  try {
    for (const piece of pieces) {
      let written_bytes = 0;
      while (written_bytes < piece.length) written_bytes += writeSync(fd, piece, written_bytes, piece.length - written_bytes);
    }
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temporary);
    throw error;
  }
  closeSync(fd);
  renameSync(temporary, file);
  fsyncDirectory(path.dirname(file));
}

/** Removes file durably; a missing file is fine. */
export function removeFileDurably(file: string): void {
  try {
    unlinkSync(file);
  } catch (error) {
    // ENOENT: nothing to remove.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  fsyncDirectory(path.dirname(file));
}

/** The whole file, or null when it does not exist. EFBIG past bytes_max: a state file that big is not ours. */
export function readStateFile(file: string, bytes_max: number): Buffer | null {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    // ENOENT: never written (or removed), the caller's normal case.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw new UblksnapError('EINVAL', `${file} is not a regular file`);
    if (stats.size > bytes_max) throw new UblksnapError('EFBIG', `${file} holds ${stats.size} bytes, more than the ${bytes_max} a state file may`);
    const content = Buffer.alloc(stats.size);
    let read_bytes = 0;
    while (read_bytes < content.length) {
      const n = readSync(fd, content, read_bytes, content.length - read_bytes, read_bytes);
      if (n === 0) break;
      read_bytes += n;
    }
    return content.subarray(0, read_bytes);
  } finally {
    closeSync(fd);
  }
}

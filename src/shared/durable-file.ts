// Files that must survive a crash or a power cut whole: either the old
// content or the new one, never a torn mix, and never a rename the
// directory forgot. The classic sequence: write a temporary file beside the
// target, fsync it, rename it over the target, fsync the directory.

import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

/** State files are private: they name volumes and devices. */
const PRIVATE_FILE_MODE = 0o600;

/** Replaces file with data atomically and durably. */
export function writeFileDurably(file: string, data: string | Uint8Array): void {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  const fd = openSync(temporary, 'w', PRIVATE_FILE_MODE);
  try {
    let written = 0;
    while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(temporary, { force: true });
    throw error;
  }
  closeSync(fd);
  renameSync(temporary, file);
  syncDirectory(path.dirname(file));
}

/** Removes file (if present) and makes the removal durable. */
export function removeFileDurably(file: string): void {
  rmSync(file, { force: true });
  syncDirectory(path.dirname(file));
}

/** A rename or unlink is durable only once its directory is synced. */
export function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

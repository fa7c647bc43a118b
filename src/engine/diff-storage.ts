// Opening a difference storage, the one place old chunk data goes for a
// snapshot, shared by all its volumes. Three kinds, as blksnap has:
//
//   regular file   opened exclusively; grows with fallocate by
//                  diff_storage_minimum steps up to the limit. Created if
//                  missing (and then removed at destroy).
//   directory      an unnamed O_TMPFILE inside it, grown like a file; it
//                  vanishes with its last descriptor, even after a crash.
//                  A missing path that ends in '/' is created as a
//                  directory (and kept: it may hold other things later).
//   block device   opened exclusively; its whole size, fixed.
//
// A storage must not live on a volume of its own snapshot: copying a
// chunk would write the volume being copied. We refuse a storage that is a
// volume, lives on a filesystem whose device is a volume, or lives on a
// loop device backed by a volume file.

import { close as closeCallback, closeSync, mkdirSync, openSync, readFileSync, statfsSync, statSync, unlinkSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { blockDeviceInfo, fileInfo, openExclusive, openTmpfile, type FileInfo } from '../native';
import { UblksnapError, fromSystemError } from '../shared/errors';
import { StorageCounters } from '../shared/storage-counters';
import { SECTOR_BYTES } from '../shared/units';

const closeAsync = promisify(closeCallback);

/** Major number of loop devices (Documentation/admin-guide/devices.txt). */
const LOOP_MAJOR = 7;
const NEW_FILE_MODE = 0o600;
/** statfs f_type of tmpfs: a storage there is memory, which is warmed after growth (actors/warm.ts). */
const TMPFS_MAGIC = 0x01021994;
/** A directory made for the storage holds only our unnamed temporary files: no one else needs in. */
const NEW_DIRECTORY_MODE = 0o700;

export type DiffStorageKind = 'file' | 'tmpfile' | 'block';

export interface VolumeIdentity {
  path: string;
  info: FileInfo;
}

export class DiffStorage {
  private closed = false;

  private constructor(
    readonly kind: DiffStorageKind,
    readonly path: string,
    readonly fd: number,
    readonly info: FileInfo,
    readonly counters: StorageCounters,
    /** The path did not exist: this storage made the file (removed at close) or the directory (kept). */
    readonly created_here: boolean,
  ) {}

  static open(storage_path: string, limit_bytes: number): DiffStorage {
    if (typeof storage_path !== 'string' || storage_path.length === 0) {
      throw new UblksnapError('EINVAL', 'the difference storage needs a path (file, directory or block device)');
    }
    if (!Number.isSafeInteger(limit_bytes) || limit_bytes < SECTOR_BYTES) {
      throw new UblksnapError('EINVAL', `the storage limit must be a whole number of bytes ≥ ${SECTOR_BYTES}, got ${limit_bytes}`);
    }
    const resolved = path.resolve(storage_path);
    // path.resolve drops a trailing '/', which is the one sign that a
    // missing path was meant as a directory (`-f diffdir/`).
    const wants_directory = storage_path.endsWith('/');
    const limit_sectors = Math.floor(limit_bytes / SECTOR_BYTES);
    let stats;
    try {
      stats = statSync(resolved, { throwIfNoEntry: false });
    } catch (error) {
      throw fromSystemError(error, `difference storage ${resolved}`);
    }
    try {
      if (stats === undefined) {
        return wants_directory ? DiffStorage.createDirectory(resolved, limit_sectors) : DiffStorage.createFile(resolved, limit_sectors);
      }
      if (stats.isDirectory()) return DiffStorage.openTmpfile(resolved, limit_sectors, false);
      if (wants_directory) {
        throw new UblksnapError('EINVAL', `difference storage ${storage_path} ends in '/' (a directory) but ${resolved} is not a directory`);
      }
      if (stats.isBlockDevice()) {
        const fd = openExclusive(resolved, { write: true, direct: false });
        const size_sectors = Math.floor(blockDeviceInfo(fd).size_bytes / SECTOR_BYTES);
        return new DiffStorage('block', resolved, fd, fileInfo(fd), StorageCounters.create(size_sectors, size_sectors, false), false);
      }
      if (stats.isFile()) {
        const fd = openExclusive(resolved, { write: true, direct: false });
        const size_sectors = Math.floor(stats.size / SECTOR_BYTES);
        const counters = StorageCounters.create(size_sectors, Math.max(limit_sectors, size_sectors), true, onTmpfs(resolved));
        return new DiffStorage('file', resolved, fd, fileInfo(fd), counters, false);
      }
    } catch (error) {
      throw fromSystemError(error, `difference storage ${resolved}`);
    }
    throw new UblksnapError('EINVAL', `difference storage ${resolved} is neither a file, a directory nor a block device`);
  }

  private static openTmpfile(resolved: string, limit_sectors: number, created_here: boolean): DiffStorage {
    const fd = openTmpfile(resolved);
    const counters = StorageCounters.create(0, limit_sectors, true, onTmpfs(resolved));
    return new DiffStorage('tmpfile', resolved, fd, fileInfo(fd), counters, created_here);
  }

  /** `-f DIR/` for a DIR that does not exist yet: made with its parent required, as a file's is. */
  private static createDirectory(resolved: string, limit_sectors: number): DiffStorage {
    const parent = path.dirname(resolved);
    if (!statSync(parent, { throwIfNoEntry: false })?.isDirectory()) {
      throw new UblksnapError('ENOENT', `difference storage ${resolved}/: directory ${parent} does not exist`);
    }
    mkdirSync(resolved, { mode: NEW_DIRECTORY_MODE });
    return DiffStorage.openTmpfile(resolved, limit_sectors, true);
  }

  private static createFile(resolved: string, limit_sectors: number): DiffStorage {
    const parent = path.dirname(resolved);
    if (!statSync(parent, { throwIfNoEntry: false })?.isDirectory()) {
      throw new UblksnapError('ENOENT', `difference storage ${resolved}: directory ${parent} does not exist`);
    }
    closeSync(openSync(resolved, 'wx', NEW_FILE_MODE));
    try {
      const fd = openExclusive(resolved, { write: true, direct: false });
      return new DiffStorage('file', resolved, fd, fileInfo(fd), StorageCounters.create(0, limit_sectors, true, onTmpfs(resolved)), true);
    } catch (error) {
      unlinkSync(resolved);
      throw error;
    }
  }

  /** Throws EINVAL when this storage lies on one of the given volumes. */
  refuseIfOn(volumes: VolumeIdentity[]): void {
    for (const volume of volumes) {
      const reason = this.liesOn(volume);
      if (reason) {
        throw new UblksnapError('EINVAL', `difference storage ${this.path} ${reason} ${volume.path}, a volume of this snapshot`);
      }
    }
  }

  private liesOn(volume: VolumeIdentity): string | null {
    const mine = this.info;
    const theirs = volume.info;
    if (theirs.kind === 'block') {
      if (mine.kind === 'block' && mine.rdev_major === theirs.rdev_major && mine.rdev_minor === theirs.rdev_minor) return 'is';
      if (mine.kind !== 'block' && mine.dev_major === theirs.rdev_major && mine.dev_minor === theirs.rdev_minor) return 'lives on';
      return null;
    }
    if (mine.kind !== 'block' && mine.dev_major === theirs.dev_major && mine.dev_minor === theirs.dev_minor && mine.ino === theirs.ino) {
      return 'is';
    }
    // A filesystem on a loop device whose backing file is the volume.
    const loop_major = mine.kind === 'block' ? mine.rdev_major : mine.dev_major;
    const loop_minor = mine.kind === 'block' ? mine.rdev_minor : mine.dev_minor;
    if (loop_major === LOOP_MAJOR) {
      const backing = readLoopBackingFile(loop_minor);
      if (backing !== null && path.resolve(backing) === path.resolve(volume.path)) return 'lives on a loop device backed by';
    }
    return null;
  }

  /**
   * Closes the storage and removes a file it created. Async because the
   * last close or the unlink frees every page of the storage: on tmpfs a
   * 1 GiB storage took ~270 ms, which on the event loop stalled every
   * other client of the daemon; libuv's thread pool does it instead.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await closeAsync(this.fd);
    // A directory we made stays: removing it would race whatever else the user put there.
    if (this.created_here && this.kind === 'file') {
      try {
        await unlink(this.path);
      } catch {
        // Someone removed or renamed it already: nothing of ours is left.
      }
    }
  }
}

function readLoopBackingFile(minor: number): string | null {
  try {
    return readFileSync(`/sys/dev/block/${LOOP_MAJOR}:${minor}/loop/backing_file`, 'utf8').trim();
  } catch {
    // Not a bound loop device (or no sysfs): it cannot be backed by a volume.
    return null;
  }
}

/** True when the file or directory at `resolved` lies on tmpfs. */
function onTmpfs(resolved: string): boolean {
  return statfsSync(resolved).type === TMPFS_MAGIC;
}

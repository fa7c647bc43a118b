// Which attached volume a client's `-d` names. Upstream's tool opens the
// path it is given, so any path naming the device works there: a symlink
// (/dev/disk/by-id/…), /dev/block/MAJ:MIN, /dev/mapper/…. Here a path names
// a volume when it is the same thing as the volume, compared by identity,
// not by spelling:
//
//   -d PATH ──stat──► block device (rdev) ──► a block-device volume with that rdev
//                 │                       ├─► the device a frontend serves the volume as (/dev/ublkbN)
//                 │                       └─► a loop device over a file volume (offset 0)
//                 └──► regular file (dev, ino) ──► a file volume that is that inode
//
// A bare word (no '/') is a volume name, left to the engine. A path that
// names no volume answers null: attach-on-demand (snapshot_create,
// snapshot_add) attaches it, every other command says ESRCH with the path
// the user gave.

import { readFileSync, realpathSync, statSync, type BigIntStats } from 'node:fs';
import path from 'node:path';
import type { VolumeInfo } from '../engine/api';
import type { Frontend } from '../frontends/frontend';

/** sysfs describes a loop device's backing file here: /sys/dev/block/MAJ:MIN/loop/{backing_file,offset}. */
const SYSFS_DEV_BLOCK = '/sys/dev/block';

interface Identity {
  kind: 'block' | 'file';
  /** rdev for a block device, "dev:ino" for a file. */
  key: string;
}

/** The identity of what path names (following symlinks), or null when it is neither a file nor a block device. */
export function identityOf(target: string): Identity | null {
  let stats: BigIntStats;
  try {
    stats = statSync(target, { bigint: true });
  } catch {
    // ENOENT, EACCES, ENOTDIR: nothing we can compare; the caller reports the path as unknown.
    return null;
  }
  if (stats.isBlockDevice()) return { kind: 'block', key: `rdev:${stats.rdev}` };
  if (stats.isFile()) return { kind: 'file', key: `inode:${stats.dev}:${stats.ino}` };
  return null;
}

/** MAJ:MIN of a device number as Linux packs it (new_encode_dev), the form sysfs uses. */
function majorMinor(rdev: bigint): string {
  const major = (rdev >> 8n) & 0xfffn;
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xfff00n);
  return `${major}:${minor}`;
}

/**
 * The file a loop device reads at offset 0, or null (not a loop device, or
 * it starts inside its file, so its sectors are not the file's sectors).
 */
function loopBackingFile(target: string): string | null {
  let stats: BigIntStats;
  try {
    stats = statSync(target, { bigint: true });
  } catch {
    return null;
  }
  if (!stats.isBlockDevice()) return null;
  const loop_dir = path.join(SYSFS_DEV_BLOCK, majorMinor(stats.rdev), 'loop');
  try {
    const offset = readFileSync(path.join(loop_dir, 'offset'), 'utf8').trim();
    if (offset !== '0') return null;
    // The kernel appends " (deleted)" when the file is gone; then it names nothing.
    const backing = readFileSync(path.join(loop_dir, 'backing_file'), 'utf8').trim();
    return backing.endsWith(' (deleted)') ? null : backing;
  } catch {
    // ENOENT: not a loop device (or one with no file bound).
    return null;
  }
}

/** Every identity a volume is known by: its own path and each device a frontend serves it as. */
function identitiesOf(volume: VolumeInfo, frontends: readonly Frontend[]): string[] {
  const keys: string[] = [];
  const own = identityOf(volume.path);
  if (own) keys.push(own.key);
  for (const frontend of frontends) {
    // An absolute address is a device node (/dev/ublkbN); an NBD URI is not a path.
    const address = frontend.addressOf(volume.name);
    if (address === null || !path.isAbsolute(address)) continue;
    const served = identityOf(address);
    if (served) keys.push(served.key);
  }
  return keys;
}

/**
 * The name of the attached volume that the path `device` names, or null
 * when it names none. A bare name is returned as it is, for the engine to
 * resolve (and to refuse with its own message when unknown).
 */
export function findVolume(device: string, volumes: readonly VolumeInfo[], frontends: readonly Frontend[]): string | null {
  if (!device.includes('/')) return device;
  const spelled = volumes.find((volume) => volume.path === device);
  if (spelled) return spelled.name;
  let real = device;
  try {
    real = realpathSync(device);
  } catch {
    // ENOENT: a path that is not there names no volume.
    return null;
  }
  const by_real_path = volumes.find((volume) => volume.path === real);
  if (by_real_path) return by_real_path.name;
  const wanted = identityOf(real);
  if (wanted === null) return null;
  for (const volume of volumes) {
    if (identitiesOf(volume, frontends).includes(wanted.key)) return volume.name;
  }
  // A loop device over a volume's file: the same sectors under another name.
  const backing = loopBackingFile(real);
  if (backing !== null) {
    const file = identityOf(backing);
    const volume = file ? volumes.find((candidate) => identityOf(candidate.path)?.key === file.key) : undefined;
    if (volume) return volume.name;
  }
  return null;
}

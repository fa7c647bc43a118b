// markdirtyblock --file FILE: the sectors FILE occupies, on the device that
// holds its file system, as upstream's tool finds them (FS_IOC_FIEMAP), and
// which path names that device for the daemon.
//
// The file system may sit on a volume's export rather than on the volume
// itself; the daemon recognises the device by identity (daemon/
// device-lookup.ts), and this side walks what lies between, through sysfs:
//
//   FILE ──st_dev──► /sys/dev/block/MAJ:MIN
//                      ├─ a partition?  add its start, go to the whole disk
//                      ├─ a loop device? add its offset; the device is its backing file
//                      └─ otherwise      the device is /dev/DEVNAME (uevent)
//
// Extents come in bytes on that device; a range covers every sector an
// extent touches (an inline or unaligned extent marks its whole sectors).

import { closeSync, existsSync, openSync, readFileSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { UblksnapError, fromSystemError } from '../shared/errors';
import { SECTOR_BYTES } from '../shared/units';
import type { FileExtent } from '../native';

const SYSFS_DEV_BLOCK = '/sys/dev/block';

export interface SectorRange {
  sector: number;
  count: number;
}

export interface FileRanges {
  /** The path the daemon resolves to a volume: a device node, or a loop device's backing file. */
  device: string;
  ranges: SectorRange[];
}

interface Placement {
  device: string;
  offset_bytes: number;
}

function readSysfs(file: string): string {
  return readFileSync(file, 'utf8').trim();
}

/** MAJ:MIN of a device number as Linux packs it (new_encode_dev), the form sysfs uses. */
export function majorMinor(dev: number): string {
  const major = (dev >>> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >>> 12) & 0xfff00);
  return `${major}:${minor}`;
}

/** Where the file system holding a file with st_dev `dev` sits: the device to name, and the byte offset to add. */
export function placementOf(dev: number, file: string): Placement {
  let device_dir = path.join(SYSFS_DEV_BLOCK, majorMinor(dev));
  if (!existsSync(device_dir)) {
    throw new UblksnapError('ENODEV', `${file} is on a file system with no block device under it (tmpfs, NFS, a btrfs subvolume…): it cannot be on a volume`);
  }
  let offset_bytes = 0;
  if (existsSync(path.join(device_dir, 'partition'))) {
    // A partition's start is in 512-byte sectors whatever the device's block size.
    offset_bytes += Number(readSysfs(path.join(device_dir, 'start'))) * SECTOR_BYTES;
    device_dir = path.dirname(realpathSync(device_dir));
  }
  const loop_dir = path.join(device_dir, 'loop');
  if (existsSync(path.join(loop_dir, 'backing_file'))) {
    offset_bytes += Number(readSysfs(path.join(loop_dir, 'offset')));
    return { device: readSysfs(path.join(loop_dir, 'backing_file')), offset_bytes };
  }
  const devname = /^DEVNAME=(.+)$/m.exec(readFileSync(path.join(device_dir, 'uevent'), 'utf8'))?.[1];
  if (devname === undefined) throw new UblksnapError('ENODEV', `${file}: the device under its file system has no name in sysfs`);
  return { device: path.join('/dev', devname), offset_bytes };
}

/** Sector ranges covering each extent, shifted by offset_bytes, adjacent ones merged. */
export function extentsToRanges(extents: readonly FileExtent[], offset_bytes: number, unknown_flags: number, file: string): SectorRange[] {
  const ranges: SectorRange[] = [];
  for (const extent of extents) {
    if ((extent.flags & unknown_flags) !== 0) {
      throw new UblksnapError('EBUSY', `${file}: the file system has not placed part of the file yet (at byte ${extent.logical_bytes}); sync and try again`);
    }
    const start_bytes = extent.physical_bytes + offset_bytes;
    const sector = Math.floor(start_bytes / SECTOR_BYTES);
    const end_sector = Math.ceil((start_bytes + extent.length_bytes) / SECTOR_BYTES);
    const last = ranges[ranges.length - 1];
    if (last && last.sector + last.count >= sector && sector >= last.sector) {
      last.count = Math.max(last.count, end_sector - last.sector);
    } else {
      ranges.push({ sector, count: end_sector - sector });
    }
  }
  return ranges;
}

/** The sectors FILE occupies and the device they are on (see the drawing above). */
export function fileRanges(file: string): FileRanges {
  // Loaded here: the other commands need no addon.
  const native = require('../native') as typeof import('../native');
  let fd = -1;
  try {
    const stats = statSync(file);
    if (!stats.isFile()) throw new UblksnapError('EINVAL', `--file: ${file} is not a regular file`);
    fd = openSync(file, 'r');
    const extents = native.fileExtents(fd);
    const placement = placementOf(stats.dev, file);
    const unknown_flags = native.FIEMAP_EXTENT_UNKNOWN | native.FIEMAP_EXTENT_DELALLOC;
    return { device: placement.device, ranges: extentsToRanges(extents, placement.offset_bytes, unknown_flags, file) };
  } catch (error) {
    if (error instanceof UblksnapError) throw error;
    throw fromSystemError(error, `--file ${file}`);
  } finally {
    if (fd !== -1) closeSync(fd);
  }
}

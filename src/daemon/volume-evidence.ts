// Evidence that nothing wrote a volume while the daemon was down: taken at
// a clean stop (after the last write, the volume closed) and again at the
// next attach. A saved CBT map is trusted only when the two are equal; any
// difference starts a new generation, named by the first field that moved.
//
//   regular file   dev, ino   (the same file, not a copy renamed into place)
//                  size       (truncate, append)
//                  mtime_ns   (any write(2), mmap store, truncate)
//                  ctime_ns   (the same, and what touch -m cannot hide)
//   block device   boot_id    (/proc/sys/kernel/random/boot_id: counters
//                              restart at boot, so another boot is no proof)
//                  rdev       (the same device number)
//                  sectors_written  (/sys/dev/block/MAJ:MIN/stat, field 7:
//                              the kernel counts every sector written to the
//                              device by anyone; the daemon fsyncs the device
//                              before reading it, so no writeback of its own
//                              is still to come)
//                  size_sectors     (/sys/dev/block/MAJ:MIN/size)
//
// Limits, stated so nobody relies on more: a file's timestamps have the
// filesystem's granularity (a write in the same clock tick as the stop's
// stat could go unseen on a coarse-timestamp kernel), and a block device's
// counter sees writes through that device only (a loop device's backing
// file written directly does not move the loop device's counter).

import { closeSync, constants, fsyncSync, openSync, readFileSync, statSync } from 'node:fs';

const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';
/** Field 7 of a block device's stat file (0-based 6): sectors written. */
const STAT_SECTORS_WRITTEN_FIELD = 6;

export interface FileEvidence {
  kind: 'file';
  dev: string;
  ino: string;
  size: string;
  mtime_ns: string;
  ctime_ns: string;
}

export interface BlockEvidence {
  kind: 'block';
  boot_id: string;
  rdev: string;
  sectors_written: string;
  size_sectors: string;
}

export type VolumeEvidence = FileEvidence | BlockEvidence;

/** Linux's dev_t encoding (the kernel's new_encode_dev): major 12+ bits, minor 20 bits interleaved. */
function majorMinor(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

function sysfsBlockFile(rdev: bigint, name: string): string {
  return `/sys/dev/block/${majorMinor(rdev)}/${name}`;
}

/** Writes of the block device still in the page cache reach the device (and its counter) now. */
function flushBlockDevice(device_path: string): void {
  const fd = openSync(device_path, constants.O_RDONLY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * The evidence of the volume at volume_path now. Throws (ENOENT, EACCES)
 * when it cannot be read: the caller treats that as "no proof".
 * flush: at a clean stop, push the daemon's own writes to the device first.
 */
export function collectEvidence(volume_path: string, options: { flush: boolean }): VolumeEvidence {
  const stats = statSync(volume_path, { bigint: true });
  if (stats.isBlockDevice()) {
    if (options.flush) flushBlockDevice(volume_path);
    const fields = readFileSync(sysfsBlockFile(stats.rdev, 'stat'), 'utf8').trim().split(/\s+/);
    const sectors_written = fields[STAT_SECTORS_WRITTEN_FIELD];
    if (sectors_written === undefined || !/^\d+$/.test(sectors_written)) throw new Error(`${sysfsBlockFile(stats.rdev, 'stat')} has no sectors-written field`);
    return {
      kind: 'block',
      boot_id: readFileSync(BOOT_ID_FILE, 'utf8').trim(),
      rdev: majorMinor(stats.rdev),
      sectors_written,
      size_sectors: readFileSync(sysfsBlockFile(stats.rdev, 'size'), 'utf8').trim(),
    };
  }
  return {
    kind: 'file',
    dev: String(stats.dev),
    ino: String(stats.ino),
    size: String(stats.size),
    mtime_ns: String(stats.mtimeNs),
    ctime_ns: String(stats.ctimeNs),
  };
}

/** Field → the phrase a log line and cbtinfo show when it moved. */
const FILE_CHANGES: readonly [keyof FileEvidence, string][] = [
  ['dev', 'file replaced while the daemon was down (device)'],
  ['ino', 'file replaced while the daemon was down (inode)'],
  ['size', 'file modified while the daemon was down (size)'],
  ['mtime_ns', 'file modified while the daemon was down (mtime)'],
  ['ctime_ns', 'file modified while the daemon was down (ctime)'],
];
const BLOCK_CHANGES: readonly [keyof BlockEvidence, string][] = [
  ['boot_id', 'the machine rebooted since the clean stop (a block device\'s write counter restarts at boot)'],
  ['rdev', 'a different block device now has this path (device number)'],
  ['size_sectors', 'block device size changed while the daemon was down'],
  ['sectors_written', 'block device written while the daemon was down (sectors-written counter)'],
];

/** null when saved and now agree; else why the saved map cannot be trusted. */
export function evidenceDiffers(saved: VolumeEvidence, now: VolumeEvidence): string | null {
  if (saved.kind !== now.kind) return `volume was a ${saved.kind} at the clean stop and is a ${now.kind} now`;
  const changes = (saved.kind === 'file' ? FILE_CHANGES : BLOCK_CHANGES) as readonly [string, string][];
  for (const [field, reason] of changes) {
    if ((saved as unknown as Record<string, string>)[field] !== (now as unknown as Record<string, string>)[field]) return reason;
  }
  return null;
}

/** Checks a value read from a state file is evidence (the boundary: the file may be anything). */
export function isEvidence(value: unknown): value is VolumeEvidence {
  if (typeof value !== 'object' || value === null) return false;
  const record = value as Record<string, unknown>;
  const fields = record.kind === 'file' ? FILE_CHANGES : record.kind === 'block' ? BLOCK_CHANGES : null;
  return fields !== null && fields.every(([field]) => typeof record[field] === 'string');
}

// Who holds a block device: mounts of it, stacked devices over it (device
// mapper, md, loop…), and processes with it open. Detach and destroy refuse
// to delete a device someone holds, and name the holder, unless forced: a
// deleted device under a mounted filesystem turns every later access into
// an I/O error for its users.
//
// Read from procfs and sysfs only when asked (detach, destroy), never on
// the I/O path.

import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import path from 'node:path';
import { deviceNumber } from './stack';

/** Processes scanned for open descriptors at most: bounds the walk of /proc. */
const PROCESSES_SCANNED_MAX = 100_000;

/** One phrase per holder, e.g. "mounted on /mnt (ext4)", "pid 42 (fio)", "held by dm-0". */
export function findHolders(device_path: string): string[] {
  const mounts = mountsOf(device_path).map((mount) => `mounted on ${mount.mount_point} (${mount.fstype})`);
  return [...mounts, ...stackedOver(device_path), ...openersOf(device_path)];
}

export interface MountOfDevice {
  mount_point: string;
  fstype: string;
}

/** The mounts of the filesystem on this device (bind mounts included), in this mount namespace. */
export function mountsOf(device_path: string): MountOfDevice[] {
  let rdev: number;
  try {
    rdev = statSync(device_path).rdev;
  } catch {
    // The node is gone already: nothing can be mounted from it.
    return [];
  }
  const device_number = deviceNumber(rdev);
  const found: MountOfDevice[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    // mountinfo: id parent major:minor root mount-point options … - fstype source …
    const fields = line.split(' ');
    if (fields[2] !== device_number) continue;
    const separator = fields.indexOf('-');
    found.push({ mount_point: unescapeMountPath(fields[4] ?? '?'), fstype: fields[separator + 1] ?? '?' });
  }
  return found;
}

function stackedOver(device_path: string): string[] {
  try {
    return readdirSync(path.join('/sys/class/block', path.basename(device_path), 'holders')).map((name) => `held by ${name}`);
  } catch {
    // No sysfs entry (not a whole disk): nothing stacked on it.
    return [];
  }
}

function openersOf(device_path: string): string[] {
  const found: string[] = [];
  const pids = readdirSync('/proc').filter((entry) => /^\d+$/.test(entry)).slice(0, PROCESSES_SCANNED_MAX);
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      // The process ended, or hides its descriptors: skip it.
      continue;
    }
    if (fds.some((fd) => linkOf(`/proc/${pid}/fd/${fd}`) === device_path)) found.push(`pid ${pid} (${commandOf(pid)})`);
  }
  return found;
}

function linkOf(link: string): string | null {
  try {
    return readlinkSync(link);
  } catch {
    // Closed meanwhile.
    return null;
  }
}

function commandOf(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    // Ended meanwhile.
    return '?';
  }
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountPath(escaped: string): string {
  return escaped.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

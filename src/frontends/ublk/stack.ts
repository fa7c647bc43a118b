// Which block devices a path ultimately lives on: the device of its
// filesystem (or the device itself, for a device node), and below it every
// device it is stacked on — device-mapper and md members (sysfs `slaves`),
// and a loop device's backing file, followed to its own filesystem. Used to
// refuse a difference storage that would write into a volume of its own
// snapshot through one of our devices: copy-on-write would then modify the
// volume it is saving.

import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

/** Stacks deeper than this are not followed (a loop of loops is a configuration error). */
const STACK_DEPTH_MAX = 8;

/** "major:minor" of a dev_t as Node's stat reports it (Linux's new_encode_dev). */
export function deviceNumber(dev: number): string {
  return `${Math.floor(dev / 256) & 0xfff}:${(dev & 0xff) | ((dev >> 12) & 0xfff00)}`;
}

/** The nearest existing path at or above this one (a storage file may not exist yet). */
function existingAncestor(candidate: string): string {
  let current = path.resolve(candidate);
  while (!existsSync(current) && path.dirname(current) !== current) current = path.dirname(current);
  return current;
}

/** Every device number the path's data may land on, the top one first. */
export function devicesUnder(storage_path: string): string[] {
  const stats = statSync(existingAncestor(storage_path));
  const top = deviceNumber(stats.isBlockDevice() ? stats.rdev : stats.dev);
  const found: string[] = [];
  const visit = (number: string, depth: number): void => {
    if (found.includes(number) || depth > STACK_DEPTH_MAX) return;
    found.push(number);
    const sys = `/sys/dev/block/${number}`;
    for (const slave of listOrEmpty(path.join(sys, 'slaves'))) {
      const slave_dev = readOrNull(`/sys/class/block/${slave}/dev`);
      if (slave_dev !== null) visit(slave_dev, depth + 1);
    }
    const backing = readOrNull(path.join(sys, 'loop', 'backing_file'));
    if (backing !== null && existsSync(backing)) visit(deviceNumber(statSync(backing).dev), depth + 1);
  };
  visit(top, 0);
  return found;
}

function listOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    // Not a stacked device (or not a block device at all): nothing below.
    return [];
  }
}

function readOrNull(file: string): string | null {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    // No such attribute: not that kind of device.
    return null;
  }
}

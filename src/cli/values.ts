// Parsing of the values people type on the command line: sizes with
// suffixes, sector ranges, milliseconds, snapshot ids, devices. Each parser
// throws a UblksnapError EINVAL that names the option and shows an example
// of what it accepts.

import path from 'node:path';
import { UblksnapError } from '../shared/errors';
import { GiB, KiB, MiB, TiB } from '../shared/units';
import { SNAPSHOT_ID_PATTERN, VOLUME_NAME_LENGTH_MAX, VOLUME_NAME_PATTERN } from '../ipc/methods';

const SIZE_MULTIPLIERS: Readonly<Record<string, number>> = { '': 1, K: KiB, M: MiB, G: GiB, T: TiB };
/** 512, 512K, 1.5G, 4GiB, 2 T: digits, an optional fraction, an optional binary suffix. */
const SIZE_PATTERN = /^(\d+)(?:\.(\d+))?\s*([KMGTkmgt]?)(?:i?B|b)?$/;
/** At most this many digits: past 2^53 bytes a size is not exact anyway. */
const SIZE_DIGITS_MAX = 16;

function invalid(message: string): never {
  throw new UblksnapError('EINVAL', message);
}

/**
 * A size in bytes from `512`, `64K`, `512M`, `1G`, `1.5G`, `2T` (binary
 * multiples, as upstream's -l; `KiB`/`KB`/`k` spellings accepted).
 */
export function parseSize(text: string, option: string): number {
  const match = SIZE_PATTERN.exec(text.trim());
  const example = `a size like 1073741824, 512M, 1G or 1.5T (suffixes K, M, G, T are powers of 1024)`;
  if (!match) invalid(`${option}: expected ${example}, got ${JSON.stringify(text)}`);
  const [, whole = '', fraction = '', suffix = ''] = match;
  if (whole.length + fraction.length > SIZE_DIGITS_MAX) invalid(`${option}: ${JSON.stringify(text)} is too large`);
  const multiplier = SIZE_MULTIPLIERS[suffix.toUpperCase()] as number;
  const bytes = Number(`${whole}.${fraction || '0'}`) * multiplier;
  if (!Number.isSafeInteger(bytes)) {
    invalid(Number.isInteger(bytes)
      ? `${option}: ${JSON.stringify(text)} is too large`
      : `${option}: ${JSON.stringify(text)} is not a whole number of bytes`);
  }
  return bytes;
}

/** `SECTOR:COUNT` (upstream markdirtyblock -r). */
export function parseSectorRange(text: string, option: string): { sector: number; count: number } {
  const match = /^(\d{1,16}):(\d{1,16})$/.exec(text);
  if (!match) invalid(`${option}: expected SECTOR:COUNT such as 2048:16, got ${JSON.stringify(text)}`);
  const sector = Number(match[1]);
  const count = Number(match[2]);
  if (!Number.isSafeInteger(sector) || !Number.isSafeInteger(count)) invalid(`${option}: ${JSON.stringify(text)} is too large`);
  if (count === 0) invalid(`${option}: ${JSON.stringify(text)} marks no sector (COUNT must be at least 1)`);
  return { sector, count };
}

/** A non-negative integer within [0, max]. */
export function parseInteger(text: string, option: string, max: number): number {
  if (!/^\d{1,16}$/.test(text)) invalid(`${option}: expected a whole number, got ${JSON.stringify(text)}`);
  const value = Number(text);
  if (value > max) invalid(`${option}: must be at most ${max}, got ${value}`);
  return value;
}

export function parseSnapshotId(text: string, option: string): string {
  if (!SNAPSHOT_ID_PATTERN.test(text)) invalid(`${option}: expected a snapshot id (UUID) such as 5f0c3a1e-8d2b-4c6f-9a7e-0b1c2d3e4f50, got ${JSON.stringify(text)}`);
  return text.toLowerCase();
}

/** A volume name (attach --name), checked here so the error names the option, not the IPC field. */
export function parseVolumeName(text: string, option: string): string {
  if (text.length === 0 || text.length > VOLUME_NAME_LENGTH_MAX || !VOLUME_NAME_PATTERN.test(text)) {
    invalid(`${option}: expected 1-${VOLUME_NAME_LENGTH_MAX} of letters, digits, '.', '_', '-', starting with a letter or digit, got ${JSON.stringify(text)}`);
  }
  return text;
}

/**
 * `-d` takes an attached path or a volume name. Anything with a '/' is a
 * path and is made absolute here (the daemon's cwd is not ours); a bare
 * word is a name (`--name` defaults to the file name, so `-d demo.img`
 * finds the volume attached from ./demo.img).
 */
export function deviceArgument(text: string, cwd = process.cwd()): string {
  if (text.length === 0) invalid('-d: must not be empty');
  return text.includes('/') ? path.resolve(cwd, text) : text;
}

/** A path argument (attach -d, snapshot_create -f): always made absolute. */
export function pathArgument(text: string, option: string, cwd = process.cwd()): string {
  if (text.length === 0) invalid(`${option}: must not be empty`);
  return path.resolve(cwd, text);
}

/**
 * `snapshot_create -f`: a path made absolute that keeps a trailing '/',
 * the one way to say that a path which does not exist yet is meant as a
 * directory (without it, a missing path becomes a storage file).
 */
export function storagePathArgument(text: string, option: string, cwd = process.cwd()): string {
  const resolved = pathArgument(text, option, cwd);
  return text.endsWith('/') && !resolved.endsWith('/') ? `${resolved}/` : resolved;
}

/** An NBD URI (nbd+unix:///NAME?socket=PATH or nbd://HOST:PORT/NAME), checked at the boundary. */
export function parseNbdExportUri(text: string, option: string): string {
  if (!/^nbd(\+unix)?:\/\//.test(text)) invalid(`${option}: expected an NBD URI such as nbd+unix:///vol%40ID?socket=/run/ublksnap/nbd.sock, got ${JSON.stringify(text)}`);
  return text;
}

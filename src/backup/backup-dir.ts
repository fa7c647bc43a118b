// The backup directory: one folder per volume, in it one data file and one
// manifest per backup, numbered by a sequence shared by every volume of the
// directory (the backups one run makes, coherent, carry the same number):
//
//   DIR/
//     VOLUME/
//       000001-full.img      sparse raw image of the whole volume
//       000001.json          its manifest (written last: the backup is complete)
//       000002-incr.img      sparse raw file, the volume's size; data only in the extents
//       000002.json
//       000003-incr.img      no 000003.json: interrupted, ignored as a base, reported
//
// docs/backup.md is the reference; this file is its code.

import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
import { UblksnapError, fromSystemError } from '../shared/errors';
import { checkManifest, type BackupKind, type Manifest } from './manifest';

/** Sequence numbers are zero-padded to this many digits, so `ls` lists them in order. */
export const SEQ_DIGITS = 6;
const MANIFEST_PATTERN = /^(\d+)\.json$/;
const DATA_PATTERN = /^(\d+)-(full|incr)\.img$/;
/** Manifests and folders are meant to be read by any backup tool of the machine, as the data is. */
const MANIFEST_MODE = 0o644;

export function seqText(seq: number): string {
  return String(seq).padStart(SEQ_DIGITS, '0');
}

export function dataFileName(seq: number, kind: BackupKind): string {
  return `${seqText(seq)}-${kind === 'full' ? 'full' : 'incr'}.img`;
}

export function manifestFileName(seq: number): string {
  return `${seqText(seq)}.json`;
}

export interface VolumeBackups {
  readonly volume: string;
  readonly folder: string;
  /** Complete backups, by increasing seq. */
  readonly complete: Manifest[];
  /** Sequence numbers of data files without a manifest. */
  readonly incomplete: number[];
}

export function volumeFolder(dir: string, volume: string): string {
  return path.join(dir, volume);
}

/** Reads one volume's folder; a missing folder is an empty history. */
export function readVolumeBackups(dir: string, volume: string): VolumeBackups {
  const folder = volumeFolder(dir, volume);
  if (!existsSync(folder)) return { volume, folder, complete: [], incomplete: [] };
  let names: string[];
  try {
    names = readdirSync(folder);
  } catch (error) {
    throw fromSystemError(error, `cannot read ${folder}`);
  }
  const complete: Manifest[] = [];
  const data_seqs = new Set<number>();
  for (const name of names) {
    const data = DATA_PATTERN.exec(name);
    if (data) data_seqs.add(Number(data[1]));
    const match = MANIFEST_PATTERN.exec(name);
    if (!match) continue;
    const file = path.join(folder, name);
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (error) {
      if (error instanceof SyntaxError) throw new UblksnapError('EINVAL', `${file}: not JSON: ${error.message}`);
      throw fromSystemError(error, `cannot read ${file}`);
    }
    const manifest = checkManifest(parsed, file);
    if (manifest.seq !== Number(match[1])) throw new UblksnapError('EINVAL', `${file}: seq ${manifest.seq} does not match its file name`);
    if (manifest.volume !== volume) throw new UblksnapError('EINVAL', `${file}: volume ${manifest.volume} in the folder of ${volume}`);
    complete.push(manifest);
  }
  complete.sort((a, b) => a.seq - b.seq);
  const done = new Set(complete.map((manifest) => manifest.seq));
  const incomplete = [...data_seqs].filter((seq) => !done.has(seq)).sort((a, b) => a - b);
  return { volume, folder, complete, incomplete };
}

/** The volumes that have a folder in dir. */
export function listVolumes(dir: string): string[] {
  if (!existsSync(dir)) throw new UblksnapError('ENOENT', `no backup directory ${dir}`);
  return readdirSync(dir, { withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => entry.name).sort();
}

/** The next sequence number of the directory: past every backup of every volume, complete or not. */
export function nextSeq(dir: string): number {
  if (!existsSync(dir)) return 1;
  let highest = 0;
  for (const volume of listVolumes(dir)) {
    const backups = readVolumeBackups(dir, volume);
    for (const manifest of backups.complete) highest = Math.max(highest, manifest.seq);
    for (const seq of backups.incomplete) highest = Math.max(highest, seq);
  }
  return highest + 1;
}

export function ensureFolder(folder: string): void {
  try {
    mkdirSync(folder, { recursive: true });
  } catch (error) {
    throw fromSystemError(error, `cannot create ${folder}`);
  }
}

export function fsyncDirectory(folder: string): void {
  const fd = openSync(folder, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes the manifest durably: a temporary file, fsync, rename over the final name, fsync of the folder. */
export function writeManifest(folder: string, manifest: Manifest): string {
  const final = path.join(folder, manifestFileName(manifest.seq));
  const partial = `${final}.partial-${process.pid}`;
  const fd = openSync(partial, 'w', MANIFEST_MODE);
  try {
    const text = Buffer.from(`${JSON.stringify(manifest, null, 1)}\n`);
    let written = 0;
    while (written < text.length) written += writeSync(fd, text, written);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(partial, final);
  fsyncDirectory(folder);
  return final;
}

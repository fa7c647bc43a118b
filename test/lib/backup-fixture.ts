// The world of the backup tests: a real daemon with volumes of real files
// whose content the test controls, writes made by qemu-io over the
// volumes' NBD exports (so they pass the CBT and copy-on-write like any
// user's), `ublksnap backup|restore|verify` run as processes, and digests
// of files to compare points with.

import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runOk } from './nbd-tools';
import { keyValues, runNode, startDaemon, CLI_PATH, type RunResult, type TestDaemon } from './daemon';
import { randomBytes, seededRandom } from './random';
import { testSeed } from './workers';

export interface VolumeWrite {
  offset: number;
  length_bytes: number;
  pattern: number;
}

export function volumeUri(daemon: TestDaemon, name: string): string {
  return `nbd+unix:///${encodeURIComponent(name)}?socket=${daemon.nbd_socket}`;
}

/** Applies writes to a volume through its NBD export (qemu-io), or to a plain file (for an expected copy). */
export async function applyWrites(target: string, writes: readonly VolumeWrite[]): Promise<void> {
  const commands = writes.flatMap((write) => ['-c', `write -P ${write.pattern} ${write.offset} ${write.length_bytes}`]);
  await runOk('qemu-io', ['-f', 'raw', ...commands, target]);
}

/** Scattered writes of seeded sizes and places within size_bytes. */
export function randomWrites(seed: number, count: number, size_bytes: number, length_max_bytes: number): VolumeWrite[] {
  const random = seededRandom(seed);
  const writes: VolumeWrite[] = [];
  for (let i = 0; i < count; i += 1) {
    const length_bytes = 512 * (1 + Math.floor(random() * (length_max_bytes / 512)));
    const offset = 512 * Math.floor(random() * ((size_bytes - length_bytes) / 512));
    writes.push({ offset, length_bytes, pattern: 1 + Math.floor(random() * 254) });
  }
  return writes;
}

/** Tracking blocks the writes touch, times the block size: what an incremental may copy at most. */
export function touchedBytes(writes: readonly VolumeWrite[], block_bytes: number): number {
  const blocks = new Set<number>();
  for (const write of writes) {
    for (let block = Math.floor(write.offset / block_bytes); block * block_bytes < write.offset + write.length_bytes; block += 1) blocks.add(block);
  }
  return blocks.size * block_bytes;
}

export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(file).on('data', (chunk) => hash.update(chunk)).on('error', reject).on('end', () => resolve(hash.digest('hex')));
  });
}

/** Runs the CLI against daemon with a longer bound (backups of tens of MiB under load). */
export function cli(daemon: TestDaemon, args: string[], timeout_ms = 120_000): Promise<RunResult> {
  return runNode(CLI_PATH, ['--socket', daemon.socket, ...args], { cwd: daemon.dir, timeout_ms });
}

export async function cliOk(daemon: TestDaemon, args: string[], timeout_ms = 120_000): Promise<string> {
  const result = await cli(daemon, args, timeout_ms);
  if (result.code !== 0) throw new Error(`ublksnap ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

export interface BackupJson {
  seq: number;
  snapshot_id: string;
  copied_bytes: number;
  volumes: Array<{ volume: string; seq: number; kind: string; base_seq: number | null; full_reason: string | null; copied_bytes: number; written_bytes: number; data_file: string }>;
}

export async function backupJson(daemon: TestDaemon, args: string[]): Promise<BackupJson> {
  return JSON.parse(await cliOk(daemon, ['backup', '-j', ...args])) as BackupJson;
}

/** Bytes a file occupies on disk (its data, not its holes). */
export function allocatedBytes(file: string): number {
  return statSync(file).blocks * 512;
}

export function manifestsOf(dir: string, volume: string): number[] {
  return readdirSync(path.join(dir, volume)).filter((name) => /^\d+\.json$/.test(name)).map((name) => Number(name.slice(0, -5))).sort((a, b) => a - b);
}

export function readManifest(dir: string, volume: string, seq: number): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(dir, volume, `${String(seq).padStart(6, '0')}.json`), 'utf8')) as Record<string, unknown>;
}

export async function snapshotIds(daemon: TestDaemon): Promise<string[]> {
  return JSON.parse((await runNode(CLI_PATH, ['--socket', daemon.socket, 'snapshot_collect', '-j'], { cwd: daemon.dir })).stdout).ids as string[];
}

export { keyValues };

/** A daemon of its own (`backup-NAME`) and where its backups go. */
export interface BackupRig {
  daemon: TestDaemon;
  backups: string;
  /** The file of volume `vol`: seeded random bytes, attached. */
  volume: string;
}

/** Starts a daemon with one volume `vol` of size_bytes random bytes, seeded by name. */
export async function startWithVolume(name: string, size_bytes: number): Promise<BackupRig> {
  const daemon = await startDaemon(`backup-${name}`);
  const backups = daemon.file('backups');
  const volume = daemon.file('vol.img');
  writeFileSync(volume, randomBytes(seededRandom(testSeed(`backup ${name} volume`)), size_bytes));
  await cliOk(daemon, ['attach', '-d', volume, '--name', 'vol']);
  return { daemon, backups, volume };
}

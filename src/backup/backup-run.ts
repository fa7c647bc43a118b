// `ublksnap backup`: one coherent backup of one or several volumes into a
// backup directory, full or incremental per volume.
//
//   create snapshot (every volume) → take (the daemon freezes what it can)
//   → per volume: cbtinfo, choose full or incremental against the newest
//     complete backup in DIR, read the CBT map, copy the extents from the
//     image export over NBD into DIR/VOLUME/SEQ-{full,incr}.img
//   → check the snapshot is still healthy → write every manifest
//   → destroy the snapshot (always: also on failure and Ctrl-C)
//
// A backup is complete when its manifest exists (backup-dir.ts); manifests
// are written only once every volume's copy has succeeded and the snapshot
// was healthy to the end, so a failed or interrupted run leaves data files
// without manifests: reported by the next run, never a base.

import { open } from 'node:fs/promises';
import path from 'node:path';
import { UblksnapError, codeOfErrno } from '../shared/errors';
import { sectorsToBytes } from '../shared/units';
import { IpcClient } from '../ipc/client';
import { CBT_PIECE_BYTES_MAX, type SnapshotInfoResult } from '../ipc/methods';
import { dataFileName, ensureFolder, nextSeq, readVolumeBackups, seqText, volumeFolder, writeManifest } from './backup-dir';
import { resolveChain } from './chain';
import { changedExtents, extentBytes } from './changed-extents';
import { COPY_CONNECTIONS, COPY_PIECE_BYTES, copyExtents, interrupted } from './image-copier';
import { MANIFEST_FORMAT, MANIFEST_FORMAT_VERSION, type Extent, type Manifest } from './manifest';
import { NbdReadClient } from './nbd-client';
import { parseNbdUri } from './nbd-uri';

/** ENOSPC's errno: the snapshot's difference storage reached its limit. */
const ENOSPC_ERRNO = 28;

export interface BackupOptions {
  readonly socket_path: string;
  readonly dir: string;
  /** Attached paths or volume names, as -d takes them. */
  readonly devices: readonly string[];
  /** The snapshot's difference storage (file, directory or block device) and its limit. */
  readonly storage: string;
  readonly limit_bytes: number;
  readonly force_full: boolean;
  readonly rate_bytes_per_s: number;
  readonly signal: AbortSignal;
  readonly onProgress?: (done_bytes: number, total_bytes: number) => void;
  /** One human line: why a backup is full, which interrupted backups were ignored. */
  readonly onNote?: (line: string) => void;
}

export interface VolumeBackupSummary {
  volume: string;
  seq: number;
  kind: Manifest['kind'];
  base_seq: number | null;
  full_reason: string | null;
  data_file: string;
  manifest_file: string;
  size_bytes: number;
  copied_bytes: number;
  written_bytes: number;
  generation_id: string;
  changes_number: number;
}

export interface BackupSummary {
  dir: string;
  seq: number;
  snapshot_id: string;
  elapsed_ms: number;
  copied_bytes: number;
  bytes_per_s: number;
  volumes: VolumeBackupSummary[];
}

interface VolumePlan {
  name: string;
  size_bytes: number;
  base: Manifest | null;
  full_reason: string | null;
  generation_id: string;
  changes_number: number;
  cbt_block_bytes: number;
  extents: Extent[];
}

/** Resolves -d values to attached volume names through `status` (a name or an attached path). */
async function volumeNames(client: IpcClient, devices: readonly string[]): Promise<Array<{ name: string; size_bytes: number }>> {
  const status = await client.call('status', {});
  const found: Array<{ name: string; size_bytes: number }> = [];
  for (const device of devices) {
    const volume = status.volumes.find((candidate) => candidate.name === device || candidate.path === device);
    if (volume === undefined) throw new UblksnapError('ESRCH', `no attached volume ${device} (see 'ublksnap status')`);
    if (found.some((other) => other.name === volume.name)) throw new UblksnapError('EINVAL', `volume ${volume.name} named twice`);
    found.push({ name: volume.name, size_bytes: sectorsToBytes(volume.capacity_sectors) });
  }
  if (found.length === 0) throw new UblksnapError('EINVAL', '-d is required: the volumes to back up');
  return found;
}

/** Why the newest complete backup cannot be the base of an incremental, or null when it can. */
function fullReason(dir: string, name: string, base: Manifest | null, cbt: { generation_id: string; changes_number: number; block_size: number }, size_bytes: number, force_full: boolean): string | null {
  if (force_full) return 'asked for (--full)';
  if (base === null) return `no complete backup of ${name} in ${dir} yet`;
  if (base.generation_id !== cbt.generation_id) {
    return `the change tracking of ${name} started a new generation (${cbt.generation_id}, the base ${seqText(base.seq)} has ${base.generation_id}): the daemon restarted, re-attached the volume, or wrapped the map`;
  }
  if (base.size_bytes !== size_bytes) return `${name} changed size (${base.size_bytes} → ${size_bytes} bytes)`;
  if (base.cbt_block_bytes !== cbt.block_size) return `the tracking block of ${name} changed (${base.cbt_block_bytes} → ${cbt.block_size} bytes)`;
  if (base.changes_number >= cbt.changes_number) {
    return `the change tracking of ${name} is at ${cbt.changes_number}, not past the base's ${base.changes_number}`;
  }
  return null;
}

async function readMap(client: IpcClient, name: string, expect: { generation_id: string; changes_number: number }): Promise<Uint8Array> {
  const pieces: Buffer[] = [];
  let first_block = 0;
  let block_count = 0;
  do {
    const piece = await client.call('readcbtmap', { device: name, first_block, length_bytes: CBT_PIECE_BYTES_MAX });
    if (piece.generation_id !== expect.generation_id || piece.changes_number !== expect.changes_number) {
      throw new UblksnapError('EBUSY', `the CBT map of ${name} changed while the backup read it`);
    }
    block_count = piece.block_count;
    if (piece.length_bytes === 0) break;
    pieces.push(Buffer.from(piece.data, 'base64'));
    first_block += piece.length_bytes;
  } while (first_block < block_count);
  return new Uint8Array(Buffer.concat(pieces));
}

async function planVolume(client: IpcClient, options: BackupOptions, volume: { name: string; size_bytes: number }): Promise<VolumePlan> {
  const backups = readVolumeBackups(options.dir, volume.name);
  for (const seq of backups.incomplete) {
    options.onNote?.(`${volume.name}: ignoring interrupted backup ${seqText(seq)} (no manifest; its data file may be removed)`);
  }
  const newest = backups.complete[backups.complete.length - 1] ?? null;
  const cbt = await client.call('cbtinfo', { device: volume.name });
  let reason = fullReason(options.dir, volume.name, newest, cbt, volume.size_bytes, options.force_full);
  if (reason === null && newest !== null) {
    try {
      resolveChain(backups, newest.seq);
    } catch (error) {
      reason = `the chain under ${seqText(newest.seq)} is broken: ${(error as Error).message}`;
    }
  }
  const plan: VolumePlan = {
    name: volume.name, size_bytes: volume.size_bytes, base: reason === null ? newest : null, full_reason: reason,
    generation_id: cbt.generation_id, changes_number: cbt.changes_number, cbt_block_bytes: cbt.block_size,
    extents: volume.size_bytes > 0 ? [[0, volume.size_bytes]] : [],
  };
  if (plan.base !== null) {
    const map = await readMap(client, volume.name, cbt);
    plan.extents = changedExtents(map, plan.base.changes_number, cbt.block_size, volume.size_bytes);
  } else {
    options.onNote?.(`${volume.name}: full backup: ${reason}`);
  }
  return plan;
}

/** The snapshot's error as the reason a copy failed, or null while it is healthy. */
function snapshotBroken(info: SnapshotInfoResult, name: string, limit_bytes: number): UblksnapError | null {
  if (info.error_code === 0) return null;
  const code = codeOfErrno(info.error_code) ?? 'EIO';
  const why = info.error_code === ENOSPC_ERRNO
    ? `its difference storage overflowed the limit of ${limit_bytes} bytes (-l): the volume was written faster than the backup read it; give a larger -l`
    : `error_code=${info.error_code}`;
  return new UblksnapError(code, `the snapshot broke during the backup of ${name}: ${why}; the volume is intact and no backup of this run is complete`);
}

async function copyVolume(client: IpcClient, options: BackupOptions, plan: VolumePlan, seq: number, kind: Manifest['kind'],
  progress: (bytes: number) => void): Promise<{ digests: string[]; written_bytes: number; copied_bytes: number; data_file: string }> {
  const info = await client.call('snapshot_info', { device: plan.name });
  if (info.nbd === '') throw new UblksnapError('ENODEV', `the image of ${plan.name} has no NBD export (the daemon runs without its NBD frontend)`);
  const folder = volumeFolder(options.dir, plan.name);
  ensureFolder(folder);
  const data_file = dataFileName(seq, kind);
  const file_path = path.join(folder, data_file);
  const sources: NbdReadClient[] = [];
  let file;
  try {
    for (let at = 0; at < COPY_CONNECTIONS; at += 1) sources.push(await NbdReadClient.open(parseNbdUri(info.nbd)));
    const size_bytes = (sources[0] as NbdReadClient).size_bytes;
    if (size_bytes !== plan.size_bytes) throw new UblksnapError('EIO', `${info.nbd}: ${size_bytes} bytes, the volume has ${plan.size_bytes}`);
    // 'wx': a sequence number is never reused, so an existing file is someone else's.
    file = await open(file_path, 'wx', 0o644);
    await file.truncate(plan.size_bytes);
    const result = await copyExtents({
      sources, file, file_name: file_path, extents: plan.extents, signal: options.signal,
      rate_bytes_per_s: options.rate_bytes_per_s, onProgress: progress,
    });
    await file.datasync();
    return { ...result, data_file };
  } catch (error) {
    if (options.signal.aborted) throw interrupted();
    const broken = snapshotBroken(await client.call('snapshot_info', { device: plan.name }), plan.name, options.limit_bytes);
    throw broken ?? error;
  } finally {
    await file?.close();
    for (const source of sources) source.close();
  }
}

export async function runBackup(options: BackupOptions): Promise<BackupSummary> {
  const started_ms = Date.now();
  const client = await IpcClient.connect(options.socket_path);
  let snapshot_id: string | null = null;
  try {
    const volumes = await volumeNames(client, options.devices);
    ensureFolder(options.dir);
    const seq = nextSeq(options.dir);
    const created = await client.call('snapshot_create', {
      devices: volumes.map((volume) => volume.name), storage: options.storage, limit_bytes: options.limit_bytes,
    });
    snapshot_id = created.id;
    if (options.signal.aborted) throw interrupted();
    await client.call('snapshot_take', { id: snapshot_id });
    const taken_at = new Date().toISOString();
    const plans: VolumePlan[] = [];
    for (const volume of volumes) plans.push(await planVolume(client, options, volume));
    const total_bytes = plans.reduce((sum, plan) => sum + extentBytes(plan.extents), 0);
    let done_before = 0;
    const pending: Array<{ plan: VolumePlan; manifest: Manifest; written_bytes: number }> = [];
    for (const plan of plans) {
      if (options.signal.aborted) throw interrupted();
      const kind = plan.base === null ? 'full' : 'incremental';
      const copied = await copyVolume(client, options, plan, seq, kind, (bytes) => options.onProgress?.(done_before + bytes, total_bytes));
      done_before += copied.copied_bytes;
      pending.push({
        plan, written_bytes: copied.written_bytes,
        manifest: {
          format: MANIFEST_FORMAT, format_version: MANIFEST_FORMAT_VERSION, volume: plan.name, seq, kind,
          base_seq: plan.base?.seq ?? null, full_reason: plan.full_reason, data_file: copied.data_file,
          snapshot_id, taken_at, generation_id: plan.generation_id, changes_number: plan.changes_number,
          size_bytes: plan.size_bytes, cbt_block_bytes: plan.cbt_block_bytes, extents: plan.extents,
          copied_bytes: copied.copied_bytes,
          checksum: { algorithm: 'sha256', segment_bytes: COPY_PIECE_BYTES, digests: copied.digests },
        },
      });
    }
    // Every image was read; a snapshot that broke meanwhile may have served bad data before it said so.
    for (const plan of plans) {
      const broken = snapshotBroken(await client.call('snapshot_info', { device: plan.name }), plan.name, options.limit_bytes);
      if (broken) throw broken;
    }
    if (options.signal.aborted) throw interrupted();
    const summaries: VolumeBackupSummary[] = pending.map(({ plan, manifest, written_bytes }) => {
      const manifest_file = writeManifest(volumeFolder(options.dir, plan.name), manifest);
      return {
        volume: plan.name, seq, kind: manifest.kind, base_seq: manifest.base_seq, full_reason: manifest.full_reason,
        data_file: path.join(volumeFolder(options.dir, plan.name), manifest.data_file), manifest_file,
        size_bytes: manifest.size_bytes, copied_bytes: manifest.copied_bytes, written_bytes,
        generation_id: manifest.generation_id, changes_number: manifest.changes_number,
      };
    });
    const elapsed_ms = Date.now() - started_ms;
    const copied_bytes = summaries.reduce((sum, volume) => sum + volume.copied_bytes, 0);
    return {
      dir: options.dir, seq, snapshot_id, elapsed_ms, copied_bytes,
      bytes_per_s: elapsed_ms > 0 ? Math.round((copied_bytes * 1000) / elapsed_ms) : 0, volumes: summaries,
    };
  } finally {
    if (snapshot_id !== null) {
      try {
        await client.call('snapshot_destroy', { id: snapshot_id, force: true });
      } catch (error) {
        // The daemon may have destroyed it already (stopping); anything else the user must hear about.
        if (!(error instanceof UblksnapError && (error.code === 'ESRCH' || error.code === 'ESHUTDOWN'))) {
          options.onNote?.(`could not destroy snapshot ${snapshot_id}: ${(error as Error).message}; run 'ublksnap snapshot_destroy -i ${snapshot_id}'`);
        }
      }
    }
    client.close();
  }
}


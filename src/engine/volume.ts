// An attached volume on the control plane: the exclusively opened file or
// block device, its geometry, its tracker (CBT) and its control block.

import { closeSync, statSync } from 'node:fs';
import path from 'node:path';
import { blockDeviceInfo, fileInfo, openExclusive, type FileInfo } from '../native';
import type { Params } from '../shared/params';
import { UblksnapError, fromSystemError } from '../shared/errors';
import { SECTOR_BYTES } from '../shared/units';
import { createVolumeControl, markDetached } from '../shared/volume-control';
import type { VolumeDescriptor } from '../actors/messages';
import type { VolumeInfo } from './api';
import { createFaults } from '../shared/fault-words';
import { createWriteHold } from '../shared/write-hold';
import { Tracker, type TrackerStart } from './tracker';

/** Volume names appear in export names (`NAME@ID`) and URIs. */
const VOLUME_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A regular file has no minimal I/O size; a page keeps chunks page-aligned. */
const FILE_MIN_IO_BYTES = 512;

export function validateVolumeName(name: unknown): string {
  if (typeof name !== 'string' || !VOLUME_NAME_PATTERN.test(name)) {
    throw new UblksnapError('EINVAL', `volume name ${JSON.stringify(name)} must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit`);
  }
  return name;
}

/** A default name from a path: its file name, made safe. */
export function defaultVolumeName(volume_path: string): string {
  const base = path.basename(volume_path).replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[._-]+/, '');
  return (base || 'volume').slice(0, 64);
}

/** What a volume knows of the snapshot that holds it (snapshot.ts implements it). */
export interface SnapshotMembership {
  readonly id: string;
  readonly taken: boolean;
  /** Serial of its image (export handles carry it). */
  readonly serial: number;
  /** 0, or the errno that broke it. */
  readonly error_code: number;
}

export class VolumeRecord {
  snapshot: SnapshotMembership | null = null;
  readonly control = createVolumeControl();
  readonly tracker: Tracker;
  readonly faults: SharedArrayBuffer | undefined;
  /** Tests only: holds a write inside the gate (shared/write-hold.ts). */
  readonly write_hold: SharedArrayBuffer | undefined;

  private constructor(
    readonly index: number,
    readonly name: string,
    readonly path: string,
    readonly fd: number,
    readonly info: FileInfo,
    readonly capacity_sectors: number,
    readonly logical_block_bytes: number,
    readonly min_io_bytes: number,
    params: Params,
    fault_injection: boolean,
    tracker_start: TrackerStart,
  ) {
    this.tracker = new Tracker(capacity_sectors, params, tracker_start);
    this.faults = fault_injection ? createFaults() : undefined;
    this.write_hold = fault_injection ? createWriteHold() : undefined;
  }

  /** Opens and measures the volume at path; the caller checked name and path are free. */
  static open(index: number, name: string, volume_path: string, params: Params, fault_injection: boolean,
    tracker_start: TrackerStart = {}): VolumeRecord {
    const stats = statSync(volume_path, { throwIfNoEntry: false });
    if (stats === undefined) throw new UblksnapError('ENOENT', `volume ${volume_path} does not exist`);
    if (!stats.isFile() && !stats.isBlockDevice()) {
      throw new UblksnapError('EINVAL', `volume ${volume_path} is neither a regular file nor a block device`);
    }
    let fd: number;
    try {
      fd = openExclusive(volume_path, { write: true, direct: false });
    } catch (error) {
      throw fromSystemError(error, `cannot open volume ${volume_path} exclusively`);
    }
    try {
      const info = fileInfo(fd);
      let size_bytes = info.size_bytes;
      let logical_block_bytes = SECTOR_BYTES;
      let min_io_bytes = FILE_MIN_IO_BYTES;
      if (info.kind === 'block') {
        const device = blockDeviceInfo(fd);
        size_bytes = device.size_bytes;
        logical_block_bytes = device.logical_block_bytes;
        min_io_bytes = Math.max(device.min_io_bytes, device.logical_block_bytes);
      }
      const capacity_sectors = Math.floor(size_bytes / SECTOR_BYTES);
      if (capacity_sectors < 1) throw new UblksnapError('EINVAL', `volume ${volume_path} is smaller than one sector`);
      return new VolumeRecord(index, name, volume_path, fd, info, capacity_sectors, logical_block_bytes, min_io_bytes, params, fault_injection, tracker_start);
    } catch (error) {
      closeSync(fd);
      throw fromSystemError(error, `volume ${volume_path}`);
    }
  }

  get kind(): 'file' | 'block' {
    return this.info.kind === 'block' ? 'block' : 'file';
  }

  get capacity_bytes(): number {
    return this.capacity_sectors * SECTOR_BYTES;
  }

  get descriptor(): VolumeDescriptor {
    return {
      volume_index: this.index,
      name: this.name,
      fd: this.fd,
      capacity_bytes: this.capacity_bytes,
      cbt: this.tracker.map.buffer,
      control: this.control.buffer as SharedArrayBuffer,
      ...(this.faults ? { faults: this.faults } : {}),
      ...(this.write_hold ? { write_hold: this.write_hold } : {}),
    };
  }

  describe(): VolumeInfo {
    return {
      volume_index: this.index,
      name: this.name,
      path: this.path,
      kind: this.kind,
      capacity_sectors: this.capacity_sectors,
      logical_block_bytes: this.logical_block_bytes,
      snapshot_id: this.snapshot?.id ?? null,
    };
  }

  close(): void {
    markDetached(this.control);
    closeSync(this.fd);
  }
}

// What the ublk frontend remembers of each device it serves, so that the
// next daemon can take the device back (user recovery) after a crash or a
// planned restart, instead of the device disappearing under its holders.
//
//   <state dir>/ublk-devices/<dev_id>.json   one file per live device
//
// Written durably right after ADD_DEV (a crash during start still leaves a
// record, so the half-made device is found and deleted), removed after
// DEL_DEV. The kernel keeps the rest (queues, depth, flags, state): the
// record holds what only we know — which export the device serves and the
// geometry it was started with, which must still match for the kernel's
// parameters (no SET_PARAMS in recovery) to stay true.

import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { readStateFile, removeFileDurably, writeFileDurably } from '../../shared/state-file';

export const DEVICE_RECORDS_DIR_NAME = 'ublk-devices';
const RECORD_VERSION = 1;
const RECORD_FILE = /^(\d+)\.json$/;
/** A record is a few hundred bytes: a file much larger is not one. */
const RECORD_BYTES_MAX = 64 * 1024;

export interface UblkDeviceRecord {
  dev_id: number;
  /** NAME (a volume) or NAME@ID (an image). */
  export_name: string;
  kind: 'volume' | 'image';
  /** The geometry the kernel was given at SET_PARAMS. */
  size_bytes: number;
  logical_block_bytes: number;
  writable: boolean;
  /** The queue shape ADD_DEV made. */
  queue_count: number;
  queue_depth: number;
  max_io_bytes: number;
  /** The process that served it last. */
  server_pid: number;
}

/** A record file that could not be used, and why. */
export interface BadRecord {
  file: string;
  reason: string;
}

export class DeviceRecords {
  readonly dir: string;

  constructor(state_dir: string) {
    this.dir = path.join(state_dir, DEVICE_RECORDS_DIR_NAME);
  }

  save(record: UblkDeviceRecord): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeFileDurably(this.fileOf(record.dev_id), [Buffer.from(`${JSON.stringify({ version: RECORD_VERSION, ...record }, null, 2)}\n`)]);
  }

  remove(dev_id: number): void {
    removeFileDurably(this.fileOf(dev_id));
  }

  /** Every readable record, and the files that are not (left in place for the user to look at). */
  load(): { records: UblkDeviceRecord[]; bad: BadRecord[] } {
    const records: UblkDeviceRecord[] = [];
    const bad: BadRecord[] = [];
    if (!existsSync(this.dir)) return { records, bad };
    for (const entry of readdirSync(this.dir).sort()) {
      const match = RECORD_FILE.exec(entry);
      if (match === null) continue;
      const file = path.join(this.dir, entry);
      try {
        const text = readStateFile(file, RECORD_BYTES_MAX);
        if (text !== null) records.push(parseRecord(text.toString('utf8'), Number(match[1])));
      } catch (error) {
        bad.push({ file, reason: (error as Error).message });
      }
    }
    return { records, bad };
  }

  private fileOf(dev_id: number): string {
    return path.join(this.dir, `${dev_id}.json`);
  }
}

function parseRecord(text: string, dev_id: number): UblkDeviceRecord {
  const value = JSON.parse(text) as Record<string, unknown>;
  if (value.version !== RECORD_VERSION) throw new Error(`unknown record version ${String(value.version)}`);
  const integer = (key: string, min: number): number => {
    const field = value[key];
    if (typeof field !== 'number' || !Number.isSafeInteger(field) || field < min) throw new Error(`${key} is not an integer >= ${min}`);
    return field;
  };
  if (integer('dev_id', 0) !== dev_id) throw new Error(`dev_id ${String(value.dev_id)} does not match the file name`);
  if (typeof value.export_name !== 'string' || value.export_name === '') throw new Error('export_name is missing');
  if (value.kind !== 'volume' && value.kind !== 'image') throw new Error('kind is neither volume nor image');
  if (typeof value.writable !== 'boolean') throw new Error('writable is not a boolean');
  return {
    dev_id,
    export_name: value.export_name,
    kind: value.kind,
    size_bytes: integer('size_bytes', 0),
    logical_block_bytes: integer('logical_block_bytes', 512),
    writable: value.writable,
    queue_count: integer('queue_count', 1),
    queue_depth: integer('queue_depth', 1),
    max_io_bytes: integer('max_io_bytes', 512),
    server_pid: integer('server_pid', 1),
  };
}

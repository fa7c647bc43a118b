// Stamped sectors on files and block devices: fill a range with stamps and
// check a range, with synchronous I/O in pieces of io_bytes (1 MiB unless
// told). The target is a path (opened and closed here) or an open fd (left
// open). See stamp.ts for the sector format and the verdicts.
//
// Design notes:
// - One I/O buffer per call, or the caller's (io_buffer): pass an aligned
//   slab slot together with open_flags O_DIRECT to bypass the page cache —
//   JavaScript cannot align a buffer it allocates itself.
// - Each piece is one fill() and so one stamp identity; with a model, a
//   piece is recorded once writeSync has returned it whole (acknowledged).
// - A path is never created unless `create` is set: a mistyped device path
//   must fail, not leave a regular file in /dev.

import { closeSync, constants, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { assert } from '../../src/shared/assert';
import {
  ReportBuilder, SECTOR_BYTES, SectorModel, StampExpectation, StampGenerator, Report, checkSectorsInto,
} from './stamp';

/** The piece size of every read and write unless told: big enough for throughput, small enough to keep around. */
export const STAMP_IO_BYTES_DEFAULT = 1024 * 1024;
/** Short transfers in a row before a piece is given up (a device that keeps returning less is broken). */
export const SHORT_TRANSFERS_MAX = 64;
const CREATE_MODE = 0o644;

export interface StampFileRange {
  first_lba: number;
  sector_count: number;
  /** Default STAMP_IO_BYTES_DEFAULT; a multiple of 512. */
  io_bytes?: number;
  /** Used instead of a new buffer; at least io_bytes long. */
  io_buffer?: Uint8Array;
  /** Extra open(2) flags when target is a path, e.g. fs.constants.O_DIRECT. */
  open_flags?: number;
}

export interface FillFileOptions extends StampFileRange {
  /** Records every acknowledged piece. */
  model?: SectorModel;
  /** Create a regular file when the path does not exist. Default false. */
  create?: boolean;
  /** fsync once at the end. Default false. */
  fsync?: boolean;
}

export interface CheckFileOptions extends StampFileRange {
  expectation?: StampExpectation;
  /** Check exactness against this (usually frozen) model instead of stamp rules only. */
  model?: SectorModel;
}

/** Writes stamps over [first_lba, + sector_count) of the target; returns the sectors written. */
export function fillFileWithStamps(target: string | number, generator: StampGenerator, options: FillFileOptions): number {
  const { first_lba, sector_count, model } = options;
  const { buffer, piece_sectors } = ioBuffer(options);
  const flags = constants.O_WRONLY | (options.create ? constants.O_CREAT : 0) | (options.open_flags ?? 0);
  return withFd(target, flags, (fd) => {
    for (let done = 0; done < sector_count; done += piece_sectors) {
      const count = Math.min(piece_sectors, sector_count - done);
      const lba = first_lba + done;
      generator.fill(buffer, lba, count);
      transferAll(fd, buffer, count * SECTOR_BYTES, lba * SECTOR_BYTES, 'write');
      model?.record(lba, count, generator.lastStamp());
    }
    if (options.fsync) fsyncSync(fd);
    return sector_count;
  });
}

/** Reads [first_lba, + sector_count) of the target and checks it (stamp rules, or exactness with a model). */
export function checkFile(target: string | number, options: CheckFileOptions): Report {
  const { first_lba, sector_count, model, expectation = {} } = options;
  const { buffer, piece_sectors } = ioBuffer(options);
  const builder = new ReportBuilder();
  withFd(target, constants.O_RDONLY | (options.open_flags ?? 0), (fd) => {
    for (let done = 0; done < sector_count; done += piece_sectors) {
      const count = Math.min(piece_sectors, sector_count - done);
      const lba = first_lba + done;
      transferAll(fd, buffer, count * SECTOR_BYTES, lba * SECTOR_BYTES, 'read');
      if (model) model.checkInto(builder, buffer, lba, count, expectation);
      else checkSectorsInto(builder, buffer, lba, count, expectation);
    }
  });
  return builder.finish();
}

function ioBuffer(options: StampFileRange): { buffer: Uint8Array; piece_sectors: number } {
  const { first_lba, sector_count } = options;
  assert(Number.isSafeInteger(first_lba) && first_lba >= 0, `first_lba must be a non-negative integer, got ${first_lba}`);
  assert(Number.isSafeInteger(sector_count) && sector_count >= 0, `sector_count must be a non-negative integer, got ${sector_count}`);
  const io_bytes = options.io_bytes ?? STAMP_IO_BYTES_DEFAULT;
  assert(Number.isInteger(io_bytes) && io_bytes > 0 && io_bytes % SECTOR_BYTES === 0,
    `io_bytes must be a positive multiple of ${SECTOR_BYTES}, got ${io_bytes}`);
  const buffer = options.io_buffer ?? new Uint8Array(io_bytes);
  assert(buffer.byteLength >= io_bytes, `io_buffer of ${buffer.byteLength} bytes is short of io_bytes ${io_bytes}`);
  return { buffer, piece_sectors: io_bytes / SECTOR_BYTES };
}

function withFd<T>(target: string | number, flags: number, body: (fd: number) => T): T {
  if (typeof target === 'number') return body(target);
  const fd = openSync(target, flags, CREATE_MODE);
  try {
    return body(fd);
  } finally {
    closeSync(fd);
  }
}

/** Moves exactly byte_count bytes at position, resuming short transfers; end of file before that is an error. */
function transferAll(fd: number, buffer: Uint8Array, byte_count: number, position: number, direction: 'read' | 'write'): void {
  let done = 0;
  let short_count = 0;
  while (done < byte_count) {
    const moved = direction === 'read'
      ? readSync(fd, buffer, done, byte_count - done, position + done)
      : writeSync(fd, buffer, done, byte_count - done, position + done);
    if (moved === 0) {
      throw new Error(`${direction} at byte ${position + done} moved nothing: the target ends before byte ${position + byte_count}`);
    }
    done += moved;
    if (done < byte_count) {
      short_count += 1;
      if (short_count > SHORT_TRANSFERS_MAX) {
        throw new Error(`${direction} at byte ${position}: more than ${SHORT_TRANSFERS_MAX} short transfers in a row`);
      }
    }
  }
}

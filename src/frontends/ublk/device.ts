// One export served as /dev/ublkbN: the device's life on the main thread.
//
//   ADD_DEV ──► SET_PARAMS ──► queue sessions hosted by the I/O actors
//     (each opens /dev/ublkcN, maps its descriptors, FETCHes every tag)
//   ──► START_DEV from here, while the actors already serve: the kernel
//     waits for every tag, then reads the partition table through them
//   … served …
//   STOP_DEV (the kernel completes what is in flight, then aborts the
//     fetched tags) ──► sessions end (unmap, close /dev/ublkcN) ──► DEL_DEV
//     (it waits until /dev/ublkcN is released: the order matters)
//
// Every control command is bounded (native: UBLK_*_TIMEOUT_MS); a start
// that fails part-way undoes what it did, so no device is left behind.

import type { EngineControl, ExportTarget, HostedSession } from '../../engine/api';
import { UblksnapError } from '../../shared/errors';
import { SECTOR_BYTES } from '../../shared/units';
import {
  ublkAddDevice, ublkDeleteDevice, ublkSetParams, ublkStartDevice, ublkStopDevice, type UblkParams,
} from '../../native/ublk';
import { UBLK_SESSION_MODULE, type UblkSessionPayload } from './session';

/**
 * A control command (ADD, SET_PARAMS, STOP, DEL) that takes longer is
 * failed. Generous: under emulation and load, 10 s was seen to run out.
 */
export const UBLK_CONTROL_TIMEOUT_MS = 30_000;
/** START_DEV waits for every tag and the partition-table read: slower under emulation. */
export const UBLK_START_TIMEOUT_MS = 60_000;
/** The physical block size we report: the page, which every backing store handles whole. */
const PHYSICAL_BLOCK_SHIFT = 12;

export interface UblkDeviceOptions {
  queue_count: number;
  queue_depth: number;
  /** Bytes of each tag's buffer: the largest request the kernel sends. */
  max_io_bytes: number;
  /** UBLK_F_* flags asked for at ADD_DEV (user recovery where the kernel has it). */
  flags: bigint;
}

export class UblkDevice {
  private stopping: Promise<void> | null = null;

  private constructor(readonly dev_id: number, readonly export_name: string, readonly flags: bigint,
    private readonly sessions: HostedSession[]) {}

  get path(): string {
    return `/dev/ublkb${this.dev_id}`;
  }

  get queue_count(): number {
    return this.sessions.length;
  }

  static async create(engine: EngineControl, export_name: string, options: UblkDeviceOptions): Promise<UblkDevice> {
    const target = engine.resolveExport(export_name);
    const info = await ublkAddDevice({
      queue_count: options.queue_count, queue_depth: options.queue_depth, max_io_bytes: options.max_io_bytes, flags: options.flags,
    }, UBLK_CONTROL_TIMEOUT_MS);
    const sessions: HostedSession[] = [];
    try {
      await ublkSetParams(info.dev_id, paramsOf(target, options.max_io_bytes), UBLK_CONTROL_TIMEOUT_MS);
      for (let queue_id = 0; queue_id < options.queue_count; queue_id += 1) {
        const payload: UblkSessionPayload = { dev_id: info.dev_id, queue_id, flags: info.flags, size_bytes: target.size_bytes };
        sessions.push(engine.hostSession({
          module: UBLK_SESSION_MODULE, frontend: 'ublk', target_handle: target.handle,
          queue_depth: options.queue_depth, max_io_bytes: options.max_io_bytes, payload,
        }));
      }
      // A queue that fails to arm ends its session: START_DEV would wait for it forever.
      const armed_or_failed = sessions.map((session) => session.finished.then(() => {
        throw new UblksnapError('EIO', `ublk device ${info.dev_id}: a queue ended before the device started`);
      }));
      await Promise.race([ublkStartDevice(info.dev_id, UBLK_START_TIMEOUT_MS), ...armed_or_failed]);
    } catch (error) {
      await teardown(info.dev_id, sessions);
      throw error;
    }
    return new UblkDevice(info.dev_id, export_name, info.flags, sessions);
  }

  /** Stops and deletes the device; its holders see I/O errors from now on. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= teardown(this.dev_id, this.sessions);
    return this.stopping;
  }
}

async function teardown(dev_id: number, sessions: HostedSession[]): Promise<void> {
  // STOP_DEV fails (ENODEV-like) on a device that never started: that is fine here.
  await ublkStopDevice(dev_id, UBLK_CONTROL_TIMEOUT_MS).catch(() => undefined);
  for (const session of sessions) session.close();
  await Promise.allSettled(sessions.map((session) => session.finished));
  await ublkDeleteDevice(dev_id, UBLK_CONTROL_TIMEOUT_MS);
}

/** The block-queue limits of an export, as the loop driver would give a file of the same geometry. */
export function paramsOf(target: ExportTarget, max_io_bytes: number): UblkParams {
  const logical_block_shift = Math.log2(target.logical_block_bytes);
  const max_sectors = max_io_bytes / SECTOR_BYTES;
  return {
    capacity_sectors: Math.floor(target.size_bytes / SECTOR_BYTES),
    logical_block_shift,
    physical_block_shift: Math.max(PHYSICAL_BLOCK_SHIFT, logical_block_shift),
    io_min_shift: logical_block_shift,
    io_opt_shift: PHYSICAL_BLOCK_SHIFT,
    max_sectors,
    read_only: !target.writable,
    volatile_cache: true,
    fua: true,
    discard: {
      granularity_bytes: Math.max(1 << PHYSICAL_BLOCK_SHIFT, target.logical_block_bytes),
      alignment_bytes: 0,
      // The engine takes a request of at most one slot: the kernel splits larger ones.
      max_discard_sectors: max_sectors,
      max_write_zeroes_sectors: max_sectors,
      max_discard_segments: 1,
    },
  };
}

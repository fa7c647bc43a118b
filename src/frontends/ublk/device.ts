// One export served as /dev/ublkbN: the device's life on the main thread.
//
//   create:   ADD_DEV ─► record saved ─► SET_PARAMS ─► queue sessions hosted
//     by the I/O actors (each opens /dev/ublkcN, maps its descriptors,
//     FETCHes every tag) ─► START_DEV from here, while the actors already
//     serve: the kernel waits for every tag, then reads the partition
//     table through them
//   recover:  (a device a previous daemon served, now QUIESCED) GET_DEV_INFO
//     ─► START_USER_RECOVERY (EBUSY until the old server is gone: retried)
//     ─► queue sessions as above ─► END_USER_RECOVERY: the kernel waits for
//     every tag, then replays what it held back. No SET_PARAMS: the kernel
//     keeps the old parameters, so the export must still match the record.
//   … served …
//   stop:     STOP_DEV (the kernel completes what is in flight, then aborts
//     the fetched tags) ─► sessions end (unmap, close /dev/ublkcN) ─► DEL_DEV
//     (it waits until /dev/ublkcN is released: the order matters) ─► record
//     removed
//   hand over (planned restart): sessions answer what they hold, leave new
//     requests to the kernel and end; no STOP, no DEL: the device stays,
//     quiesced, its holders' I/O waiting for the next daemon's recover.
//
// Every control command is bounded (UBLK_*_TIMEOUT_MS); a start that fails
// part-way undoes what it did, so no device is left behind.

import type { EngineControl, ExportTarget, HostedSession } from '../../engine/api';
import { UblksnapError } from '../../shared/errors';
import { SECTOR_BYTES } from '../../shared/units';
import {
  ublkAddDevice, ublkDeleteDevice, ublkEndUserRecovery, ublkGetDeviceInfo, ublkSetParams, ublkStartDevice,
  ublkStartUserRecovery, ublkStopDevice, UBLK_F_USER_RECOVERY, type UblkParams,
} from '../../native/ublk';
import type { DeviceRecords, UblkDeviceRecord } from './device-records';
import { UBLK_SESSION_MODULE, type UblkSessionPayload } from './session';

/**
 * A control command (ADD, SET_PARAMS, STOP, DEL) that takes longer is
 * failed. Generous: under emulation and load, 10 s was seen to run out.
 */
export const UBLK_CONTROL_TIMEOUT_MS = 30_000;
/** START_DEV waits for every tag and the partition-table read: slower under emulation. */
export const UBLK_START_TIMEOUT_MS = 60_000;
/**
 * START_USER_RECOVERY answers EBUSY until the kernel has seen the old
 * server go (its queues' io_urings torn down); ublksrv waits as long.
 */
export const UBLK_RECOVERY_WAIT_MS = 30_000;
const UBLK_RECOVERY_RETRY_MS = 100;
/** The physical block size we report: the page, which every backing store handles whole. */
const PHYSICAL_BLOCK_SHIFT = 12;

export interface UblkDeviceOptions {
  queue_count: number;
  queue_depth: number;
  /** Bytes of each tag's buffer: the largest request the kernel sends. */
  max_io_bytes: number;
  /** UBLK_F_* flags asked for at ADD_DEV (user recovery where the kernel has it). */
  flags: bigint;
  /**
   * Flags a volume's device adds: UBLK_F_NEED_GET_DATA, so that a write
   * the queue serves directly can have its data copied by the kernel
   * straight into the volume's pages (native/src/direct-volume.h, "Mapped
   * writes"). An image's writes always go through copy-on-write: it gains nothing.
   */
  volume_flags: bigint;
}

export class UblkDevice {
  private stopping: Promise<void> | null = null;

  private constructor(readonly dev_id: number, readonly export_name: string, readonly kind: ExportTarget['kind'],
    readonly flags: bigint, private readonly sessions: HostedSession[], private readonly records: DeviceRecords) {}

  get path(): string {
    return `/dev/ublkb${this.dev_id}`;
  }

  get queue_count(): number {
    return this.sessions.length;
  }

  /** A new device for the export. */
  static async create(engine: EngineControl, export_name: string, options: UblkDeviceOptions,
    records: DeviceRecords): Promise<UblkDevice> {
    const target = engine.resolveExport(export_name);
    const info = await ublkAddDevice({
      queue_count: options.queue_count, queue_depth: options.queue_depth, max_io_bytes: options.max_io_bytes,
      flags: target.kind === 'volume' ? options.flags | options.volume_flags : options.flags,
    }, UBLK_CONTROL_TIMEOUT_MS);
    const sessions: HostedSession[] = [];
    try {
      records.save(recordOf(info.dev_id, export_name, target, options));
      await ublkSetParams(info.dev_id, paramsOf(target, options.max_io_bytes), UBLK_CONTROL_TIMEOUT_MS);
      sessions.push(...hostQueues(engine, target, info.dev_id, info.flags, options));
      await serveWhile(sessions, info.dev_id, ublkStartDevice(info.dev_id, UBLK_START_TIMEOUT_MS));
    } catch (error) {
      await teardown(info.dev_id, sessions, records);
      throw error;
    }
    return new UblkDevice(info.dev_id, export_name, target.kind, info.flags, sessions, records);
  }

  /**
   * Takes back a device a previous daemon served (its record), serving the
   * same export under the same /dev/ublkbN. Throws EINVAL, without touching
   * the device, when the export no longer matches what the kernel was told.
   */
  static async recover(engine: EngineControl, record: UblkDeviceRecord, options: UblkDeviceOptions,
    records: DeviceRecords): Promise<UblkDevice> {
    const target = engine.resolveExport(record.export_name);
    const mismatch = recoveryMismatch(record, target, options);
    if (mismatch !== null) throw new UblksnapError('EINVAL', `ublk device ${record.dev_id} cannot be taken back: ${mismatch}`);
    const info = await ublkGetDeviceInfo(record.dev_id, UBLK_CONTROL_TIMEOUT_MS);
    if ((info.flags & UBLK_F_USER_RECOVERY) === 0n) {
      throw new UblksnapError('EINVAL', `ublk device ${record.dev_id} was made without user recovery: it cannot be taken back`);
    }
    if (info.queue_count !== record.queue_count || info.queue_depth !== record.queue_depth || info.max_io_bytes !== record.max_io_bytes) {
      throw new UblksnapError('EINVAL', `ublk device ${record.dev_id} has another queue shape than its record`);
    }
    await startUserRecovery(record.dev_id);
    const sessions: HostedSession[] = [];
    try {
      sessions.push(...hostQueues(engine, target, record.dev_id, info.flags, options));
      await serveWhile(sessions, record.dev_id, ublkEndUserRecovery(record.dev_id, UBLK_START_TIMEOUT_MS));
      records.save({ ...record, server_pid: process.pid });
    } catch (error) {
      await teardown(record.dev_id, sessions, records);
      throw error;
    }
    return new UblkDevice(record.dev_id, record.export_name, target.kind, info.flags, sessions, records);
  }

  /** Stops and deletes the device; its holders see I/O errors from now on. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= teardown(this.dev_id, this.sessions, this.records);
    return this.stopping;
  }

  /**
   * Lets go of the device for the next daemon (planned restart): the queues
   * answer what they hold and end, requests arriving meanwhile stay with the
   * kernel, and the device and its record stay. Idempotent.
   */
  handOver(): Promise<void> {
    this.stopping ??= (async () => {
      for (const session of this.sessions) session.drain();
      await Promise.allSettled(this.sessions.map((session) => session.finished));
    })();
    return this.stopping;
  }
}

/** Deletes a device this daemon does not serve (left by an earlier one), and its record. */
export async function deleteDevice(dev_id: number, records: DeviceRecords): Promise<void> {
  await teardown(dev_id, [], records);
}

function recordOf(dev_id: number, export_name: string, target: ExportTarget, options: UblkDeviceOptions): UblkDeviceRecord {
  return {
    dev_id, export_name, kind: target.kind, size_bytes: target.size_bytes, logical_block_bytes: target.logical_block_bytes,
    writable: target.writable, queue_count: options.queue_count, queue_depth: options.queue_depth,
    max_io_bytes: options.max_io_bytes, server_pid: process.pid,
  };
}

/** Why the kernel's view of a device (its record) no longer fits the export, or null. */
function recoveryMismatch(record: UblkDeviceRecord, target: ExportTarget, options: UblkDeviceOptions): string | null {
  if (target.size_bytes !== record.size_bytes) return `${record.export_name} is ${target.size_bytes} bytes now, ${record.size_bytes} before`;
  if (target.logical_block_bytes !== record.logical_block_bytes) return `${record.export_name} changed its logical block size`;
  if (target.writable !== record.writable) return `${record.export_name} changed between read-only and writable`;
  if (options.queue_depth !== record.queue_depth || options.max_io_bytes !== record.max_io_bytes || options.queue_count !== record.queue_count) {
    return 'this daemon serves another queue shape';
  }
  return null;
}

/** START_USER_RECOVERY, retried while the kernel still sees the old server (EBUSY). */
async function startUserRecovery(dev_id: number): Promise<void> {
  const deadline = Date.now() + UBLK_RECOVERY_WAIT_MS;
  for (;;) {
    try {
      await ublkStartUserRecovery(dev_id, UBLK_CONTROL_TIMEOUT_MS);
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== 'EBUSY' || Date.now() >= deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, UBLK_RECOVERY_RETRY_MS));
  }
}

function hostQueues(engine: EngineControl, target: ExportTarget, dev_id: number, flags: bigint, options: UblkDeviceOptions): HostedSession[] {
  const sessions: HostedSession[] = [];
  for (let queue_id = 0; queue_id < options.queue_count; queue_id += 1) {
    const payload: UblkSessionPayload = { dev_id, queue_id, flags, size_bytes: target.size_bytes };
    sessions.push(engine.hostSession({
      module: UBLK_SESSION_MODULE, frontend: 'ublk', target_handle: target.handle,
      queue_depth: options.queue_depth, max_io_bytes: options.max_io_bytes, payload,
    }));
  }
  return sessions;
}

/**
 * Waits for a command the kernel completes only once every tag is fetched
 * (START_DEV, END_USER_RECOVERY). A queue that fails to arm ends its
 * session: the command would wait for it until its timeout.
 */
async function serveWhile(sessions: HostedSession[], dev_id: number, command: Promise<void>): Promise<void> {
  const armed_or_failed = sessions.map((session) => session.finished.then(() => {
    throw new UblksnapError('EIO', `ublk device ${dev_id}: a queue ended before the device started`);
  }));
  await Promise.race([command, ...armed_or_failed]);
}

async function teardown(dev_id: number, sessions: HostedSession[], records: DeviceRecords): Promise<void> {
  // STOP_DEV fails (ENODEV-like) on a device that never started: that is fine here.
  await ublkStopDevice(dev_id, UBLK_CONTROL_TIMEOUT_MS).catch(() => undefined);
  for (const session of sessions) session.close();
  await Promise.allSettled(sessions.map((session) => session.finished));
  await ublkDeleteDevice(dev_id, UBLK_CONTROL_TIMEOUT_MS);
  records.remove(dev_id);
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

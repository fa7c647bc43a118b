// The ublk frontend: exports as /dev/ublkbN block devices (device.ts), one
// per published export, each served by queue sessions in the I/O actors
// (session.ts). The daemon knows it through the Frontend contract
// (../frontend.ts).
//
// Without ublk in the kernel the frontend still starts, says why once, and
// refuses each publish with that reason (ENODEV): NBD keeps working.
//
// Restarts (user recovery): every device has a record in the state dir
// (device-records.ts). At start the frontend looks at what the records name:
// a device still there is kept for its export, and taken back — same
// /dev/ublkbN, its holders' queued I/O replayed — when the export comes back
// (publish, or afterRestore once the daemon has attached its volumes). An
// image device is deleted at once (snapshots do not outlive a daemon), and
// so is a device whose export did not come back: its holders get EIO rather
// than I/O that waits forever.

import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { EngineControl } from '../../engine/api';
import { UblksnapError } from '../../shared/errors';
import {
  ublkControlAvailable, ublkGetDeviceInfo, ublkGetFeatures, UBLK_F_NEED_GET_DATA, UBLK_F_USER_RECOVERY, UBLK_F_USER_RECOVERY_REISSUE,
} from '../../native/ublk';
import type { Frontend, FrontendContext, FrontendStatus, FrontendStopOptions } from '../frontend';
import { ublkUnavailableReason } from './driver-diagnosis';
import { DeviceRecords, type UblkDeviceRecord } from './device-records';
import { freezeMounted } from './freeze';
import { findHolders } from './holders';
import { processExited } from '../../shared/process-state';
import { findLeftovers } from './leftovers';
import { deviceNumber, devicesUnder } from './stack';
import { deleteDevice, UblkDevice, UBLK_CONTROL_TIMEOUT_MS } from './device';
import { ublkHostingFrom } from './session';

/**
 * One queue: the kernel spreads requests over queues by submitting CPU, and
 * one queue keeps a device on one actor (its chunk locks uncontended).
 */
export const UBLK_QUEUE_COUNT = 1;
/** Requests in flight per queue; × UBLK_MAX_IO_BYTES of slab per queue (32 MiB). */
export const UBLK_QUEUE_DEPTH = 64;
/** The largest request the kernel sends us (max_sectors): larger ones it splits. */
export const UBLK_MAX_IO_BYTES = 512 * 1024;
/** The OOM killer never picks a process with this score. */
const OOM_SCORE_ADJ_MIN = -1000;

export class UblkFrontend implements Frontend {
  readonly kind = 'ublk' as const;
  private readonly devices = new Map<string, UblkDevice>();
  /** Publishes in progress, so a second publish of the same export waits for the first. */
  private readonly pending = new Map<string, Promise<UblkDevice>>();
  /** Devices an earlier daemon served, by export, waiting to be taken back. */
  private readonly kept = new Map<string, UblkDeviceRecord>();
  private readonly records: DeviceRecords;
  private unavailable: string | null = null;
  private flags = 0n;
  private volume_flags = 0n;

  constructor(private readonly context: FrontendContext) {
    this.records = new DeviceRecords(context.state_dir);
  }

  private get engine(): EngineControl {
    return this.context.engine;
  }

  async start(): Promise<void> {
    // A bad hosting switch fails the start here, not each queue in its actor later.
    ublkHostingFrom(process.env);
    const probe = ublkControlAvailable();
    if (!probe.available) {
      this.unavailable = ublkUnavailableReason(probe.code, probe.reason);
      this.context.logger.warn({ reason: probe.reason }, 'ublk frontend unavailable: volumes and images are served over NBD only');
      return;
    }
    this.protectFromOomKiller();
    const features = await ublkGetFeatures(UBLK_CONTROL_TIMEOUT_MS);
    // User recovery lets a restarted daemon take its devices back (and REISSUE
    // replays what the old one had not answered) where the kernel has it.
    const recovery = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
    this.flags = (features & recovery) === recovery ? recovery : 0n;
    // UBLKSNAP_UBLK_MAPPED_WRITES=0: volumes' writes always through the slot (for comparisons).
    const mapped_writes = process.env.UBLKSNAP_UBLK_MAPPED_WRITES !== '0' && (features & UBLK_F_NEED_GET_DATA) !== 0n;
    this.volume_flags = mapped_writes ? UBLK_F_NEED_GET_DATA : 0n;
    this.context.logger.info({ features: `0x${features.toString(16)}`, flags: `0x${this.flags.toString(16)}`, volume_flags: `0x${this.volume_flags.toString(16)}` }, 'ublk frontend ready');
    await this.takeStock();
  }

  /** Sorts what the records of an earlier daemon name: gone, to delete, or to take back. */
  private async takeStock(): Promise<void> {
    const { records, bad } = this.records.load();
    for (const { file, reason } of bad) this.context.logger.error({ file, reason }, 'unreadable ublk device record left in place');
    for (const record of records) {
      const log = this.context.logger.child({ dev_id: record.dev_id, export: record.export_name });
      let state: string;
      try {
        const info = await ublkGetDeviceInfo(record.dev_id, UBLK_CONTROL_TIMEOUT_MS);
        if (info.server_pid !== process.pid && info.server_pid !== record.server_pid && !processExited(info.server_pid)) {
          log.warn({ server_pid: info.server_pid }, 'ublk device of a record is served by another process: left alone');
          continue;
        }
        state = `state ${info.state}`;
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (code !== 'ENODEV' && code !== 'ENOENT') {
          // A timeout or the like says nothing about the device: keep the record for the next start.
          log.error({ err: (error as Error).message }, 'could not look at the ublk device of a record: left as it is');
          continue;
        }
        // Deleted meanwhile (or a reboot): the record is all that is left.
        log.info({ err: (error as Error).message }, 'ublk device of a record is gone: record removed');
        this.records.remove(record.dev_id);
        continue;
      }
      if (record.kind === 'image') {
        log.warn('deleting the ublk device of a snapshot image: snapshots do not outlive the daemon, its holders get EIO');
        await this.deleteLeftDevice(record);
        continue;
      }
      log.info({ state }, 'ublk device kept for its volume: taken back when the volume is attached');
      this.kept.set(record.export_name, record);
    }
  }

  async afterRestore(): Promise<void> {
    const exports = new Set(this.engine.exportNames());
    for (const [export_name, record] of [...this.kept]) {
      if (exports.has(export_name)) {
        await this.publish(export_name).catch((error: unknown) => {
          this.context.logger.error({ export: export_name, err: (error as Error).message }, 'could not serve the volume as a ublk device again');
        });
        continue;
      }
      this.kept.delete(export_name);
      this.context.logger.warn({ export: export_name, dev_id: record.dev_id },
        'the volume of a ublk device did not come back: deleting the device, its holders get EIO');
      await this.deleteLeftDevice(record);
    }
  }

  private async deleteLeftDevice(record: UblkDeviceRecord): Promise<void> {
    await deleteDevice(record.dev_id, this.records).catch((error: unknown) => {
      this.context.logger.error({ dev_id: record.dev_id, err: (error as Error).message }, 'could not delete a ublk device left behind');
    });
  }

  /**
   * Killing the daemon to free memory would fail every device it serves,
   * and with them the filesystems whose dirty pages are the memory.
   */
  private protectFromOomKiller(): void {
    try {
      writeFileSync('/proc/self/oom_score_adj', String(OOM_SCORE_ADJ_MIN));
    } catch (error) {
      // EACCES without CAP_SYS_RESOURCE: say so and go on.
      this.context.logger.warn({ err: (error as Error).message }, 'could not lower the OOM score');
    }
  }

  /** Deletes every device, or (restarting) hands the volumes' devices over to the next daemon. */
  async stop(options: FrontendStopOptions = {}): Promise<void> {
    await Promise.allSettled([...this.pending.values()]);
    const devices = [...this.devices.values()];
    this.devices.clear();
    await Promise.allSettled(devices.map((device) => {
      if (options.restarting !== true || device.kind === 'image') return device.stop();
      this.context.logger.info({ export: device.export_name, device: device.path }, 'ublk device handed over: it waits for the next daemon');
      return device.handOver();
    }));
  }

  cleanLeftovers(dry_run: boolean): Promise<string[]> {
    // Without ublk in the kernel no device can have been left behind.
    if (this.unavailable !== null) return Promise.resolve([]);
    const served = new Set([...this.devices.values()].map((device) => device.dev_id));
    for (const record of this.kept.values()) served.add(record.dev_id);
    return findLeftovers(served, this.records, dry_run);
  }

  status(): FrontendStatus {
    const details: Record<string, string | number | boolean> = { available: this.unavailable === null };
    if (this.unavailable !== null) details.reason = this.unavailable;
    for (const [name, device] of this.devices) {
      details[name] = `${device.path} queues=${device.queue_count} in_flight=${inFlight(device.path)}`;
    }
    return { kind: this.kind, listening: [...this.devices.values()].map((device) => device.path), connections: this.devices.size, details };
  }

  /** Freezes the filesystems mounted on these exports' devices (freeze.ts). */
  quiesceForTake(export_names: string[]): Promise<() => Promise<void>> {
    const devices = export_names.flatMap((name) => {
      const device = this.devices.get(name);
      return device === undefined ? [] : [device.path];
    });
    return freezeMounted(devices, this.context.logger);
  }

  refuseStorageOn(storage_path: string, export_names: string[]): void {
    const own = export_names.flatMap((name) => {
      const device = this.devices.get(name);
      return device === undefined ? [] : [{ name, device: device.path, number: deviceNumber(statSync(device.path).rdev) }];
    });
    if (own.length === 0) return;
    const under = devicesUnder(storage_path);
    const hit = own.find((candidate) => under.includes(candidate.number));
    if (hit !== undefined) {
      throw new UblksnapError('EINVAL', `the difference storage ${storage_path} lies on ${hit.device}, the device of volume ${hit.name}:`
        + ' copy-on-write would write into the volume it saves; put it elsewhere');
    }
  }

  assertAvailable(): void {
    if (this.unavailable !== null) throw new UblksnapError('ENODEV', this.unavailable);
  }

  async publish(export_name: string): Promise<string> {
    this.assertAvailable();
    const existing = this.devices.get(export_name) ?? await this.pending.get(export_name);
    if (existing !== undefined) return existing.path;
    const creating = this.takeBackOrCreate(export_name);
    this.pending.set(export_name, creating);
    try {
      const device = await creating;
      this.devices.set(export_name, device);
      this.context.logger.info({ export: export_name, device: device.path }, 'ublk device started');
      return device.path;
    } finally {
      this.pending.delete(export_name);
    }
  }

  /** The device an earlier daemon left for this export, else a new one. */
  private async takeBackOrCreate(export_name: string): Promise<UblkDevice> {
    const options = { queue_count: UBLK_QUEUE_COUNT, queue_depth: UBLK_QUEUE_DEPTH, max_io_bytes: UBLK_MAX_IO_BYTES, flags: this.flags, volume_flags: this.volume_flags };
    const record = this.kept.get(export_name);
    if (record !== undefined) {
      this.kept.delete(export_name);
      try {
        const device = await UblkDevice.recover(this.engine, record, options, this.records);
        this.context.logger.info({ export: export_name, device: device.path }, 'ublk device taken back from the previous daemon');
        return device;
      } catch (error) {
        this.context.logger.error({ export: export_name, dev_id: record.dev_id, err: (error as Error).message },
          'could not take the ublk device back: deleting it (its holders get EIO) and making a new one');
        await this.deleteLeftDevice(record);
      }
    }
    return UblkDevice.create(this.engine, export_name, options, this.records);
  }

  addressOf(export_name: string): string | null {
    return this.devices.get(export_name)?.path ?? null;
  }

  /** A device's users are its holders(): it has no clients of its own. */
  clients(export_name: string): string[] {
    void export_name;
    return [];
  }

  holders(export_name: string): string[] {
    const device = this.devices.get(export_name);
    return device === undefined ? [] : findHolders(device.path).map((holder) => `${device.path}: ${holder}`);
  }

  async unpublish(export_name: string): Promise<void> {
    const device = this.devices.get(export_name);
    if (device === undefined) return;
    this.devices.delete(export_name);
    await device.stop();
    this.context.logger.info({ export: export_name, device: device.path }, 'ublk device deleted');
  }
}

/**
 * Requests the block layer has issued to the device and not completed
 * (reads + writes, /sys/block/<dev>/inflight): what its queue holds now.
 */
function inFlight(device_path: string): string {
  try {
    const [reads, writes] = readFileSync(`/sys/block/${path.basename(device_path)}/inflight`, 'utf8').trim().split(/\s+/).map(Number);
    return String((reads ?? 0) + (writes ?? 0));
  } catch {
    return 'unknown';
  }
}

export const ublkFrontendFactory = {
  kind: 'ublk' as const,
  create(context: FrontendContext): UblkFrontend {
    return new UblkFrontend(context);
  },
};

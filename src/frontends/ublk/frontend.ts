// The ublk frontend: exports as /dev/ublkbN block devices (device.ts), one
// per published export, each served by queue sessions in the I/O actors
// (session.ts). The daemon knows it through the Frontend contract
// (../frontend.ts).
//
// Without ublk in the kernel the frontend still starts, says why once, and
// refuses each publish with that reason (ENODEV): NBD keeps working.

import { statSync, writeFileSync } from 'node:fs';
import type { EngineControl } from '../../engine/api';
import { UblksnapError } from '../../shared/errors';
import {
  ublkControlAvailable, ublkGetFeatures, UBLK_F_USER_RECOVERY, UBLK_F_USER_RECOVERY_REISSUE,
} from '../../native/ublk';
import type { Frontend, FrontendContext, FrontendStatus } from '../frontend';
import { freezeMounted } from './freeze';
import { findHolders } from './holders';
import { deviceNumber, devicesUnder } from './stack';
import { UblkDevice, UBLK_CONTROL_TIMEOUT_MS } from './device';

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
  private unavailable: string | null = null;
  private flags = 0n;

  constructor(private readonly context: FrontendContext) {}

  private get engine(): EngineControl {
    return this.context.engine;
  }

  async start(): Promise<void> {
    const probe = ublkControlAvailable();
    if (!probe.available) {
      this.unavailable = probe.reason;
      this.context.logger.warn({ reason: probe.reason }, 'ublk frontend unavailable: volumes and images are served over NBD only');
      return;
    }
    this.protectFromOomKiller();
    const features = await ublkGetFeatures(UBLK_CONTROL_TIMEOUT_MS);
    // User recovery lets a restarted daemon take its devices back (and REISSUE
    // replays what the old one had not answered) where the kernel has it.
    const recovery = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
    this.flags = (features & recovery) === recovery ? recovery : 0n;
    this.context.logger.info({ features: `0x${features.toString(16)}`, flags: `0x${this.flags.toString(16)}` }, 'ublk frontend ready');
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

  async stop(): Promise<void> {
    await Promise.allSettled([...this.pending.values()]);
    const devices = [...this.devices.values()];
    this.devices.clear();
    await Promise.allSettled(devices.map((device) => device.stop()));
  }

  status(): FrontendStatus {
    const details: Record<string, string | number | boolean> = { available: this.unavailable === null };
    if (this.unavailable !== null) details.reason = this.unavailable;
    for (const [name, device] of this.devices) details[name] = `${device.path} queues=${device.queue_count}`;
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
    const creating = UblkDevice.create(this.engine, export_name, {
      queue_count: UBLK_QUEUE_COUNT, queue_depth: UBLK_QUEUE_DEPTH, max_io_bytes: UBLK_MAX_IO_BYTES, flags: this.flags,
    });
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

  addressOf(export_name: string): string | null {
    return this.devices.get(export_name)?.path ?? null;
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

export const ublkFrontendFactory = {
  kind: 'ublk' as const,
  create(context: FrontendContext): UblkFrontend {
    return new UblkFrontend(context);
  },
};

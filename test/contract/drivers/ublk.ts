// The ublk frontend through the kernel: the frontend of src/frontends/ublk on
// the harness's engine publishes one /dev/ublkbN per opened export, and the
// targets read and write that device with O_DIRECT, so every request goes
// through the kernel's block layer and ublk_drv to the engine and back, and
// no page cache hides what the engine did.
//
//   BlockTarget.read/write ──► an I/O slot: pread/pwrite on libuv's pool, on
//     /dev/ublkbN (O_DIRECT, aligned bounce) ──► block layer ──► ublk_drv ──►
//     queue session in an I/O actor ──► engine
//
// Design notes
// - One device per export, made at its first open() and deleted when its last
//   target closes; every target of an export shares the one descriptor, which
//   is opened exclusively (O_EXCL): nothing else on the machine writes it.
// - O_DIRECT wants buffers aligned to the device's DMA alignment and offsets
//   and lengths in whole logical blocks: data goes through each I/O slot's
//   page-aligned bounce buffer, and an unaligned range is refused with
//   EINVAL before it reaches the kernel (the scenarios keep their I/O in
//   sectors).
// - The I/O runs on libuv's pool, which the engine's actors share: see
//   UV_THREADPOOL_SIZE_MIN for why the driver needs a bigger pool.
// - Errors come back as the errno of pread/pwrite/fdatasync: EIO from the
//   engine (overflow, a destroyed image), ENODEV if the device went away.
// - open() resolves the export first: a destroyed image no longer opens, as
//   through the other frontends, even while its device still exists.
// - The driver counts what it did (devices, requests) and prints it at close
//   on one UBLK_DRIVER_STATS_PREFIX line: the guest program
//   (test/guest/contract-ublk.guest.ts) refuses a run that never touched a
//   device, so a silently skipping driver cannot pass.
// - Without ublk (the host kernel), unavailable() says why and names the
//   guest program that runs these scenarios instead, when it exists: the
//   harness then skips honestly, even in CI, because the guest suite runs it.

import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, fdatasync, read, write } from 'node:fs';
import { constants as os_constants } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { UblkFrontend } from '../../../src/frontends/ublk/frontend';
import { DIRECT_IO_ALIGNMENT_BYTES, alignedOffset, blockDeviceInfo, openExclusive } from '../../../src/native';
import { ublkControlAvailable } from '../../../src/native/ublk';
import { BlockIoError, ERRNO, type BlockTarget } from '../../lib/block-target';
import { UBLK_DRIVER_STATS_PREFIX, type UblkDriverStats } from '../report-lines';
import type { DriverFactory, FrontendDriver, Unavailability } from './driver';

/**
 * Requests the driver has in the kernel at once (more wait their turn here).
 * take-quiesce needs 3: one write held inside the engine, two parked at the
 * frozen gate. Each costs a libuv pool thread blocked in the kernel and a
 * bounce buffer of REQUEST_BYTES_MAX.
 */
const IO_SLOT_COUNT = 8;
/**
 * libuv's pool threads the process must have. A pread on /dev/ublkbN blocks
 * its pool thread until the engine answers, and the engine's actors use the
 * same process-wide pool for their deferred writes: with libuv's default of
 * 4, our requests could hold every thread while the engine write that would
 * end them waits in the pool's queue (a deadlock). With this many, at most
 * IO_SLOT_COUNT of them are ours, never all.
 */
const UV_THREADPOOL_SIZE_MIN = 4 * IO_SLOT_COUNT;
/** The largest single pread/pwrite: a larger request is split (the kernel splits at 512 KiB anyway). */
const REQUEST_BYTES_MAX = 1 << 20;

/** The device node appears with START_DEV (devtmpfs); past this something is wrong. */
const DEVICE_NODE_WAIT_MS = 10_000;
const DEVICE_NODE_POLL_MS = 20;
const MODPROBE_TIMEOUT_MS = 30_000;
const ROOT_UID = 0;
const UBLK_CONTROL_PATH = '/dev/ublk-control';
/** The guest programs that run the scenarios through this driver where ublk exists (compiled beside us). */
export const GUEST_PROGRAMS = ['contract-ublk.guest.js', 'contract-ublk-errors.guest.js', 'contract-ublk-patterns.guest.js']
  .map((name) => path.resolve(__dirname, '../../guest', name));
/** One request's place: its page-aligned bounce buffer, where O_DIRECT data goes in and out. */
interface IoSlot {
  view: Uint8Array;
}

/**
 * IO_SLOT_COUNT slots, each carrying one request at a time on libuv's pool
 * (fs.read/fs.write/fs.fdatasync); requests wait for a free slot in order.
 */
class IoSlots {
  private readonly idle: IoSlot[] = [];
  private readonly waiting: ((slot: IoSlot) => void)[] = [];

  constructor(count: number) {
    for (let i = 0; i < count; i += 1) {
      const bounce = new ArrayBuffer(REQUEST_BYTES_MAX + DIRECT_IO_ALIGNMENT_BYTES);
      this.idle.push({ view: new Uint8Array(bounce, alignedOffset(bounce, DIRECT_IO_ALIGNMENT_BYTES), REQUEST_BYTES_MAX) });
    }
  }

  /**
   * Runs one request (length_bytes ≤ REQUEST_BYTES_MAX) in a free slot:
   * resolves with the bytes moved and, for a read, the data in a new Buffer;
   * rejects with the system call's error.
   */
  async run(op: IoOp, fd: number, offset_bytes: number, length_bytes: number, data?: Uint8Array): Promise<{ bytes: number; data: Buffer | null }> {
    const slot = this.idle.pop() ?? await new Promise<IoSlot>((resolve) => this.waiting.push(resolve));
    try {
      if (op === 'flush') {
        await new Promise<void>((resolve, reject) => fdatasync(fd, (error) => (error ? reject(error) : resolve())));
        return { bytes: 0, data: null };
      }
      if (data !== undefined) slot.view.set(data);
      const bytes = await new Promise<number>((resolve, reject) => {
        const done = (error: NodeJS.ErrnoException | null, moved: number): void => (error ? reject(error) : resolve(moved));
        if (op === 'read') read(fd, slot.view, 0, length_bytes, offset_bytes, done);
        else write(fd, slot.view, 0, length_bytes, offset_bytes, done);
      });
      return { bytes, data: op === 'read' ? Buffer.from(slot.view.subarray(0, bytes)) : null };
    } finally {
      const next = this.waiting.shift();
      if (next !== undefined) next(slot);
      else this.idle.push(slot);
    }
  }
}

type IoOp = 'read' | 'write' | 'flush';

/** The positive errno of a failed fs call (Node's own errors carry it negative, with the code). */
function errnoOf(error: unknown): number {
  const code = (error as NodeJS.ErrnoException).code;
  const by_code = code === undefined ? undefined : (os_constants.errno as Record<string, number>)[code];
  if (by_code !== undefined) return by_code;
  throw error;
}

/** A published export's device, opened once and shared by its targets. */
interface OpenDevice {
  export_name: string;
  path: string;
  fd: number;
  logical_block_bytes: number;
  size_bytes: number;
  targets: number;
}

function checkAligned(device: OpenDevice, offset_bytes: number, length_bytes: number, what: string): void {
  const block = device.logical_block_bytes;
  if (offset_bytes % block !== 0 || length_bytes % block !== 0 || length_bytes === 0) {
    // O_DIRECT takes whole logical blocks only: refuse here, with the reason, rather than let the kernel say EINVAL alone.
    throw new BlockIoError(ERRNO.EINVAL, `${device.path} (${device.export_name}): ${what} of ${length_bytes} bytes at ${offset_bytes} `
      + `is not in whole ${block}-byte blocks (O_DIRECT)`);
  }
}

class UblkTarget implements BlockTarget {
  private closed = false;

  constructor(private readonly device: OpenDevice, private readonly slots: IoSlots,
    private readonly stats: UblkDriverStats, private readonly release: (device: OpenDevice) => Promise<void>) {}

  get export_name(): string {
    return this.device.export_name;
  }

  get size_bytes(): number {
    return this.device.size_bytes;
  }

  async read(offset_bytes: number, length_bytes: number): Promise<Buffer> {
    checkAligned(this.device, offset_bytes, length_bytes, 'read');
    const out = Buffer.alloc(length_bytes);
    await this.pieces(length_bytes, async (done, piece) => {
      const data = await this.request('read', offset_bytes + done, piece);
      data!.copy(out, done);
    });
    return out;
  }

  async write(offset_bytes: number, data: Uint8Array): Promise<void> {
    checkAligned(this.device, offset_bytes, data.byteLength, 'write');
    await this.pieces(data.byteLength, async (done, piece) => {
      await this.request('write', offset_bytes + done, piece, data.subarray(done, done + piece));
    });
  }

  async flush(): Promise<void> {
    await this.request('flush', 0, 0);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.release(this.device);
  }

  private async pieces(length_bytes: number, each: (done: number, piece: number) => Promise<void>): Promise<void> {
    const jobs: Promise<void>[] = [];
    for (let done = 0; done < length_bytes; done += REQUEST_BYTES_MAX) {
      jobs.push(each(done, Math.min(REQUEST_BYTES_MAX, length_bytes - done)));
    }
    await Promise.all(jobs);
  }

  private async request(op: IoOp, offset_bytes: number, length_bytes: number, data?: Uint8Array): Promise<Buffer | null> {
    const what = op === 'flush' ? 'fdatasync' : `${op} of ${length_bytes} bytes at ${offset_bytes}`;
    if (this.closed) throw new BlockIoError(ERRNO.EINVAL, `${this.device.path} (${this.export_name}): ${what} on a closed target`);
    if (op === 'read') this.stats.reads += 1;
    else if (op === 'write') this.stats.writes += 1;
    else this.stats.flushes += 1;
    let done: { bytes: number; data: Buffer | null };
    try {
      done = await this.slots.run(op, this.device.fd, offset_bytes, length_bytes, data);
    } catch (error) {
      this.stats.failed += 1;
      throw new BlockIoError(errnoOf(error), `${this.device.path} (${this.export_name}): ${what} (${(error as Error).message})`);
    }
    if (op !== 'flush' && done.bytes !== length_bytes) {
      // A short transfer on a block device means the range ran past its end: an error, never partial data.
      this.stats.failed += 1;
      throw new BlockIoError(ERRNO.EIO, `${this.device.path} (${this.export_name}): ${what} moved ${done.bytes} bytes`);
    }
    if (op === 'read') this.stats.bytes_read += length_bytes;
    else if (op === 'write') this.stats.bytes_written += length_bytes;
    return done.data;
  }
}

async function waitForNode(device_path: string): Promise<void> {
  const deadline = Date.now() + DEVICE_NODE_WAIT_MS;
  while (!existsSync(device_path)) {
    if (Date.now() > deadline) throw new Error(`${device_path} did not appear within ${DEVICE_NODE_WAIT_MS} ms of START_DEV`);
    await sleep(DEVICE_NODE_POLL_MS);
  }
}

/** The probe's answer: it runs modprobe, so once per process (a file defines several scenarios). */
let probed: { reason: string | null } | null = null;

/** Why ublk cannot run here, or null; loads ublk_drv first when we may (root, module present). */
function whyNoUblk(): string | null {
  probed ??= { reason: probeUblk() };
  return probed.reason;
}

function probeUblk(): string | null {
  if (process.platform !== 'linux') return `ublk is Linux only (this is ${process.platform})`;
  if (process.getuid?.() !== ROOT_UID) return 'ublk devices need root';
  if (!existsSync(UBLK_CONTROL_PATH)) {
    // A kernel without the module fails this quietly; the probe below then says what is missing.
    spawnSync('modprobe', ['-q', 'ublk_drv'], { stdio: 'ignore', timeout: MODPROBE_TIMEOUT_MS });
  }
  const probe = ublkControlAvailable();
  if (!probe.available) return probe.reason;
  // libuv reads this when its pool first starts, after the scenarios are
  // defined (no pool work happens while modules load and tests register):
  // set it now, unless the caller chose; start() refuses a smaller pool.
  process.env.UV_THREADPOOL_SIZE ??= String(UV_THREADPOOL_SIZE_MIN);
  return null;
}

/**
 * Why the driver cannot run, and where its scenarios run instead: honest
 * only while every guest program exists (the guest suite runs them, and
 * does not skip in CI); otherwise nowhere, so CI fails rather than skips.
 */
export function ublkUnavailability(reason: string, guest_programs: string[]): Unavailability {
  const covered = guest_programs.every((program) => existsSync(program));
  return {
    reason,
    covered_by: covered ? `the ublk guest runs these scenarios (${guest_programs.map((p) => path.basename(p, '.js')).join(', ')}; node dist/test/run.js guest-suite)` : null,
  };
}

export const ublkDriver: DriverFactory = {
  name: 'ublk',
  unavailable(): Unavailability | null {
    const reason = whyNoUblk();
    return reason === null ? null : ublkUnavailability(reason, GUEST_PROGRAMS);
  },
  async start(engine, scratch_dir): Promise<FrontendDriver> {
    const frontend = new UblkFrontend({
      engine, logger: pino({ level: process.env.CONTRACT_TEST_LOG ?? 'silent' }),
      nbd_socket: path.join(scratch_dir, 'unused-nbd.sock'), nbd_listen: null, state_dir: scratch_dir,
    });
    await frontend.start();
    frontend.assertAvailable();
    const pool_size = Number(process.env.UV_THREADPOOL_SIZE);
    if (!(pool_size >= UV_THREADPOOL_SIZE_MIN)) {
      throw new Error(`UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE}: the ublk driver needs at least ${UV_THREADPOOL_SIZE_MIN} (see UV_THREADPOOL_SIZE_MIN)`);
    }
    const slots = new IoSlots(IO_SLOT_COUNT);
    const stats: UblkDriverStats = { devices_opened: 0, reads: 0, writes: 0, flushes: 0, failed: 0, bytes_read: 0, bytes_written: 0, publish_ms: 0, unpublish_ms: 0 };
    const devices = new Map<string, Promise<OpenDevice>>();

    const publish = async (export_name: string): Promise<OpenDevice> => {
      const resolved = engine.resolveExport(export_name);
      const started_ms = Date.now();
      const device_path = await frontend.publish(export_name);
      try {
        await waitForNode(device_path);
        const fd = openExclusive(device_path, { write: true, direct: true });
        const info = blockDeviceInfo(fd);
        if (info.size_bytes !== resolved.size_bytes) {
          closeSync(fd);
          throw new Error(`${device_path} has ${info.size_bytes} bytes, export ${export_name} ${resolved.size_bytes}: not its device`);
        }
        stats.devices_opened += 1;
        stats.publish_ms += Date.now() - started_ms;
        return { export_name, path: device_path, fd, logical_block_bytes: info.logical_block_bytes, size_bytes: info.size_bytes, targets: 0 };
      } catch (error) {
        await frontend.unpublish(export_name);
        throw error;
      }
    };
    const release = async (device: OpenDevice): Promise<void> => {
      device.targets -= 1;
      if (device.targets > 0) return;
      devices.delete(device.export_name);
      closeSync(device.fd);
      const started_ms = Date.now();
      await frontend.unpublish(device.export_name);
      stats.unpublish_ms += Date.now() - started_ms;
    };

    return {
      name: 'ublk',
      async open(export_name: string): Promise<BlockTarget> {
        // A destroyed image must not open, even while its device is still there.
        engine.resolveExport(export_name);
        let opening = devices.get(export_name);
        if (opening === undefined) {
          opening = publish(export_name);
          devices.set(export_name, opening);
          opening.catch(() => devices.delete(export_name));
        }
        const device = await opening;
        device.targets += 1;
        return new UblkTarget(device, slots, stats, release);
      },
      async close(): Promise<void> {
        try {
          for (const opening of [...devices.values()]) {
            const device = await opening.catch(() => null);
            if (device === null) continue;
            device.targets = 1;
            await release(device);
          }
          await frontend.stop();
        } finally {
          console.log(`${UBLK_DRIVER_STATS_PREFIX}${JSON.stringify(stats)}`);
        }
      },
    };
  },
};

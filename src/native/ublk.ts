// The typed face of the addon's ublk layer (native/src/ublk-*): the control
// commands of /dev/ublk-control as Promises, and UblkQueue, one queue of a
// ublk device served from the calling thread's event loop.
//
// Design notes
// - Control commands run on libuv's thread pool, each on its own small
//   io_uring, bounded by timeout_ms: a timeout rejects with code
//   'ETIMEDOUT' and a message naming the command (the command may still
//   finish in the kernel later). Failures are NativeErrors (see index.ts):
//   `code` the errno name, `syscall` the step or the command ('ADD_DEV').
// - Without the driver every command rejects with code 'ENOENT' and
//   UBLK_UNAVAILABLE_MESSAGE; ublkControlAvailable() says so synchronously.
// - UblkQueue must be made, started, committed, submitted and closed on ONE
//   thread: the kernel takes that thread as the queue's daemon. Requests
//   arrive as records in `requests` (REQUEST_WORDS Int32 words each, from
//   index 0) and onRequests(count) is called once per wake-up; the records
//   are overwritten by the next call, so copy what you need. Answer every
//   request with commit(tag, result) — bytes for READ/WRITE, 0 for the
//   others, or -errno, never -EAGAIN (the request fails) — then call submit()
//   once per batch. Data moves through the tag's slot in `buffer`: a WRITE's
//   data is there when it is delivered; a READ's must be there at commit.
// - Unsigned record words (NR_SECTORS, START_SECTOR_LOW) read with `>>> 0`.
// - The per-request methods are the addon's own (no wrapper); only the
//   constructor is wrapped, to hand the addon a view of the
//   SharedArrayBuffer (Node 20's Node-API cannot see one directly).

import { types } from 'node:util';
import { loadAddon } from './addon';

/** A ublk device as ADD_DEV / GET_DEV_INFO describe it. */
export interface UblkDeviceInfo {
  dev_id: number;
  queue_count: number;
  queue_depth: number;
  /** The largest request, in bytes: each tag's slot must hold this much. */
  max_io_bytes: number;
  /** UBLK_F_* flags the kernel granted (unsupported ones cleared, its own added). */
  flags: bigint;
  /** UBLK_S_DEV_DEAD, _LIVE or _QUIESCED. */
  state: number;
  /** The server process the kernel knows (ADD_DEV's caller). */
  server_pid: number;
}

export interface UblkAddSpec {
  /** The device id wanted; -1 or absent: the kernel picks one. */
  dev_id?: number;
  queue_count: number;
  /** Tags per queue, 1..4096. */
  queue_depth: number;
  /** Largest request in bytes, a multiple of 512. */
  max_io_bytes: number;
  /** UBLK_F_* flags asked for. */
  flags: bigint;
}

export interface UblkDiscardParams {
  granularity_bytes: number;
  alignment_bytes: number;
  max_discard_sectors: number;
  /** 0: the kernel sends no WRITE_ZEROES. */
  max_write_zeroes_sectors: number;
  max_discard_segments: number;
}

export interface UblkParams {
  /** Device size in 512-byte sectors. */
  capacity_sectors: number;
  /** log2 of the logical block (9..12). */
  logical_block_shift: number;
  /** log2 of the physical block (>= logical). */
  physical_block_shift: number;
  io_min_shift: number;
  io_opt_shift: number;
  /** Largest request in sectors (max_io_bytes >> 9). */
  max_sectors: number;
  read_only: boolean;
  /** The kernel sends FLUSH requests. */
  volatile_cache: boolean;
  /** The kernel may mark writes UBLK_IO_F_FUA. */
  fua: boolean;
  /** Present: the device takes DISCARD (and WRITE_ZEROES if max_write_zeroes_sectors > 0). */
  discard?: UblkDiscardParams;
}

export type UblkAvailability = { available: true } | { available: false; reason: string; code: string };

/** The C struct sizes the addon was built with (see ublk-uapi.h). */
export interface UblkLayoutSizes {
  ctrl_cmd: number;
  ctrl_dev_info: number;
  io_desc: number;
  io_cmd: number;
  param_basic: number;
  param_discard: number;
  param_devt: number;
  params_set_bytes: number;
  add_dev_opcode: number;
  fetch_req_opcode: number;
}

export interface UblkQueueOptions {
  dev_id: number;
  queue_id: number;
  /** Must equal the device's queue_depth. */
  queue_depth: number;
  /** Bytes per tag in buffer, a multiple of 512, >= the device's max_io_bytes. */
  slot_bytes: number;
  /** The slots: tag t's at buffer_offset_bytes + t * slot_bytes. */
  buffer: SharedArrayBuffer;
  buffer_offset_bytes: number;
  /** At least queue_depth * REQUEST_WORDS words. */
  requests: Int32Array;
  /** The device's flags (ADD_DEV's answer): picks the I/O opcode encoding. */
  flags?: bigint;
  /**
   * Host the queue's io_uring on a native thread of its own instead of this
   * thread's event loop (native/src/ublk-queue-thread.h). The JavaScript
   * side is the same either way: onRequests on this thread, commit, submit.
   */
  native_thread?: boolean;
}

export interface UblkQueueStats {
  /** Requests delivered and not yet committed. */
  in_flight: number;
  delivered: number;
  committed: number;
  /** Tags ended by UBLK_IO_RES_ABORT (device stopping). */
  aborted: number;
  /** Tags ended by another error completion (see last_error). */
  failed: number;
  /** errno of the last such completion, 0 if none. */
  last_error: number;
  /** SQEs queued and not yet taken by the kernel (native thread: commits not yet signalled by submit()). */
  unsubmitted: number;
  /** Native thread only: its returns from io_uring_enter (0 on the event loop). */
  wakeups: number;
  native_thread: boolean;
  /** A volume is served directly (serveDirect), and what went which way since. */
  direct: boolean;
  direct_reads: number;
  direct_writes: number;
  direct_bytes_read: number;
  direct_bytes_written: number;
  /** Requests of a directly served queue that went to onRequests (other ops, a take's gate, failures). */
  direct_declined: number;
  /** Of those, requests that failed or moved short here first (JavaScript redid them). */
  direct_redone: number;
  /** Of direct_writes, those whose data the kernel copied straight into the volume's pages (mapped writes). */
  direct_mapped_writes: number;
  /** Mapped copies the kernel could not finish: mapped writes then stop for this volume. */
  direct_mapped_failed: number;
}

/**
 * A live volume whose plain reads and writes the queue serves without
 * JavaScript (native/src/direct-volume.h): its descriptor and shared words,
 * as the I/O actors have them (shared/descriptors.ts VolumeDescriptor).
 */
export interface DirectVolumeSpec {
  fd: number;
  capacity_bytes: number;
  control: SharedArrayBuffer;
  cbt: SharedArrayBuffer;
  write_hold?: SharedArrayBuffer;
}

/** The native class; the exported UblkQueue wraps only its constructor. */
interface UblkQueueNative {
  /**
   * Begins serving: onRequests(count, gate_drained) runs on this thread's
   * event loop per batch of requests for JavaScript; gate_drained: a direct
   * write emptied the volume's frozen write gate (notify its waiters).
   */
  start(onRequests: (count: number, gate_drained: boolean) => void): void;
  /**
   * Serves the volume's plain reads and writes natively from the next
   * request on (on the queue's serving thread, either hosting), or stops that (null).
   */
  serveDirect(volume: DirectVolumeSpec | null): void;
  /** Queues COMMIT_AND_FETCH for a delivered tag (TypeError if not delivered or already committed). */
  commit(tag: number, result: number): void;
  /** Submits every queued commit in one io_uring_enter; returns how many. */
  submit(): number;
  stats(): UblkQueueStats;
  /** Stops serving and releases ring, mapping and /dev/ublkcN; idempotent. */
  close(): void;
}

interface UblkQueueNativeConstructor {
  new (options: Omit<UblkQueueOptions, 'buffer'> & { buffer: Uint8Array | ArrayBuffer }): UblkQueueNative;
}

interface Binding {
  ublkControlAvailable(): UblkAvailability;
  ublkLayoutSizes(): UblkLayoutSizes;
  ublkGetFeatures(timeout_ms: number): Promise<bigint>;
  ublkAddDevice(spec: UblkAddSpec, timeout_ms: number): Promise<UblkDeviceInfo>;
  ublkGetDeviceInfo(dev_id: number, timeout_ms: number): Promise<UblkDeviceInfo>;
  ublkSetParams(dev_id: number, params: UblkParams, timeout_ms: number): Promise<void>;
  ublkStartDevice(dev_id: number, timeout_ms: number): Promise<void>;
  ublkStopDevice(dev_id: number, timeout_ms: number): Promise<void>;
  ublkDeleteDevice(dev_id: number, timeout_ms: number): Promise<void>;
  ublkStartUserRecovery(dev_id: number, timeout_ms: number): Promise<void>;
  ublkEndUserRecovery(dev_id: number, timeout_ms: number): Promise<void>;
  setIoFlusher(): boolean;
  UblkQueue: UblkQueueNativeConstructor;
  UBLK_F_SUPPORT_ZERO_COPY: bigint;
  UBLK_F_URING_CMD_COMP_IN_TASK: bigint;
  UBLK_F_NEED_GET_DATA: bigint;
  UBLK_F_USER_RECOVERY: bigint;
  UBLK_F_USER_RECOVERY_REISSUE: bigint;
  UBLK_F_UNPRIVILEGED_DEV: bigint;
  UBLK_F_CMD_IOCTL_ENCODE: bigint;
  UBLK_F_USER_COPY: bigint;
  UBLK_S_DEV_DEAD: number;
  UBLK_S_DEV_LIVE: number;
  UBLK_S_DEV_QUIESCED: number;
  UBLK_IO_OP_READ: number;
  UBLK_IO_OP_WRITE: number;
  UBLK_IO_OP_FLUSH: number;
  UBLK_IO_OP_DISCARD: number;
  UBLK_IO_OP_WRITE_ZEROES: number;
  UBLK_IO_F_FUA: number;
  UBLK_IO_F_NOUNMAP: number;
  REQUEST_WORDS: number;
  REQUEST_TAG: number;
  REQUEST_OP: number;
  REQUEST_FLAGS: number;
  REQUEST_NR_SECTORS: number;
  REQUEST_START_SECTOR_LOW: number;
  REQUEST_START_SECTOR_HIGH: number;
}

const binding = loadAddon<Binding>();

/** The reason every ublk call gives when the driver is not there (code 'ENOENT'). */
export const UBLK_UNAVAILABLE_MESSAGE =
  'ublk is not available: /dev/ublk-control is missing (load the module: modprobe ublk_drv; ' +
  'needs Linux >= 6.0 built with CONFIG_BLK_DEV_UBLK)';

// ── flags and states ────────────────────────────────────────────────────
export const UBLK_F_SUPPORT_ZERO_COPY: bigint = binding.UBLK_F_SUPPORT_ZERO_COPY;
export const UBLK_F_URING_CMD_COMP_IN_TASK: bigint = binding.UBLK_F_URING_CMD_COMP_IN_TASK;
export const UBLK_F_NEED_GET_DATA: bigint = binding.UBLK_F_NEED_GET_DATA;
export const UBLK_F_USER_RECOVERY: bigint = binding.UBLK_F_USER_RECOVERY;
export const UBLK_F_USER_RECOVERY_REISSUE: bigint = binding.UBLK_F_USER_RECOVERY_REISSUE;
export const UBLK_F_UNPRIVILEGED_DEV: bigint = binding.UBLK_F_UNPRIVILEGED_DEV;
export const UBLK_F_CMD_IOCTL_ENCODE: bigint = binding.UBLK_F_CMD_IOCTL_ENCODE;
export const UBLK_F_USER_COPY: bigint = binding.UBLK_F_USER_COPY;
export const UBLK_S_DEV_DEAD: number = binding.UBLK_S_DEV_DEAD;
export const UBLK_S_DEV_LIVE: number = binding.UBLK_S_DEV_LIVE;
export const UBLK_S_DEV_QUIESCED: number = binding.UBLK_S_DEV_QUIESCED;

// ── requests ────────────────────────────────────────────────────────────
export const UBLK_IO_OP_READ: number = binding.UBLK_IO_OP_READ;
export const UBLK_IO_OP_WRITE: number = binding.UBLK_IO_OP_WRITE;
export const UBLK_IO_OP_FLUSH: number = binding.UBLK_IO_OP_FLUSH;
export const UBLK_IO_OP_DISCARD: number = binding.UBLK_IO_OP_DISCARD;
export const UBLK_IO_OP_WRITE_ZEROES: number = binding.UBLK_IO_OP_WRITE_ZEROES;
export const UBLK_IO_F_FUA: number = binding.UBLK_IO_F_FUA;
export const UBLK_IO_F_NOUNMAP: number = binding.UBLK_IO_F_NOUNMAP;
/** Int32 words per request record, and the index of each field within one. */
export const REQUEST_WORDS: number = binding.REQUEST_WORDS;
export const REQUEST_TAG: number = binding.REQUEST_TAG;
export const REQUEST_OP: number = binding.REQUEST_OP;
export const REQUEST_FLAGS: number = binding.REQUEST_FLAGS;
export const REQUEST_NR_SECTORS: number = binding.REQUEST_NR_SECTORS;
export const REQUEST_START_SECTOR_LOW: number = binding.REQUEST_START_SECTOR_LOW;
export const REQUEST_START_SECTOR_HIGH: number = binding.REQUEST_START_SECTOR_HIGH;

// ── control ─────────────────────────────────────────────────────────────

/** Whether /dev/ublk-control opens (synchronous; no command is sent). */
export const ublkControlAvailable: () => UblkAvailability = binding.ublkControlAvailable;
/** The struct sizes and opcodes the addon was built with. */
export const ublkLayoutSizes: () => UblkLayoutSizes = binding.ublkLayoutSizes;
/** GET_FEATURES (6.5+): the UBLK_F_* flags the driver supports. */
export const ublkGetFeatures: (timeout_ms: number) => Promise<bigint> = binding.ublkGetFeatures;
/**
 * ADD_DEV, then waits (up to 5 s) until /dev/ublkcN opens. The answer has the
 * negotiated flags; a failure after ADD_DEV succeeded leaves the device for
 * ublkDeleteDevice (its id is in the message).
 */
export const ublkAddDevice: (spec: UblkAddSpec, timeout_ms: number) => Promise<UblkDeviceInfo> = binding.ublkAddDevice;
export const ublkGetDeviceInfo: (dev_id: number, timeout_ms: number) => Promise<UblkDeviceInfo> =
  binding.ublkGetDeviceInfo;
/** SET_PARAMS: only before START_DEV (EACCES after). */
export const ublkSetParams: (dev_id: number, params: UblkParams, timeout_ms: number) => Promise<void> =
  binding.ublkSetParams;
/**
 * START_DEV: waits until every tag of every queue is fetched, then the kernel
 * reads the partition table through the queues — so the queues must already
 * be serving, on other threads than the one awaiting this.
 */
export const ublkStartDevice: (dev_id: number, timeout_ms: number) => Promise<void> = binding.ublkStartDevice;
/** STOP_DEV: /dev/ublkbN goes; every fetched tag completes with ABORT. */
export const ublkStopDevice: (dev_id: number, timeout_ms: number) => Promise<void> = binding.ublkStopDevice;
/** DEL_DEV: waits until /dev/ublkcN is released (close every queue first). */
export const ublkDeleteDevice: (dev_id: number, timeout_ms: number) => Promise<void> = binding.ublkDeleteDevice;
export const ublkStartUserRecovery: (dev_id: number, timeout_ms: number) => Promise<void> =
  binding.ublkStartUserRecovery;
export const ublkEndUserRecovery: (dev_id: number, timeout_ms: number) => Promise<void> = binding.ublkEndUserRecovery;

/**
 * prctl(PR_SET_IO_FLUSHER) for the calling thread: true when set, false when
 * not allowed (EPERM) or not known (EINVAL).
 */
export const setIoFlusher: () => boolean = binding.setIoFlusher;

// ── queue ───────────────────────────────────────────────────────────────

/**
 * One queue of a ublk device, served by the thread that constructs it:
 * opens /dev/ublkcN, maps the queue's descriptors, sets up its io_uring and
 * fetches every tag. See the notes at the top for the protocol.
 */
export const UblkQueue = class UblkQueue extends binding.UblkQueue {
  constructor(options: UblkQueueOptions) {
    // A misspelt or non-object options reaches the addon as is, for its TypeError.
    const visible = options !== null && typeof options === 'object' && types.isSharedArrayBuffer(options.buffer)
      ? { ...options, buffer: new Uint8Array(options.buffer) }
      : options;
    super(visible as ConstructorParameters<UblkQueueNativeConstructor>[0]);
  }

  // Node-API takes a SharedArrayBuffer only as a view over it.
  override serveDirect(volume: DirectVolumeSpec | null): void {
    const bytes = (buffer: SharedArrayBuffer | undefined): Uint8Array | undefined =>
      (types.isSharedArrayBuffer(buffer) ? new Uint8Array(buffer) : buffer as undefined);
    const visible = volume !== null && typeof volume === 'object'
      ? { ...volume, control: bytes(volume.control), cbt: bytes(volume.cbt), write_hold: bytes(volume.write_hold) }
      : volume;
    super.serveDirect(visible as DirectVolumeSpec | null);
  }
} as unknown as { new (options: UblkQueueOptions): UblkQueueNative };
export type UblkQueue = UblkQueueNative;

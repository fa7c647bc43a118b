// The methods of the control socket: one per CLI command (docs/design.md §6), each
// with the schema of its params (checked by the server before the handler
// runs) and the type of its result. Client and server both import this
// table, so a method cannot exist on one side only.
//
// Conventions: sizes in 512-byte sectors where upstream blksnap uses
// sectors (CBT, events), bytes where a human gives a size (limit_bytes);
// `device` is an attached path or a volume name; `id` is a snapshot UUID.

import type { CbtInfo } from '../shared/cbt-map';
import type { EngineStatus, SnapshotEventCode } from '../engine/api';
import type { FrontendStatus } from '../frontends/frontend';

export type { FrontendStatus };
import { MiB } from '../shared/units';
import { array, boolean, integer, object, optional, string, type Infer } from './schema';

/** Linux PATH_MAX: no path is longer, so no longer string is a path. */
export const PATH_LENGTH_MAX = 4096;
/** Volume names are export names and URI parts; the engine's rule (volume.ts), checked here first. */
export const VOLUME_NAME_LENGTH_MAX = 64;
/** No '/', no '@' (it separates NAME@ID), no whitespace: letters, digits, '.', '_', '-'. */
export const VOLUME_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
export const SNAPSHOT_ID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
/** Volumes one snapshot_create may name; a coherent set, not a fleet. */
export const SNAPSHOT_VOLUMES_MAX = 256;
/** Ranges one markdirtyblock may carry (16 bytes each in upstream's ioctl). */
export const MARKDIRTY_RANGES_MAX = 65_536;
/** The longest single snapshot_waitevent; the watcher loops over shorter ones. */
export const WAIT_EVENT_TIMEOUT_MS_MAX = 3_600_000;
/** The largest readcbtmap piece: one byte per tracking block, base64 on the wire. */
export const CBT_PIECE_BYTES_MAX = 1 * MiB;
/**
 * The event codes upstream blksnap has: what snapshot_waitevent delivers
 * unless the client asks for all_events (low_space, grown, destroyed too).
 * Upstream's library treats a code it does not know as an error.
 */
export const UPSTREAM_EVENT_CODES: readonly string[] = ['corrupted', 'no_space'];
/** Sectors and bytes travel as JSON numbers: exact up to 2^53. */
const SIZE_MAX = Number.MAX_SAFE_INTEGER;

const path = string(PATH_LENGTH_MAX);
const device = string(PATH_LENGTH_MAX);
const snapshot_id = string(36, { pattern: SNAPSHOT_ID_PATTERN, pattern_name: 'a snapshot id (UUID)' });
const volume_name = string(VOLUME_NAME_LENGTH_MAX, {
  pattern: VOLUME_NAME_PATTERN,
  pattern_name: 'a volume name (1-64 of letters, digits, . _ -, starting with a letter or digit)',
});

export const METHODS = {
  version: { summary: 'the daemon version', params: object({}) },
  status: { summary: 'volumes, snapshots, diff storage, queues, frontends', params: object({}) },
  attach: {
    summary: 'put a file or block device under the daemon as a volume',
    params: object({ path, name: optional(volume_name), nbd: optional(boolean()), ublk: optional(boolean()) }),
  },
  detach: {
    summary: 'release a volume',
    params: object({ device, force: optional(boolean()) }),
  },
  cbtinfo: { summary: 'change tracker information', params: object({ device }) },
  readcbtmap: {
    summary: 'a piece of the snapshot copy of the CBT map',
    params: object({ device, first_block: integer(0, SIZE_MAX), length_bytes: integer(1, CBT_PIECE_BYTES_MAX) }),
  },
  markdirtyblock: {
    summary: 'mark sector ranges changed in the CBT map',
    params: object({
      device,
      ranges: array(object({ sector: integer(0, SIZE_MAX), count: integer(1, SIZE_MAX) }), MARKDIRTY_RANGES_MAX, 1),
    }),
  },
  snapshot_create: {
    summary: 'create a snapshot with its difference storage',
    params: object({
      devices: array(device, SNAPSHOT_VOLUMES_MAX), storage: path, limit_bytes: integer(0, SIZE_MAX), ublk: optional(boolean()),
    }),
  },
  snapshot_add: { summary: 'add a volume to a snapshot before take', params: object({ id: snapshot_id, device }) },
  snapshot_take: { summary: 'take the snapshot', params: object({ id: snapshot_id }) },
  snapshot_destroy: { summary: 'destroy the snapshot', params: object({ id: snapshot_id, force: optional(boolean()) }) },
  snapshot_waitevent: {
    summary: 'wait for the next event of a snapshot (long-poll)',
    params: object({ id: snapshot_id, timeout_ms: integer(0, WAIT_EVENT_TIMEOUT_MS_MAX), all_events: optional(boolean()) }),
  },
  snapshot_collect: { summary: 'the ids of every snapshot', params: object({}) },
  snapshot_info: { summary: 'the snapshot state of a volume', params: object({ device }) },
  shutdown: {
    summary: 'stop the daemon (restart: hand the volumes\' devices over to the next daemon)',
    params: object({ restart: optional(boolean()) }),
  },
  cleanup: { summary: 'delete what an earlier daemon left behind', params: object({ dry_run: optional(boolean()) }) },
} as const;

export type MethodName = keyof typeof METHODS;
export const METHOD_NAMES = Object.keys(METHODS) as MethodName[];
export type ParamsOf<M extends MethodName> = Infer<(typeof METHODS)[M]['params']>;

export function isMethodName(name: string): name is MethodName {
  return Object.hasOwn(METHODS, name);
}

// ── results ─────────────────────────────────────────────────────────────

export interface VersionResult {
  version: string;
  /** Bumped when a method changes incompatibly. */
  protocol: number;
}

export interface AttachResult {
  name: string;
  path: string;
  capacity_sectors: number;
  /** The NBD URI of the volume's export, when asked for and served. */
  nbd?: string;
  /** The ublk device of the volume, when asked for and served. */
  ublk?: string;
  /** The path was attached before this call (attach is idempotent, as upstream's). */
  already_attached?: boolean;
  /** Bytes past the last whole sector of a file: not part of the volume. */
  ignored_tail_bytes: number;
}

export interface ReadCbtMapResult {
  first_block: number;
  /** Bytes in data (one per tracking block); 0 past the end of the map. */
  length_bytes: number;
  block_count: number;
  generation_id: string;
  changes_number: number;
  /** The map bytes, base64. */
  data: string;
}

export interface WaitEventResult {
  result: 'ok' | 'timeout';
  /** Milliseconds since the epoch (ok only). */
  time?: number;
  event?: SnapshotEventCode;
  volume?: string;
  errno?: number;
  requested_sectors?: number;
  capacity_sectors?: number;
}

export interface SnapshotInfoResult {
  snapshot_id: string | null;
  error_code: number;
  /** The ublk device of the image, or '' when none. */
  image: string;
  /** The NBD URI of the image, or '' when none. */
  nbd: string;
}

export interface DaemonStatus {
  daemon: {
    version: string;
    pid: number;
    uptime_ms: number;
    socket: string;
    state_dir: string;
    ipc_connections: number;
    ipc_requests_in_flight: number;
    stopping: boolean;
  };
  volumes: EngineStatus['volumes'];
  snapshots: EngineStatus['snapshots'];
  queues: EngineStatus['queues'];
  sessions: EngineStatus['sessions'];
  workers: EngineStatus['workers'];
  frontends: FrontendStatus[];
  /**
   * Recorded volumes that did not come back whole at start (not attached,
   * or a frontend missing), and a record of volumes that could not be read.
   * An entry stays until the volume is attached or detached.
   */
  restore_errors: { path: string; name: string; frontends: string[]; code: string; error: string }[];
}

export type Empty = Record<string, never>;

export interface ResultMap {
  version: VersionResult;
  status: DaemonStatus;
  attach: AttachResult;
  detach: Empty;
  cbtinfo: CbtInfo;
  readcbtmap: ReadCbtMapResult;
  markdirtyblock: Empty;
  /** storage_kind: file, tmpfile (in the directory `storage`) or block; storage_created: snapshot_create made the path. */
  snapshot_create: { id: string; storage: string; storage_kind: string; storage_created: boolean };
  snapshot_add: Empty;
  snapshot_take: Empty;
  snapshot_destroy: Empty;
  snapshot_waitevent: WaitEventResult;
  snapshot_collect: { ids: string[] };
  snapshot_info: SnapshotInfoResult;
  /** The daemon's pid: the client waits for its exit. */
  shutdown: { pid: number };
  /** One phrase per thing found: deleted, or what would be with dry_run. */
  cleanup: { leftovers: string[] };
}

export type ResultOf<M extends MethodName> = ResultMap[M];

/** Bumped when a method's params or result change incompatibly. */
export const PROTOCOL_VERSION = 1;

// The CLI's commands: upstream blksnap console-tool names, options and
// key=value output (docs/design.md §6), each a thin client of one IPC method (or a
// loop over one: readcbtmap, snapshot_watcher).

import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { UblksnapError, fromSystemError } from '../shared/errors';
import { processExited } from '../shared/process-state';
import { sectorsToBytes } from '../shared/units';
import { IpcClient, WAIT_MARGIN_MS, callOnce } from '../ipc/client';
import {
  MARKDIRTY_RANGES_MAX, WAIT_EVENT_TIMEOUT_MS_MAX, type DaemonStatus, type MethodName, type ParamsOf, type ResultOf, type WaitEventResult,
} from '../ipc/methods';
import type { OptionSpec } from './args';
import type { Command, CommandContext } from './command';
import { Progress, formatBytes, jsonLine, keyValueInline, keyValueLines, upstreamVersion, type Row } from './output';
import { BACKUP_COMMANDS } from './backup-commands';
import { deviceArgument, parseInteger, parseSectorRange, parseSize, parseSnapshotId, parseVolumeName, pathArgument, storagePathArgument } from './values';
import { fileRanges } from './file-extents';

/** readcbtmap asks for the map in pieces of this many bytes (one per tracking block). */
export const CBT_PIECE_BYTES = 256 * 1024;
/** snapshot_watcher waits this long per call, so a dead daemon is noticed. */
export const WATCH_POLL_MS = 10_000;
/** A CBT map file is data for backup tools of any user, as upstream's tool leaves it. */
const MAP_FILE_MODE = 0o644;
const STDOUT_FD = 1;

export type { Command, CommandContext };

function call<M extends MethodName>(context: CommandContext, method: M, params: ParamsOf<M>, timeout_ms?: number): Promise<ResultOf<M>> {
  return callOnce(context.socket_path, method, params, timeout_ms);
}

function required(context: CommandContext, name: string, flag: string): string {
  const value = context.values[name];
  if (typeof value === 'string') return value;
  if (Array.isArray(value) && value.length > 0) return value[value.length - 1] as string;
  throw new UblksnapError('EINVAL', `${flag} is required (see 'ublksnap ${context.command} --help')`);
}

function list(context: CommandContext, name: string): string[] {
  const value = context.values[name];
  return Array.isArray(value) ? value : typeof value === 'string' ? [value] : [];
}

function print(context: CommandContext, row: Row): void {
  context.stdout.write(context.json ? jsonLine(row) : keyValueLines(row));
}

/** Commands that answer nothing print nothing, or `{}` with -j. */
function printEmpty(context: CommandContext): void {
  if (context.json) context.stdout.write(jsonLine({}));
}

const DEVICE: OptionSpec = { name: 'device', short: 'd', type: 'string', value_name: 'PATH|NAME', help: 'a volume: any path naming its file or device (symlinks, /dev/block/MAJ:MIN, its ublk device), or its name' };
const ID: OptionSpec = { name: 'id', short: 'i', type: 'string', value_name: 'ID', help: 'snapshot id (UUID)' };
const ALL_EVENTS: OptionSpec = { name: 'all-events', type: 'boolean', help: 'also the events and keys upstream does not have: low_space, grown, destroyed; volume=, error_code=, capacity_sectors=' };

/**
 * An event as key=value. Upstream's tool prints result=, time=, event= and
 * requested_nr_sect=; the keys it lacks (volume=, error_code=,
 * capacity_sectors=) come with `full` (--all-events, -j, the watcher).
 */
function eventRow(result: WaitEventResult, full: boolean): Row {
  const row: Row = { result: result.result };
  if (result.result === 'ok') {
    row.time = result.time;
    row.event = result.event;
    if (result.volume !== undefined && full) row.volume = result.volume;
    if (result.errno !== undefined && full) row.error_code = result.errno;
    if (result.requested_sectors !== undefined) row.requested_nr_sect = result.requested_sectors;
    if (result.capacity_sectors !== undefined && full) row.capacity_sectors = result.capacity_sectors;
  }
  return row;
}

// ── readcbtmap ───────────────────────────────────────────────────────────

async function readCbtMap(context: CommandContext): Promise<void> {
  const device = deviceArgument(required(context, 'device', '-d'));
  const file = required(context, 'file', '-f');
  const to_stdout = file === '-';
  // The map is binary on stdout: a JSON line after it would corrupt it.
  if (to_stdout && context.json) throw new UblksnapError('EINVAL', "-j with -f -: the map itself goes to stdout; give -f FILE to get the JSON summary");
  const target = to_stdout ? '' : pathArgument(file, '-f');
  // Written beside the target and renamed at the end: a failed read leaves no half map.
  const partial = `${target}.partial-${process.pid}`;
  const client = await IpcClient.connect(context.socket_path);
  let fd = -1;
  let progress: Progress | null = null;
  try {
    try {
      fd = to_stdout ? STDOUT_FD : openSync(partial, 'w', MAP_FILE_MODE);
    } catch (error) {
      // ENOENT (no such directory), EACCES, EISDIR…: name the file the user gave.
      throw fromSystemError(error, `cannot write ${target}`);
    }
    let first_block = 0;
    let block_count = 0;
    let generation_id = '';
    let changes_number = -1;
    do {
      const piece = await client.call('readcbtmap', { device, first_block, length_bytes: CBT_PIECE_BYTES });
      if (changes_number === -1) {
        ({ block_count, generation_id, changes_number } = piece);
        progress = new Progress('readcbtmap', block_count, context.stderr, context.stderr.isTTY === true && block_count > CBT_PIECE_BYTES);
      } else if (piece.generation_id !== generation_id || piece.changes_number !== changes_number) {
        throw new UblksnapError('EBUSY', 'the CBT map changed while it was read (a snapshot was taken); read it again');
      }
      if (piece.length_bytes === 0) break;
      const data = Buffer.from(piece.data, 'base64');
      let written = 0;
      while (written < data.length) written += writeSync(fd, data, written);
      first_block += piece.length_bytes;
      progress?.update(first_block);
    } while (first_block < block_count);
    progress?.finish();
    if (!to_stdout) {
      closeSync(fd);
      fd = -1;
      renameSync(partial, target);
    }
    if (context.json) context.stdout.write(jsonLine({ file: to_stdout ? '-' : target, block_count, generation_id, changes_number }));
  } finally {
    progress?.finish();
    client.close();
    if (!to_stdout && fd !== -1) {
      closeSync(fd);
      rmSync(partial, { force: true });
    }
  }
}

// ── snapshot_watcher ─────────────────────────────────────────────────────

async function watch(context: CommandContext): Promise<void> {
  const id = parseSnapshotId(required(context, 'id', '-i'), '-i');
  const all_events = context.values['all-events'] === true;
  const client = await IpcClient.connect(context.socket_path);
  try {
    // The snapshot exists now: an ESRCH later is its end, even before any event came
    // (the events it had may all be ones this watcher does not show).
    if (!(await client.call('snapshot_collect', {})).ids.includes(id)) throw new UblksnapError('ESRCH', `unknown snapshot ${id}`);
    for (;;) {
      let result: WaitEventResult;
      try {
        result = await client.call('snapshot_waitevent', { id, timeout_ms: WATCH_POLL_MS, ...(all_events ? { all_events } : {}) }, WATCH_POLL_MS + WAIT_MARGIN_MS);
      } catch (error) {
        // ESRCH: the snapshot ended while we watched; that is the normal end.
        if (error instanceof UblksnapError && error.code === 'ESRCH') return;
        throw error;
      }
      if (result.result === 'timeout') continue;
      const row = eventRow(result, true);
      delete row.result;
      context.stdout.write(context.json ? jsonLine(row) : `${keyValueInline(row)}\n`);
      if (result.event === 'destroyed') return;
      // Upstream's watcher ends at corruption: the snapshot is of no more use.
      if (result.event === 'corrupted' && !all_events) return;
    }
  } finally {
    client.close();
  }
}

// ── status ───────────────────────────────────────────────────────────────

function percent(part: number, whole: number): string {
  return whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : '0.0%';
}

export function statusLines(status: DaemonStatus): string {
  const d = status.daemon;
  const lines: string[] = [
    keyValueLines({
      version: d.version, pid: d.pid, uptime_s: Math.floor(d.uptime_ms / 1000), socket: d.socket, state_dir: d.state_dir,
      connections: d.ipc_connections, requests_in_flight: d.ipc_requests_in_flight,
    }).trimEnd(),
  ];
  for (const volume of status.volumes) {
    lines.push(keyValueInline({
      volume: volume.name, path: volume.path, kind: volume.kind, capacity_sectors: volume.capacity_sectors,
      size: formatBytes(sectorsToBytes(volume.capacity_sectors)), snapshot: volume.snapshot_id,
      cbt_block_size: volume.cbt.block_size, cbt_changes_number: volume.cbt.changes_number,
      cbt_generation_id: volume.cbt.generation_id, cbt_generation_reason: volume.cbt.generation_reason,
    }));
  }
  // Older daemons send no restore_errors.
  for (const failed of status.restore_errors ?? []) {
    lines.push(keyValueInline({ restore_error: failed.name || failed.path, path: failed.path, frontends: failed.frontends, code: failed.code, error: failed.error }));
  }
  for (const snapshot of status.snapshots) {
    const storage = snapshot.storage;
    lines.push(keyValueInline({
      snapshot: snapshot.id, state: snapshot.state, error_code: snapshot.error_code, volumes: snapshot.volumes,
      storage: storage.path, storage_kind: storage.kind,
      filled_sectors: storage.filled_sectors, capacity_sectors: storage.capacity_sectors, limit_sectors: storage.limit_sectors,
      fill: percent(storage.filled_sectors, storage.limit_sectors),
    }));
    for (const chunks of snapshot.chunks) {
      lines.push(keyValueInline({
        diff_area: `${chunks.volume}@${snapshot.id}`, chunk_bytes: chunks.chunk_bytes, chunk_count: chunks.chunk_count,
        in_memory: chunks.in_memory, stored: chunks.stored, failed: chunks.failed, queued: chunks.queued,
        // Older daemons do not say how they save chunks.
        ...(chunks.cbw === undefined ? {} : { cbw: chunks.cbw, cloned: chunks.cloned, copied: chunks.copied }),
        ...(chunks.cbw === 'copy' ? { cbw_reason: chunks.cbw_reason } : {}),
        ...(chunks.cbw === 'reflink' && chunks.cloned_ahead !== undefined ? { cloned_ahead: chunks.cloned_ahead } : {}),
      }));
    }
  }
  for (const queue of status.queues) lines.push(keyValueInline({ queue: queue.queue_id, depth: queue.depth, in_flight: queue.in_flight }));
  for (const session of status.sessions) {
    lines.push(keyValueInline({ session: session.session_id, frontend: session.frontend, depth: session.depth, actor: session.actor }));
  }
  lines.push(keyValueInline({ workers: 'threads', cow: status.workers.cow, image: status.workers.image, store: status.workers.store }));
  if (status.frontends.length === 0) lines.push(keyValueInline({ frontend: 'none' }));
  for (const frontend of status.frontends) {
    lines.push(keyValueInline({ frontend: frontend.kind, listening: frontend.listening, connections: frontend.connections, ...frontend.details }));
    for (const client of frontend.clients ?? []) {
      lines.push(keyValueInline({
        client: client.id, frontend: frontend.kind, peer: client.peer, tls: client.tls, identity: client.identity,
        export: client.export ?? '', read_only: client.read_only,
      }));
    }
  }
  return `${lines.join('\n')}\n`;
}

/** The JSON of status carries the text's daemon keys too: one set of keys, JSON a superset. */
export function statusJson(status: DaemonStatus): DaemonStatus & { daemon: { uptime_s: number; connections: number; requests_in_flight: number } } {
  const d = status.daemon;
  return {
    ...status,
    daemon: { ...d, uptime_s: Math.floor(d.uptime_ms / 1000), connections: d.ipc_connections, requests_in_flight: d.ipc_requests_in_flight },
  };
}

/** The daemon bounds its own stop at 60 s (daemon/main.ts STOP_TIMEOUT_MS); a little more for the exit. */
const SHUTDOWN_WAIT_MS = 75_000;
const SHUTDOWN_POLL_MS = 100;

/** Resolves once process pid has exited; ETIMEDOUT after timeout_ms. */
async function waitForExit(pid: number, timeout_ms: number): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    if (processExited(pid)) return;
    if (Date.now() >= deadline) throw new UblksnapError('ETIMEDOUT', `the daemon (pid ${pid}) is still running ${timeout_ms} ms after it was asked to stop`);
    await new Promise((resolve) => setTimeout(resolve, SHUTDOWN_POLL_MS));
  }
}

// ── the table ────────────────────────────────────────────────────────────

const BASIC_COMMANDS: readonly Command[] = [
  {
    name: 'version',
    summary: 'Print the daemon version.',
    usage: '',
    options: [],
    details: 'Prints the version as upstream does, MAJOR.MINOR.REVISION.BUILD on one line (with -j: version=, the same).',
    run: async (context) => {
      const result = await call(context, 'version', {});
      const version = upstreamVersion(result.version);
      context.stdout.write(context.json ? jsonLine({ version }) : `${version}\n`);
    },
  },
  {
    name: 'attach',
    summary: 'Put a file or block device under the daemon as a volume (starts change tracking).',
    usage: '-d PATH [--name NAME] [--nbd] [--ublk]',
    options: [
      { name: 'device', short: 'd', type: 'string', value_name: 'PATH', help: 'the file or block device' },
      { name: 'name', type: 'string', value_name: 'NAME', help: 'the volume name (default: the file name of PATH)' },
      { name: 'nbd', type: 'boolean', help: 'print the NBD URI of the volume export' },
      { name: 'ublk', type: 'boolean', help: 'serve the volume as /dev/ublkbN and print it' },
    ],
    details: 'Prints: name=, and nbd= / ublk= when asked for. Attaching what is attached already succeeds (a note on stderr).\n' +
      'A file whose size is not a multiple of 512 is attached without its last bytes, with a warning on stderr.\n' +
      'The daemon records the volume (path, name, frontends) in its state dir and attaches it again when it restarts.',
    run: async (context) => {
      const params: ParamsOf<'attach'> = { path: pathArgument(required(context, 'device', '-d'), '-d') };
      if (typeof context.values.name === 'string') params.name = parseVolumeName(context.values.name, '--name');
      if (context.values.nbd === true) params.nbd = true;
      if (context.values.ublk === true) params.ublk = true;
      const result = await call(context, 'attach', params);
      const row: Row = { name: result.name };
      if (params.nbd) row.nbd = result.nbd;
      if (params.ublk) row.ublk = result.ublk;
      // Notes go to stderr: stdout keeps exactly the documented keys.
      if (result.already_attached) context.stderr.write(`ublksnap: attach: ${result.path} was already attached as ${result.name}\n`);
      if (result.ignored_tail_bytes > 0) {
        context.stderr.write(`ublksnap: attach: warning: ${result.path} is not a whole number of 512-byte sectors; ` +
          `its last ${result.ignored_tail_bytes} bytes are not part of the volume (${result.capacity_sectors} sectors)\n`);
      }
      print(context, context.json ? {
        ...row, path: result.path, capacity_sectors: result.capacity_sectors,
        already_attached: result.already_attached === true, ignored_tail_bytes: result.ignored_tail_bytes,
      } : row);
    },
  },
  {
    name: 'detach',
    summary: 'Release a volume (refused while a snapshot, a mount or an NBD client holds it, unless --force).',
    usage: '-d PATH|NAME [--force]',
    options: [DEVICE, { name: 'force', type: 'boolean', help: 'destroy the snapshot that holds the volume first; its devices and NBD clients get I/O errors' }],
    details: 'Prints nothing. Also removes the record kept for restarts, and that of a recorded volume that could not be\n' +
      'restored (status shows restore_error= lines for those).',
    run: async (context) => {
      await call(context, 'detach', { device: deviceArgument(required(context, 'device', '-d')), force: context.values.force === true });
      printEmpty(context);
    },
  },
  {
    name: 'cbtinfo',
    summary: 'Get change tracker information.',
    usage: '-d PATH|NAME',
    options: [DEVICE],
    details: 'Prints: block_size= (bytes), device_capacity= (bytes), block_count=, generation_id=, changes_number=,\n' +
      'generation_reason= (why this generation began: first attach, unclean stop, file modified while the daemon was down, …;\n' +
      'a clean daemon restart keeps the generation and its map)',
    run: async (context) => {
      const info = await call(context, 'cbtinfo', { device: deviceArgument(required(context, 'device', '-d')) });
      print(context, {
        // The IPC answers sectors (the engine's unit); upstream's interface documents bytes.
        block_size: info.block_size, device_capacity: sectorsToBytes(info.device_capacity), block_count: info.block_count,
        generation_id: info.generation_id, changes_number: info.changes_number, generation_reason: info.generation_reason,
      });
    },
  },
  {
    name: 'readcbtmap',
    summary: 'Read the change tracking map (its snapshot copy) into a file.',
    usage: '-d PATH|NAME -f FILE',
    options: [DEVICE, { name: 'file', short: 'f', type: 'string', value_name: 'FILE', help: "output file ('-' for stdout): one byte per tracking block" }],
    details: 'Prints nothing (with -j: file=, block_count=, generation_id=, changes_number=). Shows progress on a terminal.',
    run: readCbtMap,
  },
  {
    name: 'markdirtyblock',
    summary: 'Mark sector ranges, or the sectors a file occupies, as changed in the change tracking map.',
    usage: '-d PATH|NAME -r SECTOR:COUNT… | --file FILE',
    options: [
      DEVICE,
      { name: 'ranges', short: 'r', type: 'string', multiple: true, multitoken: true, value_name: 'SECTOR:COUNT', help: 'sector ranges; repeatable, or several after one -r' },
      { name: 'file', short: 'f', type: 'string', value_name: 'FILE', help: 'mark where FILE lies (FIEMAP) on the volume under its file system (the volume, its ublk device, or a loop device of it)' },
    ],
    details: 'Prints nothing (with -j: device=, ranges=, the count of ranges marked).',
    run: async (context) => {
      if (typeof context.values.file === 'string') {
        if (context.values.device !== undefined || context.values.ranges !== undefined) {
          throw new UblksnapError('EINVAL', '--file finds the device and the ranges itself: give either --file, or -d with -r');
        }
        const { device, ranges } = fileRanges(pathArgument(context.values.file, '--file'));
        // A file in more extents than one call carries goes in several calls.
        for (let first = 0; first < ranges.length; first += MARKDIRTY_RANGES_MAX) {
          await call(context, 'markdirtyblock', { device, ranges: ranges.slice(first, first + MARKDIRTY_RANGES_MAX) });
        }
        if (context.json) context.stdout.write(jsonLine({ device, ranges: ranges.length }));
        return;
      }
      const texts = list(context, 'ranges');
      if (texts.length === 0) required(context, 'ranges', '-r');
      const ranges = texts.map((text) => parseSectorRange(text, '-r'));
      await call(context, 'markdirtyblock', { device: deviceArgument(required(context, 'device', '-d')), ranges });
      printEmpty(context);
    },
  },
  {
    name: 'snapshot_create',
    summary: 'Create a snapshot of one or more volumes with its difference storage.',
    usage: '[-d PATH|NAME…] -f FILE|DIR|BLOCKDEV -l LIMIT',
    options: [
      { ...DEVICE, multiple: true, multitoken: true, help: 'volumes to snapshot; repeatable, or several after one -d' },
      { name: 'file', short: 'f', type: 'string', value_name: 'FILE|DIR|BLOCKDEV', help: 'difference storage: a file (grown up to LIMIT), a directory (an unnamed temporary file in it) or a block device; a missing path becomes a new file, or a new directory when it ends in /' },
      { name: 'limit', short: 'l', type: 'string', value_name: 'LIMIT', help: 'the most the difference storage may grow to: bytes, or with K, M, G, T' },
      { name: 'ublk', type: 'boolean', help: 'serve each image as /dev/ublkbN from take to destroy (snapshot_info prints it as image=)' },
    ],
    details: 'Prints the new snapshot id (with -j: id=, storage=, storage_kind= file|tmpfile|block, storage_created=). A storage the command had to create is named on stderr. A -d path not attached yet is attached first (as upstream), and stays attached.',
    run: async (context) => {
      const storage = storagePathArgument(required(context, 'file', '-f'), '-f');
      const limit_bytes = parseSize(required(context, 'limit', '-l'), '-l');
      const devices = list(context, 'device').map((device) => deviceArgument(device));
      const params: { devices: string[]; storage: string; limit_bytes: number; ublk?: boolean } = { devices, storage, limit_bytes };
      if (context.values.ublk === true) params.ublk = true;
      const result = await call(context, 'snapshot_create', params);
      // stdout stays the bare id scripts capture; a storage made from a
      // missing path is said on stderr, since `-f diffdir` (no '/') makes a file.
      if (result.storage_created && !context.json) context.stderr.write(`ublksnap: snapshot_create: ${createdStorageNote(result)}\n`);
      context.stdout.write(context.json
        ? jsonLine({ id: result.id, storage: result.storage, storage_kind: result.storage_kind, storage_created: result.storage_created })
        : `${result.id}\n`);
    },
  },
  {
    name: 'snapshot_add',
    summary: 'Add a volume to a snapshot that is not taken yet.',
    usage: '-i ID -d PATH|NAME',
    options: [ID, DEVICE],
    details: 'Prints nothing. A -d path not attached yet is attached first (as upstream), and stays attached.',
    run: async (context) => {
      const id = parseSnapshotId(required(context, 'id', '-i'), '-i');
      await call(context, 'snapshot_add', { id, device: deviceArgument(required(context, 'device', '-d')) });
      printEmpty(context);
    },
  },
  {
    name: 'snapshot_take',
    summary: 'Take the snapshot: every volume of it at the same instant.',
    usage: '-i ID',
    options: [ID],
    details: 'Prints nothing.',
    run: async (context) => {
      await call(context, 'snapshot_take', { id: parseSnapshotId(required(context, 'id', '-i'), '-i') });
      printEmpty(context);
    },
  },
  {
    name: 'snapshot_destroy',
    summary: 'Release the snapshot and its difference storage.',
    usage: '-i ID [--force]',
    options: [ID, { name: 'force', type: 'boolean', help: 'delete image devices even while mounted or open (their users get I/O errors)' }],
    details: 'Prints nothing.',
    run: async (context) => {
      await call(context, 'snapshot_destroy', { id: parseSnapshotId(required(context, 'id', '-i'), '-i'), force: context.values.force === true });
      printEmpty(context);
    },
  },
  {
    name: 'snapshot_waitevent',
    summary: 'Wait for the next event of a snapshot.',
    usage: '-i ID -t MS',
    options: [ID, { name: 'timeout', short: 't', type: 'string', value_name: 'MS', help: `how long to wait, in milliseconds (at most ${WAIT_EVENT_TIMEOUT_MS_MAX})` }, ALL_EVENTS],
    details: 'Prints: result=ok|timeout|not found (no such snapshot; exit 0, as upstream); with ok: time= (ms since the epoch),\n'
      + 'event=corrupted|no_space (with --all-events also low_space|grown|destroyed), requested_nr_sect= (no_space);\n'
      + 'with --all-events or -j also volume=, error_code= (corrupted) and capacity_sectors= (grown)',
    run: async (context) => {
      const id = parseSnapshotId(required(context, 'id', '-i'), '-i');
      const timeout_ms = parseInteger(required(context, 'timeout', '-t'), '-t', WAIT_EVENT_TIMEOUT_MS_MAX);
      const all_events = context.values['all-events'] === true;
      let result: WaitEventResult;
      try {
        result = await call(context, 'snapshot_waitevent', { id, timeout_ms, ...(all_events ? { all_events } : {}) }, timeout_ms + WAIT_MARGIN_MS);
      } catch (error) {
        // Upstream answers an unknown (or destroyed) snapshot with a result, not a failure.
        if (error instanceof UblksnapError && error.code === 'ESRCH') {
          print(context, { result: 'not found' });
          return;
        }
        throw error;
      }
      print(context, eventRow(result, all_events || context.json));
    },
  },
  {
    name: 'snapshot_collect',
    summary: 'List the ids of every snapshot.',
    usage: '',
    options: [],
    details: 'Prints one snapshot id per line, as upstream (`for ID in $(ublksnap snapshot_collect)`); with -j: {"ids":[…]}.',
    run: async (context) => {
      const result = await call(context, 'snapshot_collect', {});
      context.stdout.write(context.json ? jsonLine({ ids: result.ids }) : result.ids.map((id) => `${id}\n`).join(''));
    },
  },
  {
    name: 'snapshot_info',
    summary: 'Get the snapshot state of a volume: its error and where its image is served.',
    usage: '-d PATH|NAME [-f image|error_code|nbd|snapshot_id]',
    options: [DEVICE, { name: 'field', short: 'f', type: 'string', value_name: 'FIELD', help: 'print only the value of this field' }],
    details: 'Prints: error_code= (0 or the errno that broke the snapshot), image= (ublk device or empty),\n'
      + 'nbd= (NBD URI of the image or empty), snapshot_id= (empty when no snapshot holds the volume)',
    run: async (context) => {
      const info = await call(context, 'snapshot_info', { device: deviceArgument(required(context, 'device', '-d')) });
      const row: Row = { error_code: info.error_code, image: info.image, nbd: info.nbd, snapshot_id: info.snapshot_id };
      const field = context.values.field;
      if (typeof field === 'string') {
        if (!Object.hasOwn(row, field)) throw new UblksnapError('EINVAL', `-f: expected one of ${Object.keys(row).join(', ')}, got ${JSON.stringify(field)}`);
        context.stdout.write(context.json ? jsonLine({ [field]: row[field] }) : `${row[field] ?? ''}\n`);
        return;
      }
      print(context, row);
    },
  },
  {
    name: 'snapshot_watcher',
    summary: 'Print every event of a snapshot as it happens, until the snapshot ends or is corrupted.',
    usage: '-i ID [--all-events]',
    options: [ID, ALL_EVENTS],
    details: 'Prints one line per event: time= event= and its fields (with -j: one JSON object per line).\n'
      + 'Ends after event=corrupted, as upstream; with --all-events it shows low_space, grown and destroyed too and ends at destroyed.',
    run: watch,
  },
  {
    name: 'status',
    summary: 'Show the daemon: volumes, snapshots with diff-storage fill and limit, queues, frontends.',
    usage: '',
    options: [],
    details: 'Prints daemon key=value lines, then one line per volume (with cbt_generation_reason=), recorded volume\n' +
      'not restored at start (restore_error=), snapshot, diff area, queue and frontend.',
    run: async (context) => {
      const status = await call(context, 'status', {});
      context.stdout.write(context.json ? jsonLine(statusJson(status)) : statusLines(status));
    },
  },
  {
    name: 'shutdown',
    summary: 'Stop the daemon; with --restart, leave the volumes\' ublk devices for the next daemon.',
    usage: '[--restart]',
    options: [{ name: 'restart', type: 'boolean', help: 'a planned restart: volume devices stay (their I/O waits) until the next daemon takes them back' }],
    details: 'Returns once the daemon process has exited. Without --restart every ublk device is deleted, as on SIGTERM.\n'
      + 'With --restart, start the daemon again on the same state dir: it takes each volume device back\n'
      + '(same /dev/ublkbN; mounted filesystems never see an error). Image devices are deleted either way.',
    run: async (context) => {
      // The reply comes before the stop: the next daemon may start only after the exit.
      const { pid } = await call(context, 'shutdown', context.values.restart === true ? { restart: true } : {});
      await waitForExit(pid, SHUTDOWN_WAIT_MS);
      printEmpty(context);
    },
  },
  {
    name: 'cleanup',
    summary: 'Delete ublk devices left behind by a daemon whose state is gone (their server process ended).',
    usage: '[--dry-run]',
    options: [{ name: 'dry-run', type: 'boolean', help: 'only list what would be deleted' }],
    details: 'Deletes every ublk device that this daemon does not serve and whose server process is gone;\n'
      + 'devices served by a live process (another daemon, another ublk server) are never touched.\n'
      + 'Prints one leftover= line per device (with -j: leftovers=[…]).',
    run: async (context) => {
      const result = await call(context, 'cleanup', context.values['dry-run'] === true ? { dry_run: true } : {});
      context.stdout.write(context.json ? jsonLine(result) : result.leftovers.map((leftover) => `leftover=${leftover}\n`).join(''));
    },
  },
];

/** Every command of the CLI: upstream's, then the backup commands built on them. */
/** What snapshot_create made of a missing -f path, in words. */
function createdStorageNote(result: { storage: string; storage_kind: string }): string {
  return result.storage_kind === 'tmpfile'
    ? `created directory ${result.storage} for the difference storage (an unnamed temporary file in it)`
    : `created difference storage file ${result.storage} (removed at destroy; end the path with / for a directory)`;
}

export const COMMANDS: readonly Command[] = [...BASIC_COMMANDS, ...BACKUP_COMMANDS];

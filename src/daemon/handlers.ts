// The daemon's IPC handlers: one per method of ipc/methods.ts, each a thin
// translation between validated params and EngineControl. The server has
// already checked types, ranges and sizes; what is left here is what needs
// the daemon's context (absolute paths, frontends, the event hub) and the
// log line for each change of state.

import { statSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { EngineControl } from '../engine/api';
import {
  PROTOCOL_VERSION, UPSTREAM_EVENT_CODES, type AttachResult, type DaemonStatus, type METHODS, type ReadCbtMapResult, type SnapshotInfoResult, type WaitEventResult,
} from '../ipc/methods';
import type { HandlerTable } from '../ipc/server';
import { UblksnapError } from '../shared/errors';
import { SECTOR_BYTES } from '../shared/units';
import { findVolume } from './device-lookup';
import type { EventHub } from './events';
import type { Frontend, FrontendKind, FrontendStopOptions } from '../frontends/frontend';
import { packageVersion } from './paths';
import type { VolumePersistence } from './volume-persistence';

export interface HandlerContext {
  engine: EngineControl;
  events: EventHub;
  frontends: readonly Frontend[];
  logger: Logger;
  persistence: VolumePersistence;
  daemonStatus(): DaemonStatus['daemon'];
  /** Begins the daemon's stop once the reply is on its way (the stop drains this very request). */
  requestStop(reason: string, options: FrontendStopOptions): void;
}

/** The daemon's cwd is not the client's: a relative path would mean something else here. */
function absolutePath(value: string, what: string): string {
  if (!path.isAbsolute(value)) throw new UblksnapError('EINVAL', `${what} ${JSON.stringify(value)} is a relative path; give an absolute path`);
  return path.normalize(value);
}

/** `device` is a volume name (no '/') or an absolute path. */
function deviceArgument(value: string): string {
  return value.includes('/') ? absolutePath(value, 'device') : value;
}

/** Ids are UUIDs; the engine writes them in lower case. */
function snapshotId(value: string): string {
  return value.toLowerCase();
}

export function frontendOf(frontends: readonly Frontend[], kind: FrontendKind): Frontend {
  const frontend = frontends.find((candidate) => candidate.kind === kind);
  if (!frontend) {
    throw new UblksnapError('ENODEV', kind === 'nbd'
      ? 'no NBD frontend in this daemon (not built in, or not configured)'
      : 'no ublk frontend in this daemon (it was built or configured without one)');
  }
  return frontend;
}

/** Refuses (EBUSY) when any frontend's device of these exports is held, naming the holders. */
function refuseIfHeld(frontends: readonly Frontend[], export_names: string[], what: string): void {
  const holders = frontends.flatMap((frontend) => export_names.flatMap((name) => frontend.holders(name)));
  if (holders.length > 0) throw new UblksnapError('EBUSY', `${what} is in use (${holders.join('; ')}): unmount or close it first, or use --force`);
}

/** Refuses (EBUSY) a detach while clients are connected to the volume's exports, naming them. */
function refuseIfClients(frontends: readonly Frontend[], export_names: string[], what: string): void {
  const clients = frontends.flatMap((frontend) => export_names.flatMap((name) => frontend.clients(name)));
  if (clients.length > 0) throw new UblksnapError('EBUSY', `${what} has clients connected (${clients.join('; ')}): disconnect them first, or use --force (they get I/O errors)`);
}

/** A storage that is locked (EBUSY) gets the name of the snapshot holding it, when it is one of ours. */
function storageInUse(error: unknown, storage: string, snapshots: { id: string; storage: { path: string } }[]): unknown {
  // Only the storage's own lock failure (the engine names the storage first); a busy volume is another EBUSY.
  if (!(error instanceof UblksnapError) || error.code !== 'EBUSY' || !error.message.startsWith(`difference storage ${storage}:`)) return error;
  const holder = snapshots.find((snapshot) => snapshot.storage.path === storage);
  return new UblksnapError('EBUSY', holder
    ? `difference storage ${storage} is in use by snapshot ${holder.id}: give another file, or destroy that snapshot first`
    : `difference storage ${storage} is in use by another process (another ublksnap daemon, or an open device)`);
}

export function createHandlers(context: HandlerContext): HandlerTable<typeof METHODS> {
  const { engine, events, frontends, logger, persistence } = context;
  /** Snapshots whose images become ublk devices at take (snapshot_create --ublk). */
  const ublk_images = new Set<string>();

  /** The volume a client's device names: its name, by any path naming the same device or file (device-lookup.ts). */
  const volumeRef = (device: string): string => {
    const ref = deviceArgument(device);
    const name = findVolume(ref, engine.volumes(), frontends);
    if (name === null) throw new UblksnapError('ESRCH', `no attached volume ${ref}`);
    return name;
  };

  /** Upstream's tool attaches a device that snapshot_create / snapshot_add name; so do these. */
  const volumeRefAttaching = async (device: string): Promise<string> => {
    const ref = deviceArgument(device);
    const name = findVolume(ref, engine.volumes(), frontends);
    if (name !== null) return name;
    if (!ref.includes('/')) throw new UblksnapError('ESRCH', `no attached volume named ${ref}`);
    const volume = await persistence.attach(engine, ref, { expect_saved: false });
    persistence.recordAttached({ path: volume.path, name: volume.name, frontends: [] });
    logger.info({ volume: volume.name, path: volume.path }, 'attached for a snapshot');
    warnUnalignedTail(volume.path, volume.capacity_sectors);
    return volume.name;
  };

  /**
   * attach of what is attached already: upstream's tool says so and
   * succeeds, so this answers the volume as it is, publishing a frontend
   * asked for now. A different --name is a real conflict.
   */
  const attachedAlready = async (name: string, wanted_name: string | undefined, wanted: Frontend[]): Promise<AttachResult> => {
    const volume = engine.volume(name);
    if (wanted_name !== undefined && wanted_name !== volume.name) {
      throw new UblksnapError('EALREADY', `${volume.path} is already attached as ${volume.name}, not ${wanted_name}`);
    }
    const result: AttachResult = {
      name: volume.name, path: volume.path, capacity_sectors: volume.capacity_sectors, already_attached: true, ignored_tail_bytes: 0,
    };
    for (const frontend of wanted) result[frontend.kind] = frontend.addressOf(volume.name) ?? await frontend.publish(volume.name);
    if (wanted.length > 0) {
      const recorded = persistence.attached.find(volume.path)?.frontends ?? [];
      const frontend_kinds = [...new Set([...recorded, ...wanted.map((frontend) => frontend.kind)])];
      persistence.recordAttached({ path: volume.path, name: volume.name, frontends: frontend_kinds });
    }
    return result;
  };

  /** A file whose size is not whole sectors loses its tail as a volume: say so in the log. */
  const warnUnalignedTail = (volume_path: string, capacity_sectors: number): number => {
    let size_bytes = 0;
    try {
      const stats = statSync(volume_path);
      if (!stats.isFile()) return 0;
      size_bytes = stats.size;
    } catch {
      // The file went away after the attach: nothing to warn about.
      return 0;
    }
    const ignored_bytes = size_bytes - capacity_sectors * SECTOR_BYTES;
    if (ignored_bytes > 0) {
      logger.warn({ path: volume_path, size_bytes, ignored_bytes }, 'file size is not a multiple of 512: its last bytes are not part of the volume');
    }
    return ignored_bytes;
  };

  return {
    version: () => ({ version: packageVersion(), protocol: PROTOCOL_VERSION }),

    status: (): DaemonStatus => {
      const engine_status = engine.status();
      return {
        daemon: context.daemonStatus(),
        volumes: engine_status.volumes,
        snapshots: engine_status.snapshots,
        queues: engine_status.queues,
        sessions: engine_status.sessions,
        workers: engine_status.workers,
        frontends: frontends.map((frontend) => frontend.status()),
        restore_errors: persistence.restoreErrors(),
      };
    },

    attach: async (params) => {
      const volume_path = absolutePath(params.path, 'path');
      // Refuse before attaching: an attach that half-succeeds is worse than none.
      const wanted: Frontend[] = [];
      if (params.nbd) wanted.push(frontendOf(frontends, 'nbd'));
      if (params.ublk) wanted.push(frontendOf(frontends, 'ublk'));
      for (const frontend of wanted) frontend.assertAvailable();
      const existing_name = findVolume(volume_path, engine.volumes(), frontends);
      if (existing_name !== null) return attachedAlready(existing_name, params.name, wanted);
      const volume = await persistence.attach(engine, volume_path, {
        ...(params.name !== undefined ? { name: params.name } : {}), expect_saved: false,
      });
      const result: AttachResult = {
        name: volume.name, path: volume.path, capacity_sectors: volume.capacity_sectors,
        ignored_tail_bytes: warnUnalignedTail(volume.path, volume.capacity_sectors),
      };
      try {
        for (const frontend of wanted) result[frontend.kind] = await frontend.publish(volume.name);
      } catch (error) {
        await engine.detach(volume.name, { force: true });
        persistence.forget(volume.path);
        throw error;
      }
      persistence.recordAttached({ path: volume.path, name: volume.name, frontends: wanted.map((frontend) => frontend.kind) });
      return result;
    },

    detach: async (params) => {
      const device = deviceArgument(params.device);
      const attached_name = findVolume(device, engine.volumes(), frontends);
      const attached = attached_name === null ? undefined : engine.volumes().find((candidate) => candidate.name === attached_name);
      const recorded = persistence.attached.find(device);
      if (attached === undefined && recorded !== undefined) {
        // Recorded but not attached (its restore failed): the record is all there is to remove.
        persistence.forget(recorded.path);
        logger.info({ volume: recorded.name, path: recorded.path }, 'record of an unrestored volume removed');
        return {};
      }
      const volume = engine.volume(attached?.name ?? device);
      // Refused before the frontends let go of it (the engine would refuse too, but later).
      if (!params.force && volume.snapshot_id !== null) {
        throw new UblksnapError('EBUSY', `volume ${volume.name} is in snapshot ${volume.snapshot_id}: destroy it first, or detach with force`);
      }
      const force = params.force ?? false;
      const images = volume.snapshot_id === null ? [] : [`${volume.name}@${volume.snapshot_id}`];
      if (!force) {
        refuseIfHeld(frontends, [volume.name, ...images], `volume ${volume.name}`);
        refuseIfClients(frontends, [volume.name, ...images], `volume ${volume.name}`);
      }
      for (const frontend of frontends) {
        for (const name of [...images, volume.name]) await frontend.unpublish(name);
      }
      await engine.detach(volume.name, { force });
      persistence.forget(volume.path);
      // A forced detach destroyed the snapshot that held the volume.
      if (volume.snapshot_id !== null) ublk_images.delete(volume.snapshot_id);
      return {};
    },

    cbtinfo: (params) => engine.cbtInfo(volumeRef(params.device)),

    readcbtmap: (params): ReadCbtMapResult => {
      const device = volumeRef(params.device);
      // cbtInfo and readCbtMap run in one turn of the loop: no take can come between.
      const info = engine.cbtInfo(device);
      if (params.first_block > info.block_count) {
        throw new UblksnapError('ERANGE', `first_block ${params.first_block} is past the end of the map (${info.block_count} blocks)`);
      }
      const target = Buffer.alloc(Math.min(params.length_bytes, info.block_count - params.first_block));
      const copied_bytes = target.length > 0 ? engine.readCbtMap(device, params.first_block, target) : 0;
      return {
        first_block: params.first_block,
        length_bytes: copied_bytes,
        block_count: info.block_count,
        generation_id: info.generation_id,
        changes_number: info.changes_number,
        data: target.subarray(0, copied_bytes).toString('base64'),
      };
    },

    markdirtyblock: (params) => {
      engine.markDirty(volumeRef(params.device), params.ranges);
      return {};
    },

    snapshot_create: async (params) => {
      // normalize keeps a trailing '/': the engine reads it as "a directory, create it".
      const storage = absolutePath(params.storage, 'difference storage');
      if (params.ublk) frontendOf(frontends, 'ublk').assertAvailable();
      const names: string[] = [];
      for (const device of params.devices) names.push(await volumeRefAttaching(device));
      const volumes = names;
      for (const frontend of frontends) frontend.refuseStorageOn(storage, names);
      const id = await engine.snapshotCreate({ volumes, storage, limit_bytes: params.limit_bytes })
        .catch((error: unknown) => { throw storageInUse(error, storage, engine.status().snapshots); });
      if (params.ublk) ublk_images.add(id);
      const chosen = engine.snapshotInfo(id).storage;
      return { id, storage: chosen.path, storage_kind: chosen.kind, storage_created: chosen.created };
    },

    snapshot_add: async (params) => {
      const device = await volumeRefAttaching(params.device);
      await engine.snapshotAdd(snapshotId(params.id), device);
      logger.info({ snapshot: params.id, volume: device }, 'volume added to snapshot');
      return {};
    },

    snapshot_take: async (params) => {
      const id = snapshotId(params.id);
      const volumes = engine.snapshotInfo(id).volumes;
      // Frontends make their devices consistent (filesystems frozen) when
      // the engine is ready to freeze the volumes, and undo it right after.
      await engine.snapshotTake(id, async () => {
        const undo: (() => Promise<void>)[] = [];
        const thawAll = async (): Promise<void> => {
          for (const thaw of undo.reverse()) await thaw();
        };
        try {
          for (const frontend of frontends) undo.push(await frontend.quiesceForTake(volumes));
        } catch (error) {
          await thawAll();
          throw error;
        }
        return thawAll;
      });
      if (ublk_images.has(id)) {
        // The images exist from now on; a device that fails to start is
        // logged and the image stays reachable over NBD.
        const ublk = frontendOf(frontends, 'ublk');
        for (const volume of volumes) {
          await ublk.publish(`${volume}@${id}`).catch((error: unknown) => {
            logger.error({ snapshot: id, volume, err: (error as Error).message }, 'image device did not start');
          });
        }
      }
      return {};
    },

    snapshot_destroy: async (params) => {
      const id = snapshotId(params.id);
      const images = engine.snapshotInfo(id).volumes.map((volume) => `${volume}@${id}`);
      if (!params.force) refuseIfHeld(frontends, images, `snapshot ${id}`);
      for (const frontend of frontends) {
        for (const image of images) await frontend.unpublish(image);
      }
      ublk_images.delete(id);
      await engine.snapshotDestroy(id);
      return {};
    },

    snapshot_waitevent: async (params, request): Promise<WaitEventResult> => {
      // Upstream's clients know only its event codes; the others come when asked for (all_events).
      const accepts = params.all_events === true ? undefined : (code: string): boolean => UPSTREAM_EVENT_CODES.includes(code);
      const event = await events.wait(snapshotId(params.id), params.timeout_ms, request.signal, accepts);
      if (event === null) return { result: 'timeout' };
      const result: WaitEventResult = { result: 'ok', time: event.time, event: event.code };
      if (event.volume !== undefined) result.volume = event.volume;
      if (event.errno !== undefined) result.errno = event.errno;
      if (event.requested_sectors !== undefined) result.requested_sectors = event.requested_sectors;
      if (event.capacity_sectors !== undefined) result.capacity_sectors = event.capacity_sectors;
      return result;
    },

    snapshot_collect: () => ({ ids: engine.snapshotCollect() }),

    snapshot_info: (params): SnapshotInfoResult => {
      const info = engine.volumeSnapshotInfo(volumeRef(params.device));
      const address = (kind: FrontendKind): string => {
        const frontend = frontends.find((candidate) => candidate.kind === kind);
        return info.image_export && frontend ? frontend.addressOf(info.image_export) ?? '' : '';
      };
      return { snapshot_id: info.snapshot_id, error_code: info.error_code, image: address('ublk'), nbd: address('nbd') };
    },

    shutdown: (params) => {
      const restarting = params.restart ?? false;
      logger.info({ restarting }, 'shutdown requested over the control socket');
      setImmediate(() => context.requestStop(restarting ? 'shutdown --restart' : 'shutdown', { restarting }));
      return { pid: process.pid };
    },

    cleanup: async (params) => {
      const leftovers: string[] = [];
      for (const frontend of frontends) leftovers.push(...await frontend.cleanLeftovers(params.dry_run ?? false));
      if (leftovers.length > 0 && params.dry_run !== true) logger.warn({ leftovers }, 'deleted what an earlier daemon left behind');
      return { leftovers };
    },
  };
}

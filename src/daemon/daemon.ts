// The daemon: the engine, its frontends and the control socket, started in
// an order that fails fast and stopped in the reverse order.
//
//   start                                   stop (SIGTERM / SIGINT, `ublksnap shutdown`)
//   1 state dir + runtime dir (0700)        1 control socket: refuse new requests,
//   2 pid file (refuse a live daemon)         end long-polls, drain, close, unlink
//   3 socket path (refuse a live socket,    2 event pumps
//     remove a stale one)                   3 frontends (no I/O in flight after;
//   4 record of attached volumes read         restarting: ublk hands its volume
//   5 engine                                  devices over to the next daemon)
//   6 volumes from the config               4 every volume's CBT map copied
//   7 frontends                             5 engine.stop(): destroys snapshots,
//   8 recorded volumes re-attached and        flushes, joins workers, closes files
//     re-published; a failure is logged     6 CBT maps saved with the clean mark
//     and shown by status, the rest come up   (only when 3-5 all succeeded)
//   9 frontends take back, or let go of,    7 pid file
//     what the last daemon left (afterRestore)
//  10 control socket listens
//
// Volumes and change tracking across restarts: volume-persistence.ts.
// A failure during start undoes the steps already done and is thrown as a
// UblksnapError with the reason; main.ts prints it and exits non-zero.

import { rmSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { EngineControl } from '../engine/api';
import { METHODS, type DaemonStatus } from '../ipc/methods';
import { IpcServer, claimSocketPath } from '../ipc/server';
import type { DaemonConfig } from './config';
import { startEngine as defaultStartEngine, type StartEngine } from './engine-factory';
import { EventHub } from './events';
import type { Frontend, FrontendFactory, FrontendStopOptions } from '../frontends/frontend';
import { BUILTIN_FRONTENDS } from './frontends';
import { createHandlers, frontendOf } from './handlers';
import { NBD_SOCKET_FILE_NAME, PID_FILE_NAME, ensurePrivateDir, packageVersion } from './paths';
import { claimPidFile, releasePidFile } from './pid-file';
import { VolumePersistence, type SavedVolume } from './volume-persistence';

export interface DaemonOptions {
  config: DaemonConfig;
  logger: Logger;
  /** Default: the real engine (engine-factory.ts). */
  startEngine?: StartEngine;
  /** Default: the frontends built in (frontends.ts). */
  frontends?: readonly FrontendFactory[];
  /**
   * A client asked the daemon to stop (`ublksnap shutdown`). Default: stop
   * at once; main.ts routes it through its bounded shutdown, as a signal.
   */
  onStopRequest?: (daemon: Daemon, reason: string, options: DaemonStopOptions) => void;
}

/** restarting: a daemon comes back on this state dir; frontends hand over what they can. */
export type DaemonStopOptions = FrontendStopOptions;

export class Daemon {
  private stopping: Promise<boolean> | null = null;
  private readonly started_ms = Date.now();

  private constructor(
    readonly config: DaemonConfig,
    private readonly logger: Logger,
    private readonly engine: EngineControl,
    private readonly events: EventHub,
    private readonly frontends: Frontend[],
    private readonly ipc: IpcServer<typeof METHODS>,
    private readonly persistence: VolumePersistence,
    readonly pid_file: string,
  ) {}

  static async start(options: DaemonOptions): Promise<Daemon> {
    const { config, logger } = options;
    const undo: (() => Promise<void> | void)[] = [];
    try {
      ensurePrivateDir(config.state_dir);
      ensurePrivateDir(path.dirname(config.socket));
      const pid_file = path.join(config.state_dir, PID_FILE_NAME);
      claimPidFile(pid_file);
      undo.push(() => releasePidFile(pid_file));
      // Before the engine: a second daemon on a live socket fails in milliseconds.
      await claimSocketPath(config.socket, logger);
      const persistence = new VolumePersistence(config.state_dir, logger.child({ component: 'state' }));
      persistence.open();

      const engine = await (options.startEngine ?? defaultStartEngine)({
        params: config.params, logger: logger.child({ component: 'engine' }), watch_other_writers: true,
      });
      undo.push(() => engine.stop());
      // The engine logs each attach; a config volume that fails fails the start, as it always did.
      for (const volume of config.volumes) {
        // Not expect_saved: a config volume may be new to this state dir (its first start says "first attach").
        await persistence.attach(engine, volume.path, { ...(volume.name !== undefined ? { name: volume.name } : {}), expect_saved: false });
      }

      const frontends: Frontend[] = [];
      for (const factory of options.frontends ?? BUILTIN_FRONTENDS) {
        const frontend = factory.create({
          engine,
          logger: logger.child({ component: factory.kind }),
          nbd_socket: config.nbd_socket ?? path.join(path.dirname(config.socket), NBD_SOCKET_FILE_NAME),
          nbd_listen: config.nbd_listen,
          nbd_security: config.nbd_security,
          state_dir: config.state_dir,
        });
        await frontend.start();
        frontends.push(frontend);
        // A start that fails hands devices over as a planned restart does:
        // the next attempt takes them back instead of failing their holders.
        undo.push(() => frontend.stop({ restarting: true }));
      }
      if (!frontends.some((frontend) => frontend.kind === 'nbd') && (config.nbd_socket !== null || config.nbd_listen !== null)) {
        logger.warn('this build has no NBD frontend: --nbd-socket / --nbd-listen are ignored');
      }

      await restoreRecordedVolumes(engine, frontends, persistence);
      // Every volume is attached: frontends take back what the last daemon left for them.
      for (const frontend of frontends) await frontend.afterRestore();

      const events = new EventHub(engine, logger.child({ component: 'events' }));
      undo.push(() => events.stop());
      let daemon: Daemon | null = null;
      const ipc: IpcServer<typeof METHODS> = new IpcServer({
        socket_path: config.socket,
        methods: METHODS,
        logger: logger.child({ component: 'ipc' }),
        handlers: createHandlers({
          engine, events, frontends, logger, persistence,
          daemonStatus: () => (daemon as Daemon).statusOfDaemon(),
          requestStop: (reason, stop_options) => {
            const running = daemon as Daemon;
            if (options.onStopRequest) options.onStopRequest(running, reason, stop_options);
            else void running.stop(reason, stop_options);
          },
        }),
      });
      undo.push(() => ipc.stop());
      await ipc.listen();
      daemon = new Daemon(config, logger, engine, events, frontends, ipc, persistence, pid_file);
      logger.info({
        version: packageVersion(), socket: config.socket, state_dir: config.state_dir, config_file: config.config_file,
        frontends: frontends.map((frontend) => frontend.kind),
      }, 'daemon started');
      return daemon;
    } catch (error) {
      for (const step of undo.reverse()) {
        try {
          await step();
        } catch (undo_error) {
          // The start failed already; report the undo failure but throw the cause.
          logger.error({ err: undo_error }, 'cleanup after a failed start failed');
        }
      }
      throw error;
    }
  }

  /**
   * SIGHUP: each frontend reads its credentials again (NBD: TLS
   * certificates and keys); clients stay connected. A frontend whose new
   * files are bad keeps the old ones, and says why.
   */
  reload(): boolean {
    let ok = true;
    for (const frontend of this.frontends) {
      if (frontend.reload === undefined) continue;
      try {
        frontend.reload();
      } catch (error) {
        ok = false;
        this.logger.error({ frontend: frontend.kind, err: (error as Error).message }, 'reload failed: the previous credentials stay in use');
      }
    }
    this.logger.info({ ok }, 'daemon reloaded');
    return ok;
  }

  get is_stopping(): boolean {
    return this.stopping !== null;
  }

  /**
   * Stops everything in order. Idempotent: every caller gets the same
   * promise. Resolves true when every step succeeded.
   */
  stop(reason: string, options: DaemonStopOptions = {}): Promise<boolean> {
    this.stopping ??= this.stopSteps(reason, options);
    return this.stopping;
  }

  private async stopSteps(reason: string, options: DaemonStopOptions): Promise<boolean> {
    this.logger.info({ reason, restarting: options.restarting === true }, 'daemon stopping');
    let clean = true;
    const step = async (name: string, run: () => Promise<void> | void): Promise<boolean> => {
      try {
        await run();
        return true;
      } catch (error) {
        clean = false;
        this.logger.error({ err: error, step: name }, 'shutdown step failed');
        return false;
      }
    };
    await step('control socket', () => this.ipc.stop());
    await step('events', () => this.events.stop());
    let io_ended = true;
    for (const frontend of [...this.frontends].reverse()) io_ended = await step(`frontend ${frontend.kind}`, () => frontend.stop(options)) && io_ended;
    // A frontend that did not stop may still write: its maps are not final, so none is saved.
    let saved: SavedVolume[] | null = null;
    if (io_ended) await step('copy change tracking', () => { saved = this.persistence.exportAll(this.engine); });
    const engine_stopped = await step('engine', () => this.engine.stop());
    const to_save = saved as SavedVolume[] | null;
    if (to_save !== null && engine_stopped) {
      await step('save change tracking', () => {
        if (!this.persistence.saveClean(to_save)) throw new Error('some change tracking was not saved');
      });
    } else {
      this.logger.warn('change tracking not saved (the stop was not clean): the next start begins new generations');
    }
    await step('pid file', () => releasePidFile(this.pid_file));
    this.logger.info({ clean }, 'daemon stopped');
    return clean;
  }

  /** Where each frontend serves an export right now (kind → NBD URI or device). */
  addressesOf(export_name: string): Partial<Record<Frontend['kind'], string>> {
    const addresses: Partial<Record<Frontend['kind'], string>> = {};
    for (const frontend of this.frontends) {
      const address = frontend.addressOf(export_name);
      if (address !== null) addresses[frontend.kind] = address;
    }
    return addresses;
  }

  /** Removes what other processes see (socket, pid file) without waiting for anything: the forced exit. */
  removeFilesNow(): void {
    try {
      releasePidFile(this.pid_file);
    } catch (error) {
      this.logger.error({ err: error }, 'could not remove the pid file');
    }
    try {
      rmSync(this.config.socket, { force: true });
    } catch (error) {
      this.logger.error({ err: error }, 'could not remove the control socket');
    }
  }

  private statusOfDaemon(): DaemonStatus['daemon'] {
    return {
      version: packageVersion(),
      pid: process.pid,
      uptime_ms: Date.now() - this.started_ms,
      socket: this.config.socket,
      state_dir: this.config.state_dir,
      ipc_connections: this.ipc.connection_count,
      ipc_requests_in_flight: this.ipc.requests_in_flight,
      stopping: this.stopping !== null,
    };
  }
}

/**
 * Attaches the volumes recorded by earlier attaches and publishes each on
 * the frontends it had. A failure is logged and kept for status; the next
 * volume is tried regardless, and the record stays until a detach.
 */
async function restoreRecordedVolumes(engine: EngineControl, frontends: readonly Frontend[], persistence: VolumePersistence): Promise<void> {
  for (const recorded of persistence.toRestore(engine)) {
    try {
      await persistence.attach(engine, recorded.path, { name: recorded.name, expect_saved: true });
    } catch (error) {
      persistence.noteRestoreError(recorded, error);
      continue;
    }
    for (const kind of recorded.frontends) {
      try {
        const frontend = frontendOf(frontends, kind);
        frontend.assertAvailable();
        await frontend.publish(recorded.name);
      } catch (error) {
        // The volume stays attached (and on NBD): only this frontend is missing.
        persistence.noteRestoreError(recorded, error);
      }
    }
  }
}

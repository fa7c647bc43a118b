// The NBD server as a daemon frontend (the Frontend contract of
// src/frontends/frontend.ts; the daemon lists it in src/daemon/frontends.ts).
//
// Publishing is free for NBD: every export the engine resolves is served
// the moment it exists, so publish() only checks the name and returns its
// URI. unpublish() keeps connections open on purpose: clients of a
// detached volume or destroyed image get EIO with a message on their next
// request (a clean error, as the issue asks), and disconnect when they
// choose. A volume's connected clients make a plain detach refuse (EBUSY,
// naming them): only `detach --force` leaves them with EIO.

import type { EngineControl } from '../../engine/api';
import type { NbdSecurityOptions } from './security';
import type { NbdLogger } from './logger';
import { NbdServer } from './server';

export interface NbdFrontendContext {
  engine: EngineControl;
  logger: NbdLogger;
  /** The NBD Unix socket (--nbd-socket, or the daemon's default next to its control socket). */
  nbd_socket: string;
  /** TCP listener when --nbd-listen asked for one. */
  nbd_listen: { host: string; port: number } | null;
  nbd_security?: NbdSecurityOptions;
  state_dir: string;
}

export interface NbdFrontendStatus {
  kind: string;
  listening: string[];
  connections: number;
  details?: Record<string, string | number | boolean>;
  clients?: ReturnType<NbdServer['status']>['clients'];
}

export class NbdFrontend {
  readonly kind = 'nbd' as const;
  readonly server: NbdServer;

  constructor(private readonly context: NbdFrontendContext) {
    this.server = new NbdServer(context.engine, {
      socket_path: context.nbd_socket,
      ...(context.nbd_listen !== null ? { listen: context.nbd_listen } : {}),
      logger: context.logger,
      ...(context.nbd_security !== undefined ? { security: context.nbd_security } : {}),
    });
  }

  start(): Promise<void> {
    return this.server.start();
  }

  /** NBD clients reconnect by themselves: a restart hands nothing over. */
  stop(): Promise<void> {
    return this.server.stop();
  }

  /** Every export is served from the start: nothing is left from an earlier daemon. */
  afterRestore(): Promise<void> {
    return Promise.resolve();
  }

  cleanLeftovers(): Promise<string[]> {
    return Promise.resolve([]);
  }

  status(): NbdFrontendStatus {
    const status = this.server.status();
    const listening: string[] = [];
    if (status.socket_path !== null) listening.push(status.socket_path);
    if (status.tcp !== null) listening.push(`${status.tcp.host}:${status.tcp.port}`);
    return {
      kind: this.kind,
      listening,
      connections: status.connections,
      details: { bound: status.bound, accepted_total: status.accepted_total, refused_total: status.refused_total, tls: status.tls },
      clients: status.clients,
    };
  }

  /** New TLS sessions use the credentials as they are on disk now; live ones keep theirs. */
  reload(): void {
    this.server.reloadTls();
  }

  /** Nothing to freeze here: an NBD client's filesystem lives on its own machine. */
  async quiesceForTake(export_names: string[]): Promise<() => Promise<void>> {
    void export_names;
    return async () => undefined;
  }

  /**
   * Nothing to check: a filesystem over an NBD export is mounted through a
   * kernel NBD client whose device this process cannot map back to an export.
   */
  refuseStorageOn(storage_path: string, export_names: string[]): void {
    void storage_path;
    void export_names;
  }

  /** Started means serving: nothing more to check. */
  assertAvailable(): void {}

  /** Checks the export exists (ESRCH from the engine if not) and returns its URI. */
  async publish(export_name: string): Promise<string> {
    this.context.engine.resolveExport(export_name);
    return this.server.uri(export_name);
  }

  addressOf(export_name: string): string | null {
    try {
      this.context.engine.resolveExport(export_name);
    } catch {
      // Not an export right now (unknown volume, image not taken or destroyed).
      return null;
    }
    return this.server.uri(export_name);
  }

  /**
   * Connections are not holders: a destroyed image's clients get EIO, as a
   * backup that ends its snapshot expects. A live volume's are clients(),
   * which detach refuses on.
   */
  holders(export_name: string): string[] {
    void export_name;
    return [];
  }

  clients(export_name: string): string[] {
    return this.server.clientsOf(export_name);
  }

  async unpublish(export_name: string): Promise<void> {
    void export_name;
  }
}

export const nbdFrontendFactory = {
  kind: 'nbd' as const,
  create(context: NbdFrontendContext): NbdFrontend {
    return new NbdFrontend(context);
  },
};

// The hook by which frontends (NBD, ublk) plug into the daemon. The daemon
// knows frontends only through this interface: it creates them from the
// registered factories (src/daemon/frontends.ts) after the engine is up, publishes
// exports through them when `attach --nbd/--ublk` asks, shows their status,
// and stops them before the engine at shutdown (so no I/O is in flight
// when the engine closes its files).
//
//   daemon start:  engine ─► factory.create(context) ─► frontend.start()
//   attach --nbd:  engine.attach ─► frontend.publish('NAME') ─► 'nbd+unix:///NAME?socket=…'
//   snapshot_info: frontend.addressOf('NAME@ID')  (no side effect)
//   detach:        frontend.unpublish('NAME')
//   daemon start:  … volumes attached ─► frontend.afterRestore()  (what the last daemon left)
//   daemon stop:   frontend.stop({ restarting }) ─► engine.stop()

import type { Logger } from 'pino';
import type { EngineControl } from '../engine/api';

export type FrontendKind = 'nbd' | 'ublk';

/** A TCP address to listen on. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** Who is connected, for `status`: one entry per client connection. */
export interface ClientStatus {
  id: number;
  peer: string;
  tls: boolean;
  /** What the client proved (a PSK user, a certificate CN) or `anonymous`. */
  identity: string;
  /** Bound export; null while it negotiates. */
  export: string | null;
  read_only: boolean;
}

export interface FrontendStatus {
  kind: string;
  /** Where clients reach it (socket paths, host:port). */
  listening: string[];
  connections: number;
  /** Anything else the frontend wants to show. */
  details?: Record<string, string | number | boolean>;
  clients?: ClientStatus[];
}

/**
 * How a network frontend (NBD over TCP) guards its exports: TLS (mode,
 * certificates directory, PSK file, client certificates checked),
 * authorisation rules per identity and export, and whether a listener on a
 * non-loopback address may run without TLS required.
 */
export interface NetworkSecurity {
  tls: { mode: 'off' | 'allow' | 'require'; certificates_dir: string | null; psk_file: string | null; verify_peer: boolean };
  access: { identity: string; exports: string[]; read_only: boolean }[];
  insecure: boolean;
}

export interface FrontendContext {
  engine: EngineControl;
  logger: Logger;
  /** The NBD Unix socket: --nbd-socket, else next to the control socket. */
  nbd_socket: string;
  /** The NBD TCP listener, when --nbd-listen asked for one. */
  nbd_listen: ListenAddress | null;
  /** TLS and authorisation of the NBD server (--nbd-tls and friends); absent: TLS off, no rules. */
  nbd_security?: NetworkSecurity;
  state_dir: string;
}

export interface Frontend {
  readonly kind: FrontendKind;
  /** Binds its sockets / devices. Throws UblksnapError (ENODEV when the kernel lacks ublk). */
  start(): Promise<void>;
  /**
   * Stops accepting, ends client connections, closes its engine queues.
   * restarting: a daemon will come back on the same state dir (a planned
   * restart): keep what clients hold where the frontend can hand it over
   * (ublk leaves its volume devices for the next daemon to take back).
   */
  stop(options?: FrontendStopOptions): Promise<void>;
  /**
   * The daemon has attached every volume it will at start: take back what
   * an earlier daemon left for these exports, and let go of the rest.
   */
  afterRestore(): Promise<void>;
  /**
   * What an earlier daemon left behind that nothing serves now (a ublk
   * device whose server is gone), one phrase each: deleted, or only listed
   * when dry_run.
   */
  cleanLeftovers(dry_run: boolean): Promise<string[]>;
  status(): FrontendStatus;
  /** SIGHUP: read credentials (certificates, keys) again without dropping a client. Throws on a bad file, keeping the old ones. */
  reload?(): void;
  /**
   * Take is coming for these exports: make what this frontend serves of
   * them consistent (ublk freezes the filesystems mounted on their
   * devices). Resolves with the function that undoes it, called right
   * after the take whether it succeeded or not. Bounded: a freeze that
   * does not finish in time fails the take and is undone.
   */
  quiesceForTake(export_names: string[]): Promise<() => Promise<void>>;
  /**
   * Throws (EINVAL, saying why) when a difference storage at storage_path
   * would write into one of these exports through this frontend: a
   * filesystem on a volume's own device, or any stack over it.
   */
  refuseStorageOn(storage_path: string, export_names: string[]): void;
  /** Throws (ENODEV, with the reason) when publish cannot work here: checked before anything changes. */
  assertAvailable(): void;
  /**
   * Makes the export (NAME or NAME@ID) reachable through this frontend if it
   * is not already (NBD: every export is; ublk: adds a device) and returns
   * its address: an NBD URI or a /dev/ublkbN path.
   */
  publish(export_name: string): Promise<string>;
  /** The address of an export when reachable now, else null. */
  addressOf(export_name: string): string | null;
  /**
   * Who holds what publish made for the export (a mounted filesystem, an
   * open descriptor), one phrase each; empty when nothing does.
   */
  holders(export_name: string): string[];
  /**
   * Clients connected to the export now (NBD: one phrase per connection,
   * naming its id and peer); empty when none or when the frontend's users
   * are holders instead. Detach refuses while a volume has any, unless forced.
   */
  clients(export_name: string): string[];
  /**
   * The export is going away (detach, destroy): release what publish made,
   * held or not. The daemon asks holders() first and refuses unless forced.
   */
  unpublish(export_name: string): Promise<void>;
}

export interface FrontendStopOptions {
  restarting?: boolean;
}

export interface FrontendFactory {
  readonly kind: FrontendKind;
  /** A new frontend, not yet started. */
  create(context: FrontendContext): Frontend;
}

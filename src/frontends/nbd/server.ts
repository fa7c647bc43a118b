// The NBD server of the daemon: listeners (a Unix socket and/or TCP,
// loopback by default), the set of live connections, and start/stop.
// It serves the engine's exports (exports.ts) to any number of clients at
// once; each connection gets its own IoQueue at GO, so one client's load,
// errors or death never touch another's tags. docs/nbd.md is the user
// documentation.
//
//   NbdServer ── accept ──► Connection (connection.ts)
//                              ├─ handshake: Negotiation (negotiation.ts) over EngineCatalog (exports.ts)
//                              └─ transmission: Transmission (transmission.ts) ─► IoQueue ─► engine
//
// Security (security.ts, tls-credentials.ts, access.ts): STARTTLS with x509
// or PSK in mode off / allow / require, authorisation per export, and no
// plain listener on a non-loopback address unless asked for.
//
// This class is the public wrapper: it validates every option with a clear
// TypeError; the parts below it only assert.

import { lstatSync, unlinkSync, chmodSync } from 'node:fs';
import net from 'node:net';
import type { EngineControl } from '../../engine/api';
import { KiB, MiB } from '../../shared/units';
import { Connection, ConnectionSettings, type ConnectionStatus } from './connection';
import { EngineCatalog } from './exports';
import { NbdLogger, silentLogger } from './logger';
import { ServerSecurity, type NbdSecurityOptions } from './security';
import { TLS_OFF, type TlsMode } from './tls-credentials';
import { tcpUri, tlsUri, unixUri, type TlsUriCredentials } from './uri';

/** Tags per connection: requests in flight per client. Costs depth × max_io_bytes of shared memory per bound connection. */
export const QUEUE_DEPTH_DEFAULT = 64;
/** One tag's slot: the largest piece of a request the engine sees at once. */
export const MAX_IO_BYTES_DEFAULT = 1 * MiB;
/** The advertised maximum block: proto.md's interoperable 32 MiB; must be ≤ depth × max_io_bytes. */
export const MAX_REQUEST_BYTES_DEFAULT = 32 * MiB;
/** A client gets this long from connect to GO before it is dropped. */
export const HANDSHAKE_TIMEOUT_MS_DEFAULT = 10_000;
/** Connections at once; more are closed at accept. Each costs a socket (and a queue once bound). */
export const CONNECTIONS_MAX_DEFAULT = 256;
/** The Unix socket's mode: owner only, like the control socket. */
export const SOCKET_MODE_DEFAULT = 0o600;
/** Option data we buffer: 64 KiB holds 15 maximal strings; larger is answered REP_ERR_TOO_BIG. */
export const OPTION_BYTES_MAX = 64 * KiB;
/** Options per handshake before the client is taken for a denial of service. */
export const OPTIONS_PER_HANDSHAKE_MAX = 1024;
/** Contexts one SET_META_CONTEXT may select; each adds a chunk to every BLOCK_STATUS reply. */
export const META_CONTEXTS_MAX = 8;
/** Queries one meta-context option may carry. */
export const META_QUERIES_MAX = 1024;
/** A refused WRITE's payload up to this is read and dropped; beyond it the client is cut off (proto.md: ≥ 32 MiB is never a DoS). */
export const WRITE_DISCARD_BYTES_MAX = 64 * MiB;
/** How long stop() lets bound connections finish the requests they have in flight. */
export const STOP_DRAIN_TIMEOUT_MS = 5_000;
const LOOPBACK_HOST = '127.0.0.1';
const REFUSALS_PER_LOG_LINE = 1000;
const PORT_MAX = 65_535;

export interface NbdServerOptions {
  /** Listen on this Unix socket (docs/design.md §5: the default transport). */
  socket_path?: string;
  /** Listen on TCP; host defaults to loopback; port 0 picks a free one. */
  listen?: { host?: string; port: number };
  logger?: NbdLogger;
  /** The maximum block advertised and accepted for READ and WRITE. */
  max_request_bytes?: number;
  handshake_timeout_ms?: number;
  queue_depth?: number;
  /** The IoQueue slot size; requests above it are split across tags. */
  max_io_bytes?: number;
  connections_max?: number;
  socket_mode?: number;
  /** TLS, authorisation, the non-loopback rule. Default: TLS off, no rules, not insecure. */
  security?: NbdSecurityOptions;
  /**
   * What TLS URIs tell clients to use (their certificates dir, PSK file,
   * user). Default: the server's own PSK file and its first user, or its
   * certificates directory, which serve a client on this machine as is.
   */
  tls_uri?: TlsUriCredentials;
}

export interface NbdServerStatus {
  connections: number;
  bound: number;
  accepted_total: number;
  refused_total: number;
  socket_path: string | null;
  tcp: { host: string; port: number } | null;
  tls: TlsMode;
  /** When the TLS credentials in use were read (start or the last reload); null without TLS. */
  tls_loaded_at: string | null;
  clients: ConnectionStatus[];
}

function positiveInteger(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(`NbdServer option ${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

export class NbdServer {
  private readonly logger: NbdLogger;
  private readonly settings: ConnectionSettings;
  private readonly catalog: EngineCatalog;
  private readonly security: ServerSecurity;
  private readonly tls_uri: TlsUriCredentials;
  private readonly connections_max: number;
  private readonly socket_path: string | null;
  private readonly socket_mode: number;
  private readonly tcp_host: string | null;
  private readonly tcp_port_wanted: number;
  private tcp_port: number | null = null;
  /** True once our listener owns the socket file: only then does stop() remove it. */
  private socket_owned = false;
  private readonly listeners: net.Server[] = [];
  private readonly connections = new Set<Connection>();
  private next_connection_id = 1;
  private accepted_total = 0;
  private refused_total = 0;
  private state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';

  constructor(private readonly engine: EngineControl, options: NbdServerOptions) {
    if (typeof options !== 'object' || options === null) throw new TypeError('NbdServer options must be an object');
    if (options.socket_path === undefined && options.listen === undefined) {
      throw new TypeError('NbdServer needs socket_path, listen, or both');
    }
    if (options.socket_path !== undefined && (typeof options.socket_path !== 'string' || options.socket_path === '')) {
      throw new TypeError('NbdServer option socket_path must be a non-empty path');
    }
    if (options.listen !== undefined) {
      const { host, port } = options.listen;
      if (host !== undefined && (typeof host !== 'string' || host === '')) throw new TypeError('NbdServer option listen.host must be a host name or address');
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > PORT_MAX) {
        throw new TypeError(`NbdServer option listen.port must be an integer in [0, ${PORT_MAX}], got ${String(port)}`);
      }
    }
    const queue_depth = positiveInteger(options.queue_depth, 'queue_depth', QUEUE_DEPTH_DEFAULT);
    const max_io_bytes = positiveInteger(options.max_io_bytes, 'max_io_bytes', MAX_IO_BYTES_DEFAULT);
    const max_request_bytes = positiveInteger(options.max_request_bytes, 'max_request_bytes', Math.min(MAX_REQUEST_BYTES_DEFAULT, queue_depth * max_io_bytes));
    if (max_request_bytes > queue_depth * max_io_bytes) {
      throw new TypeError(`NbdServer option max_request_bytes (${max_request_bytes}) must be at most queue_depth × max_io_bytes (${queue_depth * max_io_bytes})`);
    }
    if (max_request_bytes > WRITE_DISCARD_BYTES_MAX) {
      throw new TypeError(`NbdServer option max_request_bytes must be at most ${WRITE_DISCARD_BYTES_MAX}`);
    }
    this.logger = options.logger ?? silentLogger();
    this.connections_max = positiveInteger(options.connections_max, 'connections_max', CONNECTIONS_MAX_DEFAULT);
    this.socket_path = options.socket_path ?? null;
    this.socket_mode = options.socket_mode ?? SOCKET_MODE_DEFAULT;
    if (!Number.isInteger(this.socket_mode) || this.socket_mode < 0 || this.socket_mode > 0o777) {
      throw new TypeError(`NbdServer option socket_mode must be a file mode, got ${String(options.socket_mode)}`);
    }
    this.tcp_host = options.listen ? (options.listen.host ?? LOOPBACK_HOST) : null;
    this.tcp_port_wanted = options.listen?.port ?? 0;
    this.settings = {
      handshake_timeout_ms: positiveInteger(options.handshake_timeout_ms, 'handshake_timeout_ms', HANDSHAKE_TIMEOUT_MS_DEFAULT),
      option_bytes_max: OPTION_BYTES_MAX,
      negotiation: { options_max: OPTIONS_PER_HANDSHAKE_MAX, meta_contexts_max: META_CONTEXTS_MAX, meta_queries_max: META_QUERIES_MAX },
      queue_depth,
      max_io_bytes,
      discard_bytes_max: WRITE_DISCARD_BYTES_MAX,
      zero_segment_bytes: max_io_bytes,
      // Replies already bounded by the tags, plus room for refusals: beyond it the client is not reading.
      write_backlog_bytes_max: queue_depth * max_io_bytes + MiB,
      stop_drain_timeout_ms: STOP_DRAIN_TIMEOUT_MS,
    };
    this.catalog = new EngineCatalog(engine, max_request_bytes);
    const security = options.security ?? { tls: TLS_OFF, access: [], insecure: false };
    // Reads the credentials: a missing or world-readable key fails here, before anything listens.
    this.security = new ServerSecurity(security, this.logger);
    this.tls_uri = options.tls_uri ?? defaultTlsUri(security, this.security);
  }

  /** Reads the TLS certificates and keys again; live connections keep theirs. Throws (keeping the old ones) on a bad file. */
  reloadTls(): void {
    const credentials = this.security.reload();
    if (credentials !== null) this.logger.info({ loaded_at: credentials.loaded_at }, 'nbd TLS credentials reloaded');
  }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`NbdServer.start() in state ${this.state}`);
    this.state = 'running';
    try {
      if (this.tcp_host !== null) this.security.checkListener(this.tcp_host);
      if (this.socket_path !== null) await this.listenUnix(this.socket_path);
      if (this.tcp_host !== null) await this.listenTcp(this.tcp_host, this.tcp_port_wanted);
    } catch (error) {
      await this.stop();
      throw error;
    }
    this.logger.info({ socket: this.socket_path, tcp: this.tcp_host !== null ? `${this.tcp_host}:${this.tcp_port}` : null },
      'nbd server listening');
  }

  /** Stops accepting, lets bound connections finish in-flight requests (bounded), closes everything. */
  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    const listeners_closed = this.listeners.map((listener) => new Promise<void>((resolve) => listener.close(() => resolve())));
    for (const connection of this.connections) connection.shutdown();
    await Promise.all([...this.connections].map((connection) => connection.closed));
    await Promise.all(listeners_closed);
    if (this.socket_path !== null && this.socket_owned) this.removeStaleSocket(this.socket_path, false);
    this.state = 'stopped';
    this.logger.info({ accepted: this.accepted_total, refused: this.refused_total }, 'nbd server stopped');
  }

  /**
   * The URI of an export: the TLS one when TLS is required on a TCP
   * listener (that is how remote clients reach it), else the Unix socket
   * when there is one, else TCP (nbds:// when TLS is on).
   */
  uri(export_name: string, transport?: 'unix' | 'tcp'): string {
    const remote_first = this.tcp_host !== null && this.security.tls_mode === 'require';
    const use_unix = transport === 'unix' || (transport === undefined && this.socket_path !== null && !remote_first);
    if (use_unix) {
      if (this.socket_path === null) throw new Error('NbdServer has no Unix socket');
      return unixUri(this.socket_path, export_name);
    }
    if (this.tcp_host === null || this.tcp_port === null) throw new Error('NbdServer is not listening on TCP');
    if (this.security.tls_mode !== 'off') return tlsUri(this.tcp_host, this.tcp_port, export_name, this.tls_uri);
    return tcpUri(this.tcp_host, this.tcp_port, export_name);
  }

  /** Connections bound to this export now, one phrase each: `connection 3 from 127.0.0.1:41234`. */
  clientsOf(export_name: string): string[] {
    const clients: string[] = [];
    for (const connection of this.connections) {
      if (connection.bound_export !== export_name) continue;
      // A Unix socket peer has no address; its connection id is in the daemon's log with the export.
      const from = connection.peer === 'unix' ? `the Unix socket ${this.socket_path ?? ''}` : connection.peer;
      clients.push(`NBD connection ${connection.id} from ${from}`);
    }
    return clients;
  }

  status(): NbdServerStatus {
    let bound = 0;
    for (const connection of this.connections) if (connection.in_transmission) bound += 1;
    return {
      connections: this.connections.size,
      bound,
      accepted_total: this.accepted_total,
      refused_total: this.refused_total,
      socket_path: this.socket_path,
      tcp: this.tcp_host !== null && this.tcp_port !== null ? { host: this.tcp_host, port: this.tcp_port } : null,
      tls: this.security.tls_mode,
      tls_loaded_at: this.security.credentials()?.loaded_at ?? null,
      clients: [...this.connections].map((connection) => connection.status()),
    };
  }

  private newListener(): net.Server {
    // Half-open: a client that shuts its sending side still gets the replies to what it sent.
    const listener = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    listener.on('error', (error) => this.logger.error({ err: error.message }, 'nbd listener error'));
    this.listeners.push(listener);
    return listener;
  }

  private listenOn(listener: net.Server, options: net.ListenOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      const failed = (error: Error): void => reject(error);
      listener.once('error', failed);
      listener.listen(options, () => {
        listener.off('error', failed);
        resolve();
      });
    });
  }

  private async listenUnix(socket_path: string): Promise<void> {
    await this.clearSocketPath(socket_path);
    const listener = this.newListener();
    await this.listenOn(listener, { path: socket_path });
    this.socket_owned = true;
    chmodSync(socket_path, this.socket_mode);
  }

  private async listenTcp(host: string, port: number): Promise<void> {
    const listener = this.newListener();
    await this.listenOn(listener, { host, port });
    const address = listener.address();
    this.tcp_port = typeof address === 'object' && address !== null ? address.port : port;
  }

  /** A socket file left by a dead daemon is removed; a live one, or any other file, is an error. */
  private async clearSocketPath(socket_path: string): Promise<void> {
    let is_socket: boolean;
    try {
      is_socket = lstatSync(socket_path).isSocket();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    if (!is_socket) throw new Error(`NBD socket path ${socket_path} exists and is not a socket`);
    const alive = await new Promise<boolean>((resolve) => {
      const probe = net.connect({ path: socket_path });
      probe.once('connect', () => { probe.destroy(); resolve(true); });
      probe.once('error', () => resolve(false));
    });
    if (alive) throw new Error(`NBD socket ${socket_path} is in use by another server`);
    this.removeStaleSocket(socket_path, true);
  }

  private removeStaleSocket(socket_path: string, must_exist: boolean): void {
    try {
      unlinkSync(socket_path);
    } catch (error) {
      // ENOENT: already gone, which is what we wanted.
      if (must_exist || (error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }

  private accept(socket: net.Socket): void {
    if (this.state !== 'running') {
      socket.destroy();
      return;
    }
    if (this.connections.size >= this.connections_max) {
      // Counted across the Unix and TCP listeners together.
      this.refused_total += 1;
      // The first refusal and every REFUSALS_PER_LOG_LINE-th after: a flood of connections is not a flood of log lines.
      if (this.refused_total % REFUSALS_PER_LOG_LINE === 1) {
        this.logger.warn({ connections_max: this.connections_max, refused_total: this.refused_total }, 'nbd connection refused: too many connections');
      }
      socket.destroy();
      return;
    }
    this.accepted_total += 1;
    if (socket.remoteAddress !== undefined) socket.setNoDelay(true);
    const id = this.next_connection_id;
    this.next_connection_id += 1;
    const peer = socket.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
    const connection = new Connection(socket, {
      id,
      peer,
      engine: this.engine,
      catalog: this.catalog,
      settings: this.settings,
      logger: this.logger,
      security: this.security,
      transport: socket.remoteAddress !== undefined ? 'tcp' : 'unix',
      shuttingDown: () => this.state !== 'running',
    });
    this.connections.add(connection);
    void connection.closed.then(() => this.connections.delete(connection));
    this.logger.debug({ connection: id, peer }, 'nbd client connected');
    connection.start();
  }
}

/** A client on this machine can use the server's own PSK file (first user) or certificates directory. */
function defaultTlsUri(options: NbdSecurityOptions, security: ServerSecurity): TlsUriCredentials {
  const credentials = security.credentials();
  if (options.tls.psk_file !== null && credentials?.psk) {
    const first = credentials.psk.keys().next();
    return { psk_file: options.tls.psk_file, ...(first.done === true ? {} : { username: first.value }) };
  }
  if (options.tls.certificates_dir !== null) return { certificates_dir: options.tls.certificates_dir };
  return {};
}

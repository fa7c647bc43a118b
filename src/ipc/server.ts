// The control-socket server: JSON-RPC 2.0 lines over a Unix socket, served
// by a table of handlers. It knows nothing of the engine: the daemon gives
// it handlers; tests give it toy ones.
//
//   accept ─► cap (connections_max) ─► Connection
//                                        │ LineSplitter (line_bytes_max)
//                                        ▼
//                           parseRequestLine ─► method? ─► validate(params)
//                                        │                     │
//                                        ▼                     ▼
//                                 error reply          handler(params, ctx)
//                                                          │ ctx.signal aborts
//                                                          ▼ on close / stop
//                                                    result or error reply
//
// Design notes
// - A client can never hurt the daemon: every failure of a request (bad
//   JSON, bad params, a handler that throws) becomes an error reply; a line
//   over the limit gets one reply and the connection is closed; a client
//   that stops reading its replies is disconnected when its write buffer
//   passes write_buffer_bytes_max.
// - Each connection has an AbortController. Long-polls listen on its
//   signal: when the client goes away (or only shuts its sending side: a
//   vanished client looks the same until a write fails), or the daemon
//   stops, the wait ends at once and its resources are released (no timer,
//   no queued waiter left).
// - Requests of one connection run concurrently, answered by id, at most
//   requests_in_flight_max at a time (a long-poll counts).
// - The socket is created under umask 0177 and chmod'ed to 0600 after
//   listen: no moment exists where another user could connect.

import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { UblksnapError } from '../shared/errors';
import { LineSplitter } from './line-splitter';
import {
  REQUEST_LINE_BYTES_MAX, failureLine, invalidParams, methodNotFound, parseRequestLine, successLine,
  type RequestId, type RpcRequest,
} from './protocol';
import { validate, type Infer, type Schema } from './schema';

/** Concurrent client connections; each costs a socket and a few KiB. */
export const CONNECTIONS_MAX = 256;
/** Requests one connection may have running at once (long-polls included). */
export const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX = 64;
/** A connection with nothing running and nothing sent for this long is closed. */
export const IDLE_TIMEOUT_MS = 120_000;
/** Replies queued to a client that does not read them, before we drop it. */
export const WRITE_BUFFER_BYTES_MAX = 128 * 1024 * 1024;
/** Reading pauses while this many reply bytes wait for the client. */
const WRITE_BUFFER_BYTES_HIGH = 4 * 1024 * 1024;
/** At stop: how long running requests may take to finish before we cut them. */
export const DRAIN_TIMEOUT_MS = 10_000;
/** At stop: how long a client has to read its last replies. */
const CLOSE_TIMEOUT_MS = 2_000;
/** Socket file mode: the owner only (docs/design.md §10). */
export const SOCKET_MODE = 0o600;
/** umask while the socket is bound, so it is never created wider than 0600. */
const SOCKET_UMASK = 0o177;
/** Probing an existing socket file: how long a live daemon has to accept. */
const PROBE_TIMEOUT_MS = 1_000;

export interface RequestContext {
  /** Aborted when the connection closes or the server stops; reason is 'closed' or 'shutdown'. */
  readonly signal: AbortSignal;
  readonly connection_id: number;
}

export interface MethodSpec {
  readonly params: Schema;
}

export type HandlerTable<T extends Record<string, MethodSpec>> = {
  [M in keyof T]: (params: Infer<T[M]['params']>, context: RequestContext) => unknown;
};

export interface IpcServerOptions<T extends Record<string, MethodSpec>> {
  socket_path: string;
  methods: T;
  handlers: HandlerTable<T>;
  logger: Logger;
  connections_max?: number;
  requests_in_flight_max?: number;
  line_bytes_max?: number;
  idle_timeout_ms?: number;
  drain_timeout_ms?: number;
}

export class SocketInUseError extends UblksnapError {
  constructor(socket_path: string) {
    super('EBUSY', `a daemon is already listening on ${socket_path}`);
  }
}

/**
 * Makes socket_path free to bind: refuses when a daemon answers there,
 * removes a stale socket file (nobody listening), refuses to touch a
 * path that is not a socket.
 */
export async function claimSocketPath(socket_path: string, logger?: Logger): Promise<void> {
  let stats;
  try {
    stats = lstatSync(socket_path);
  } catch (error) {
    // ENOENT: nothing there, the normal case.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!stats.isSocket()) throw new UblksnapError('EEXIST', `${socket_path} exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.createConnection(socket_path);
    const timer = setTimeout(() => { probe.destroy(); resolve(true); }, PROBE_TIMEOUT_MS);
    probe.once('connect', () => { clearTimeout(timer); probe.destroy(); resolve(true); });
    // ECONNREFUSED: a socket file with no listener, left by a crash.
    probe.once('error', () => { clearTimeout(timer); resolve(false); });
  });
  if (live) throw new SocketInUseError(socket_path);
  logger?.info({ socket: socket_path }, 'removing stale socket');
  unlinkSync(socket_path);
}

interface Limits {
  connections_max: number;
  requests_in_flight_max: number;
  line_bytes_max: number;
  idle_timeout_ms: number;
  drain_timeout_ms: number;
}

export class IpcServer<T extends Record<string, MethodSpec>> {
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  private readonly limits: Limits;
  private readonly method_names: string[];
  private next_connection_id = 1;
  private stopping = false;
  private listening = false;
  private requests_in_flight_count = 0;
  private drained: (() => void) | null = null;

  constructor(private readonly options: IpcServerOptions<T>) {
    this.limits = {
      connections_max: options.connections_max ?? CONNECTIONS_MAX,
      requests_in_flight_max: options.requests_in_flight_max ?? REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
      line_bytes_max: options.line_bytes_max ?? REQUEST_LINE_BYTES_MAX,
      idle_timeout_ms: options.idle_timeout_ms ?? IDLE_TIMEOUT_MS,
      drain_timeout_ms: options.drain_timeout_ms ?? DRAIN_TIMEOUT_MS,
    };
    this.method_names = Object.keys(options.methods);
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => this.accept(socket));
    this.server.on('error', (error) => options.logger.error({ err: error }, 'control socket error'));
  }

  get socket_path(): string {
    return this.options.socket_path;
  }

  get connection_count(): number {
    return this.connections.size;
  }

  get requests_in_flight(): number {
    return this.requests_in_flight_count;
  }

  get is_stopping(): boolean {
    return this.stopping;
  }

  /** Claims the path (see claimSocketPath), binds it owner-only, listens. */
  async listen(): Promise<void> {
    const socket_path = this.options.socket_path;
    mkdirSync(path.dirname(socket_path), { recursive: true, mode: 0o700 });
    await claimSocketPath(socket_path, this.options.logger);
    const previous_umask = process.umask(SOCKET_UMASK);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(socket_path, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(previous_umask);
    }
    this.listening = true;
    chmodSync(socket_path, SOCKET_MODE);
    this.options.logger.info({ socket: socket_path }, 'control socket listening');
  }

  /**
   * Refuses new requests, ends long-polls (they answer ESHUTDOWN), waits for
   * running requests up to drain_timeout_ms, closes every connection after
   * its last reply and removes the socket file.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const closed = this.listening ? new Promise<void>((resolve) => this.server.close(() => resolve())) : Promise.resolve();
    for (const connection of this.connections) connection.abort('shutdown');
    if (this.requests_in_flight_count > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.options.logger.warn({ requests: this.requests_in_flight_count }, 'requests still running after the drain timeout; closing anyway');
          resolve();
        }, this.limits.drain_timeout_ms);
        this.drained = () => { clearTimeout(timer); resolve(); };
      });
      this.drained = null;
    }
    await Promise.all([...this.connections].map((connection) => connection.close(CLOSE_TIMEOUT_MS)));
    await closed;
    if (this.listening) {
      try {
        unlinkSync(this.options.socket_path);
      } catch (error) {
        // ENOENT: someone removed it already; nothing left to clean.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
      this.listening = false;
    }
    this.options.logger.info('control socket closed');
  }

  private accept(socket: net.Socket): void {
    if (this.stopping) {
      refuse(socket, new UblksnapError('ESHUTDOWN', 'the daemon is stopping'));
      return;
    }
    if (this.connections.size >= this.limits.connections_max) {
      this.options.logger.warn({ connections: this.connections.size }, 'connection refused: too many clients');
      refuse(socket, new UblksnapError('EBUSY', `too many connections to the daemon (at most ${this.limits.connections_max}); try again`));
      return;
    }
    const connection = new Connection(this.next_connection_id++, socket, this);
    this.connections.add(connection);
    socket.once('close', () => {
      this.connections.delete(connection);
      connection.abort('closed');
    });
  }

  // ── called by Connection ────────────────────────────────────────────────

  get connectionLimits(): Limits {
    return this.limits;
  }

  get logger(): Logger {
    return this.options.logger;
  }

  requestStarted(): void {
    this.requests_in_flight_count += 1;
  }

  requestFinished(): void {
    this.requests_in_flight_count -= 1;
    if (this.requests_in_flight_count === 0 && this.drained) this.drained();
  }

  /** Validates one parsed request and runs its handler; throws what the reply must say. */
  async dispatch(request: RpcRequest, context: RequestContext): Promise<unknown> {
    if (this.stopping) throw new UblksnapError('ESHUTDOWN', 'the daemon is stopping');
    const method = request.method;
    if (!Object.hasOwn(this.options.methods, method)) throw methodNotFound(method, this.method_names);
    const spec = this.options.methods[method] as MethodSpec;
    let params: unknown;
    try {
      params = validate(spec.params, request.params === undefined ? {} : request.params, 'params');
    } catch (error) {
      if (error instanceof UblksnapError) throw invalidParams(error);
      throw error;
    }
    const handler = this.options.handlers[method as keyof T] as (params: unknown, context: RequestContext) => unknown;
    return await handler(params, context);
  }
}

/**
 * Answers a connection we will not serve with one error line and closes it
 * once the line is out. What the client sent is read and dropped: a socket
 * left paused would never see the client's end and would linger.
 */
function refuse(socket: net.Socket, error: UblksnapError): void {
  socket.on('error', () => { /* the refused client may be gone already: nothing to tell it */ });
  socket.resume();
  socket.end(failureLine(null, error), () => socket.destroy());
}

/** One client. Lives from accept to close; owns its splitter and signal. */
class Connection {
  private readonly splitter: LineSplitter;
  private readonly controller = new AbortController();
  private in_flight_count = 0;
  private closing = false;
  /** The client shut its writing side: answer what is running, then end. */
  private read_ended = false;

  constructor(readonly id: number, private readonly socket: net.Socket, private readonly server: IpcServer<any>) {
    const limits = server.connectionLimits;
    this.splitter = new LineSplitter(limits.line_bytes_max, (line) => this.onLine(line));
    socket.setTimeout(limits.idle_timeout_ms);
    socket.on('timeout', () => {
      if (this.in_flight_count > 0) return;
      server.logger.debug({ connection: id }, 'closing idle connection');
      socket.destroy();
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      if (!this.closing) this.splitter.flush();
      this.read_ended = true;
      // A client that stopped sending may be gone altogether (we cannot tell
      // until a write fails): end its long-polls now so a vanished client
      // costs nothing; its other requests still get their replies.
      this.abort('closed');
      if (this.in_flight_count === 0) socket.end();
    });
    socket.on('drain', () => { if (!this.closing) socket.resume(); });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // ECONNRESET / EPIPE: the client went away mid-exchange; its problem, not ours.
      server.logger.debug({ connection: id, code: error.code }, 'client connection error');
    });
  }

  abort(reason: 'closed' | 'shutdown'): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }

  /** Ends the connection after its pending replies; destroys it if the client does not read them. */
  close(timeout_ms: number): Promise<void> {
    this.closing = true;
    if (this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.socket.destroy(); }, timeout_ms);
      this.socket.once('close', () => { clearTimeout(timer); resolve(); });
      this.socket.end();
    });
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    if (this.splitter.push(chunk) === 'overflow') {
      const limit = this.server.connectionLimits.line_bytes_max;
      this.server.logger.warn({ connection: this.id }, 'request line too long; closing the connection');
      this.closing = true;
      this.socket.end(failureLine(null, new UblksnapError('E2BIG', `request line longer than ${limit} bytes; closing the connection`)));
      // Whatever else the client sends is not read: destroy once the reply is out.
      this.socket.once('finish', () => this.socket.destroy());
    }
  }

  private onLine(line: string): void {
    if (this.closing) return;
    const parsed = parseRequestLine(line);
    if (parsed.kind === 'invalid') {
      this.send(failureLine(parsed.id, parsed.error));
      return;
    }
    const { request, notification } = parsed;
    const id: RequestId = request.id ?? null;
    if (this.in_flight_count >= this.server.connectionLimits.requests_in_flight_max) {
      if (!notification) {
        this.send(failureLine(id, new UblksnapError('EBUSY',
          `too many requests running on this connection (at most ${this.server.connectionLimits.requests_in_flight_max})`)));
      }
      return;
    }
    this.in_flight_count += 1;
    this.server.requestStarted();
    void this.serve(request, notification).finally(() => {
      this.in_flight_count -= 1;
      this.server.requestFinished();
      if (this.read_ended && this.in_flight_count === 0) this.socket.end();
    });
  }

  /** Runs one request to its reply. Never rejects: every failure becomes an error reply. */
  private async serve(request: RpcRequest, notification: boolean): Promise<void> {
    const id: RequestId = request.id ?? null;
    const context: RequestContext = { signal: this.controller.signal, connection_id: this.id };
    let line: string;
    try {
      const result = await this.server.dispatch(request, context);
      // Serialising may throw too (a BigInt, a cycle): a handler bug, answered as EIO.
      line = successLine(id, result ?? {});
    } catch (error) {
      if (error instanceof UblksnapError) {
        this.server.logger.debug({ method: request.method, code: error.code, message: error.message }, 'request failed');
      } else {
        this.server.logger.error({ err: error, method: request.method }, 'request handler failed');
      }
      line = failureLine(id, error);
    }
    if (!notification) this.send(line);
  }

  private send(line: string): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    this.socket.write(line);
    const queued_bytes = this.socket.writableLength;
    if (queued_bytes > WRITE_BUFFER_BYTES_MAX) {
      this.server.logger.warn({ connection: this.id, queued_bytes }, 'client does not read its replies; disconnecting');
      this.socket.destroy();
    } else if (queued_bytes > WRITE_BUFFER_BYTES_HIGH) {
      this.socket.pause();
    }
  }
}

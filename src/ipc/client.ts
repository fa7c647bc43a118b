// The client side of the control socket, used by the CLI and the tests:
// connect, call methods by name with typed params and results, close.
//
// Every failure is a UblksnapError with an errno name: the daemon's own
// error (its data.code), or one of ours for the transport (no daemon, the
// daemon hung up, a call that ran out of time).

import { statSync } from 'node:fs';
import net from 'node:net';
import { UblksnapError, type ErrorCode, ALL_ERROR_CODES } from '../shared/errors';
import { LineSplitter } from './line-splitter';
import { REPLY_LINE_BYTES_MAX, requestLine } from './protocol';
import type { MethodName, ParamsOf, ResultOf } from './methods';

/** Connecting to a local socket is immediate; a daemon that does not accept in this long is stuck. */
export const CONNECT_TIMEOUT_MS = 5_000;
/** A call that does not wait on purpose (everything but snapshot_waitevent). */
export const CALL_TIMEOUT_MS = 120_000;
/** Added to a long-poll's own timeout before the client gives up on the daemon. */
export const WAIT_MARGIN_MS = 10_000;

/** An error the daemon answered with. */
export class RemoteError extends UblksnapError {
  constructor(code: ErrorCode, message: string, readonly rpc_code: number) {
    super(code, message);
  }
}

interface Pending {
  resolve: (result: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

function errorCodeOf(value: unknown): ErrorCode {
  return typeof value === 'string' && (ALL_ERROR_CODES as string[]).includes(value) ? (value as ErrorCode) : 'EIO';
}

function isSocket(file: string): boolean {
  try {
    return statSync(file).isSocket();
  } catch {
    // Gone since the connect: call it a socket, and the stale-socket message stands.
    return true;
  }
}

function kindOf(file: string): string {
  const stats = statSync(file, { throwIfNoEntry: false });
  if (stats?.isFile()) return 'a regular file';
  if (stats?.isDirectory()) return 'a directory';
  if (stats?.isFIFO()) return 'a FIFO';
  return 'not a socket';
}

/** Every NBD server greets first with these 8 bytes; the daemon never speaks first. */
const NBD_GREETING = Buffer.from('NBDMAGIC');

function notOurSocket(socket_path: string, what: string): UblksnapError {
  return new UblksnapError('EINVAL', `${socket_path} is not a ublksnap daemon socket (${what}); give the daemon's control socket (--socket)`);
}

function connectError(socket_path: string, error: NodeJS.ErrnoException): UblksnapError {
  switch (error.code) {
    // ENOENT: no socket file; ECONNREFUSED: a file nobody listens on (a crashed daemon).
    case 'ENOENT':
      return new UblksnapError('ENOENT', `no daemon at ${socket_path} (start one with 'ublksnap daemon' or 'npm start', or give --socket)`);
    case 'ECONNREFUSED':
      // connect(2) says ECONNREFUSED for a file that is no socket at all, too.
      if (!isSocket(socket_path)) return new UblksnapError('EINVAL', `${socket_path} is not a socket (${kindOf(socket_path)}): give the daemon's control socket`);
      return new UblksnapError('ENOENT', `no daemon listens on ${socket_path} (a stale socket: the daemon is not running)`);
    // EACCES: the socket is 0600 and belongs to someone else.
    case 'EACCES':
    case 'EPERM':
      return new UblksnapError('EPERM', `no permission to connect to ${socket_path} (the daemon runs as another user)`);
    default:
      return new UblksnapError('EIO', `cannot connect to ${socket_path}: ${error.message}`);
  }
}

export class IpcClient {
  private readonly pending = new Map<number, Pending>();
  private readonly splitter: LineSplitter;
  private next_id = 1;
  private closed_error: UblksnapError | null = null;
  /** A whole reply line has come: the peer speaks our protocol. */
  private answered = false;

  static connect(socket_path: string, timeout_ms = CONNECT_TIMEOUT_MS): Promise<IpcClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socket_path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new UblksnapError('ETIMEDOUT', `the daemon at ${socket_path} did not accept within ${timeout_ms} ms`));
      }, timeout_ms);
      socket.once('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(connectError(socket_path, error));
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new IpcClient(socket, socket_path));
      });
    });
  }

  private constructor(private readonly socket: net.Socket, readonly socket_path: string) {
    this.splitter = new LineSplitter(REPLY_LINE_BYTES_MAX, (line) => this.onLine(line));
    socket.on('data', (chunk: Buffer) => {
      // A server that speaks first is not our daemon: an NBD server greets with NBDMAGIC.
      if (!this.answered && chunk.subarray(0, NBD_GREETING.length).equals(NBD_GREETING)) {
        this.fail(notOurSocket(socket_path, 'an NBD server answered'));
        socket.destroy();
        return;
      }
      if (this.splitter.push(chunk) === 'overflow') {
        this.fail(new UblksnapError('E2BIG', `a reply from the daemon exceeded ${REPLY_LINE_BYTES_MAX} bytes`));
        socket.destroy();
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // ECONNRESET / EPIPE: the daemon went away; every pending call fails with it.
      this.fail(new UblksnapError('EIO', `connection to the daemon failed: ${error.message}`));
    });
    socket.on('close', () => this.fail(this.answered || this.splitter.partial_bytes === 0
      ? new UblksnapError('EIO', 'the daemon closed the connection')
      : notOurSocket(socket_path, 'it sent bytes that are not a reply, then closed')));
  }

  call<M extends MethodName>(method: M, params: ParamsOf<M>, timeout_ms = CALL_TIMEOUT_MS): Promise<ResultOf<M>> {
    return this.callRaw(method, params, timeout_ms) as Promise<ResultOf<M>>;
  }

  /** Any method, any params: for tests that send what the CLI never would. */
  callRaw(method: string, params: unknown, timeout_ms = CALL_TIMEOUT_MS): Promise<unknown> {
    if (this.closed_error) return Promise.reject(this.closed_error);
    const id = this.next_id++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new UblksnapError('ETIMEDOUT', `${method}: no answer from the daemon within ${timeout_ms} ms`));
      }, timeout_ms);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.write(requestLine(id, method, params));
    });
  }

  close(): void {
    this.closed_error ??= new UblksnapError('EIO', 'the client closed the connection');
    this.socket.end();
    this.socket.destroy();
  }

  private onLine(line: string): void {
    let reply: { id?: unknown; result?: unknown; error?: { code?: unknown; message?: unknown; data?: { code?: unknown } } };
    try {
      reply = JSON.parse(line);
    } catch {
      // A daemon that sends non-JSON is broken beyond this call: fail everything.
      this.fail(this.answered
        ? new UblksnapError('EIO', `the daemon sent a line that is not JSON: ${line.slice(0, 80)}`)
        : notOurSocket(this.socket_path, `its first line is not JSON: ${JSON.stringify(line.slice(0, 40))}`));
      this.socket.destroy();
      return;
    }
    this.answered = true;
    const error = reply.error
      ? new RemoteError(errorCodeOf(reply.error.data?.code), String(reply.error.message ?? 'unknown error'),
        typeof reply.error.code === 'number' ? reply.error.code : 0)
      : null;
    if (reply.id === null || reply.id === undefined) {
      // An error about the connection itself (too many clients, line too long, stopping).
      this.fail(error ?? new UblksnapError('EIO', 'the daemon sent a reply without an id'));
      return;
    }
    const pending = typeof reply.id === 'number' ? this.pending.get(reply.id) : undefined;
    if (!pending) return; // a reply to a call that timed out already
    this.pending.delete(reply.id as number);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(reply.result);
  }

  private fail(error: UblksnapError): void {
    this.closed_error ??= error;
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      this.pending.delete(id);
      pending.reject(error);
    }
  }
}

/** Connects, makes one call, closes. */
export async function callOnce<M extends MethodName>(socket_path: string, method: M, params: ParamsOf<M>, timeout_ms?: number): Promise<ResultOf<M>> {
  const client = await IpcClient.connect(socket_path);
  try {
    return await client.call(method, params, timeout_ms);
  } finally {
    client.close();
  }
}

// NBD transmissions served inside an I/O actor: the NBD frontend's session
// module (actors/session-contract.ts).
//
// The main thread accepts a connection and negotiates it (connection.ts);
// at GO it hands the socket over — a duplicated descriptor and the bytes it
// already read — to engine.hostSession, and the actor that serves the
// export's kind of requests runs the transmission (transmission.ts) over the
// queue the actor gives it:
//
//   socket ─► Transmission ─submit─► handler (gate, copy-before-write, I/O) ─► completion ─► reply ─► socket
//              all in the actor's thread
//
// Why: on the main thread every request crossed two threads and paid two
// wake-ups (request ring, completion ring); the profile of bench/nbd showed
// the main thread saturated at about half of nbdkit's rate while the actor
// idled. Here a batch of requests read from the socket is served and
// answered in one turn of the actor's event loop.
//
// The session owns the socket's descriptor from now on; the main thread
// keeps only a proxy (its connection count, stop, status) and learns the
// end through the promise hostSession returns.

import { closeSync } from 'node:fs';
import net from 'node:net';
import type { LogFields, RunningSession, SessionContext, SessionCounters } from '../../engine/api';
import type { MetaContext } from './meta-context';
import type { NbdLogger } from './logger';
import type { RequestLimits } from './request';
import { Transmission } from './transmission';

/** This module's path, for engine.hostSession. */
export const NBD_SESSION_MODULE = __filename;

/** What the NBD frontend hands a hosted session (SessionDescriptor.payload). */
export interface NbdSessionPayload {
  /** A duplicate of the connected socket's descriptor, for the actor alone: the session closes it. */
  fd: number;
  /** GO's replies: the session writes them before anything else. */
  replies: Uint8Array[];
  /** Bytes the negotiating thread received after GO, in order. */
  early: Uint8Array[];
  /** The server's connection id, for log lines. */
  connection_id: number;
  limits: RequestLimits;
  contexts: MetaContext[];
  /** For change contexts: the frozen CBT map of the target's volume, as it was at GO. */
  change_map: { block_bytes: number; block_count: number; changes_number: number } | null;
  zero_segment_bytes: number;
  write_backlog_bytes_max: number;
}

/** net.Socket takes onread in its constructor too; @types/node lists it only for connect(). */
interface SocketOptionsWithOnread extends net.SocketConstructorOpts {
  onread: { buffer: Buffer | (() => Buffer); callback: (bytes: number, buffer: Buffer) => void };
}

/** A session's socket reads land in one buffer of this size. */
const READ_BUFFER_BYTES = 1024 * 1024;

export function runSession(context: SessionContext, payload: NbdSessionPayload): RunningSession {
  const logger = actorLogger(context);
  const read_buffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  let transmission: Transmission | null = null;
  let socket: net.Socket;
  try {
    const options: SocketOptionsWithOnread = {
      fd: payload.fd, readable: true, writable: true,
      // One buffer for every read: no allocation (and no garbage) per
      // read. The rest of a large WRITE's payload is read straight into
      // its slot (Transmission.directTarget): no copy out of this buffer.
      onread: {
        buffer: () => transmission?.directTarget() ?? read_buffer,
        callback: (bytes, buffer) => {
          if (transmission === null) return;
          if (buffer !== read_buffer) {
            transmission.onDirectData(bytes);
            return;
          }
          transmission.onData(buffer.subarray(0, bytes));
          transmission.releaseInput();
        },
      },
    };
    socket = new net.Socket(options);
  } catch (error) {
    closeSync(payload.fd);
    throw error;
  }
  for (const reply of payload.replies) socket.write(reply);
  const connection = payload.connection_id;
  const live = transmission = new Transmission({
    socket,
    queue: context.queue,
    target_handle: context.target_handle,
    limits: payload.limits,
    contexts: payload.contexts,
    change_map: payload.change_map === null ? null : { ...payload.change_map, read: context.readSnapshotCbt },
    isLive: context.isLive,
    zero_segment_bytes: payload.zero_segment_bytes,
    write_backlog_bytes_max: payload.write_backlog_bytes_max,
    logger,
    host: {
      violation: (reason) => {
        logger.warn({ connection }, `nbd protocol violation: ${reason}`);
        socket.destroy();
      },
      drained: () => { socket.end(() => socket.destroy()); },
    },
  });
  const finished = new Promise<SessionCounters>((resolve) => {
    socket.on('error', (error: Error) => {
      // ECONNRESET, EPIPE: the client vanished. 'close' follows and cleans up.
      logger.debug({ connection, err: error.message }, 'nbd socket error');
    });
    // The client shut its sending side: answer what arrived whole, then end.
    socket.on('end', () => live.endOfInput());
    socket.on('close', () => {
      void live.close().then(() => resolve({ ...live.counters }));
    });
  });
  for (const bytes of payload.early) {
    live.onData(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }
  return { finished, drain: () => live.drain(), close: () => { socket.destroy(); } };
}

/** Log lines go to the main thread's logger: one per event that matters, never per request. */
function actorLogger(context: SessionContext): NbdLogger {
  const at = (level: 'debug' | 'info' | 'warn' | 'error') => (fields: unknown, message?: string): void => {
    context.logger.log(level, plainFields(fields), message ?? '');
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } as NbdLogger;
}

/** Only plain values cross to the main thread (an Error does not clone faithfully). */
function plainFields(fields: unknown): LogFields {
  const plain: LogFields = {};
  if (typeof fields !== 'object' || fields === null) return plain;
  for (const [key, value] of Object.entries(fields)) {
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') plain[key] = value;
    else if (value instanceof Error) plain[key] = value.message;
    else if (Array.isArray(value)) plain[key] = value.map(String);
    else if (value !== undefined) plain[key] = String(value);
  }
  return plain;
}

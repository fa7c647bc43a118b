// NBD transmissions served inside an I/O actor.
//
// The main thread accepts a connection and negotiates it (src/nbd/
// connection.ts); at GO it hands the socket over — a duplicated descriptor
// and the bytes it already read — and the actor that serves the export's
// kind of requests (cow-read for a volume, image-io for an image) runs the
// transmission (src/nbd/transmission.ts, unchanged) over an ActorLocalQueue:
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
// end through the promise hostNbdSession returns.

import { closeSync } from 'node:fs';
import net from 'node:net';
import { handleVolume } from '../shared/request-record';
import { targetIsLive } from '../shared/volume-control';
import type { ChangeMap } from '../nbd/meta-context';
import type { NbdLogger } from '../nbd/logger';
import { Transmission, type TransmissionCounters } from '../nbd/transmission';
import { ActorLocalQueue, type QueueHost } from './local-queue';
import type { ActorLogLevel, NbdSessionDescriptor } from './messages';
import type { ActorRegistry } from './io-actor';

type LogFields = Record<string, string | number | boolean | string[]>;

/** net.Socket takes onread in its constructor too; @types/node lists it only for connect(). */
interface SocketOptionsWithOnread extends net.SocketConstructorOpts {
  onread: { buffer: Buffer | (() => Buffer); callback: (bytes: number, buffer: Buffer) => void };
}

/** A session's socket reads land in one buffer of this size. */
const READ_BUFFER_BYTES = 1024 * 1024;

interface HostedSession {
  socket: net.Socket;
  transmission: Transmission;
}

export class NbdSessions {
  private readonly sessions = new Map<number, HostedSession>();
  private readonly logger: NbdLogger;

  constructor(private readonly queue_host: QueueHost, private readonly registry: ActorRegistry,
    log: (level: ActorLogLevel, fields: LogFields, message: string) => void) {
    this.logger = actorLogger(log);
  }

  get count(): number {
    return this.sessions.size;
  }

  host(descriptor: NbdSessionDescriptor): Promise<TransmissionCounters> {
    const registry = this.registry;
    const volume_index = handleVolume(descriptor.target_handle);
    let socket: net.Socket;
    const read_buffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
    try {
      const options: SocketOptionsWithOnread = {
        fd: descriptor.fd, readable: true, writable: true,
        // One buffer for every read: no allocation (and no garbage) per
        // read. The rest of a large WRITE's payload is read straight into
        // its slot (Transmission.directTarget): no copy out of this buffer.
        onread: {
          buffer: () => this.sessions.get(descriptor.session_id)?.transmission.directTarget() ?? read_buffer,
          callback: (bytes, buffer) => this.received(descriptor.session_id, buffer, bytes, buffer === read_buffer),
        },
      };
      socket = new net.Socket(options);
    } catch (error) {
      closeSync(descriptor.fd);
      return Promise.reject(error);
    }
    for (const reply of descriptor.replies) socket.write(reply);
    const queue = new ActorLocalQueue(descriptor.session_id, descriptor.queue_depth, descriptor.max_io_bytes, this.queue_host);
    const connection = descriptor.connection_id;
    const transmission = new Transmission({
      socket,
      queue,
      target_handle: descriptor.target_handle,
      limits: descriptor.limits,
      contexts: descriptor.contexts,
      change_map: descriptor.change_map === null ? null : changeMapOf(descriptor.change_map, registry, volume_index),
      isLive: () => targetIsLive(registry.volumes[volume_index]?.control, descriptor.target_handle),
      zero_segment_bytes: descriptor.zero_segment_bytes,
      write_backlog_bytes_max: descriptor.write_backlog_bytes_max,
      logger: this.logger,
      host: {
        violation: (reason) => {
          this.logger.warn({ connection }, `nbd protocol violation: ${reason}`);
          socket.destroy();
        },
        drained: () => { socket.end(() => socket.destroy()); },
      },
    });
    this.sessions.set(descriptor.session_id, { socket, transmission });
    return new Promise((resolve) => {
      socket.on('error', (error: Error) => {
        // ECONNRESET, EPIPE: the client vanished. 'close' follows and cleans up.
        this.logger.debug({ connection, err: error.message }, 'nbd socket error');
      });
      // The client shut its sending side: answer what arrived whole, then end.
      socket.on('end', () => transmission.endOfInput());
      socket.on('close', () => {
        void transmission.close().then(() => {
          this.sessions.delete(descriptor.session_id);
          resolve(transmission.counters);
        });
      });
      for (const bytes of descriptor.early) {
        transmission.onData(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      }
    });
  }

  private received(session_id: number, buffer: Buffer, bytes: number, shared: boolean): void {
    const transmission = this.sessions.get(session_id)?.transmission;
    if (transmission === undefined) return;
    if (!shared) {
      transmission.onDirectData(bytes);
      return;
    }
    transmission.onData(buffer.subarray(0, bytes));
    transmission.releaseInput();
  }

  drain(session_id: number): void {
    this.sessions.get(session_id)?.transmission.drain();
  }

  close(session_id: number): void {
    this.sessions.get(session_id)?.socket.destroy();
  }

  closeAll(): void {
    for (const session of this.sessions.values()) session.socket.destroy();
  }
}

/** The frozen CBT map of the target's volume, read from the actor's view of it. */
function changeMapOf(info: NonNullable<NbdSessionDescriptor['change_map']>, registry: ActorRegistry, volume_index: number): ChangeMap {
  return {
    ...info,
    read: (first_block, target) => registry.volumes[volume_index]?.cbt.readSnapshot(first_block, target) ?? 0,
  };
}

/** Log lines go to the main thread's logger: one per event that matters, never per request. */
function actorLogger(log: (level: ActorLogLevel, fields: LogFields, message: string) => void): NbdLogger {
  const at = (level: ActorLogLevel) => (fields: unknown, message?: string): void => {
    log(level, plainFields(fields), message ?? '');
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

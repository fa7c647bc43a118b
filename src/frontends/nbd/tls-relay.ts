// The transmission of a TLS connection: where the encryption runs.
//
// A plain connection's socket moves to the I/O actor at GO (connection.ts,
// session.ts): the actor reads and writes the descriptor itself. A TLS
// session cannot move: its keys and sequence numbers live in the OpenSSL
// state of the thread that did the handshake (Node has no way to carry a
// TLSSocket to another thread). So the main thread keeps the TLSSocket and
// relays plain bytes to the actor over a local socket pair:
//
//   client ══TLS══► TLSSocket (main thread) ◄─plain─► pair[0] ┄┄ pair[1] ◄─► actor: Transmission
//
// The actor's side is unchanged (it gets pair[1] as it would get a TCP
// socket's descriptor), so one transmission implementation serves both.
// The cost: the crypto and one more copy through the kernel run on the main
// thread, which caps TLS throughput at about one core for every TLS client
// together (bench/nbd's TLS rows measure it). Backpressure holds both ways
// (pipe() pauses the side whose destination is full), and both ways the
// end of one side ends the other: a half-close passes as a half-close (the
// actor answers what arrived, then ends), a reset or destroy as a destroy.

import net from 'node:net';
import type tls from 'node:tls';
import { socketPair } from '../../native';

/** After the actor closed its side, replies still queued for the client get this long to leave. */
export const RELAY_FLUSH_TIMEOUT_MS = 5_000;

export interface TlsRelay {
  /** The descriptor for the actor: it owns and closes it. */
  actor_fd: number;
  /** Starts moving bytes; call once the actor has the descriptor. Resolves when both sides closed. */
  start(): Promise<void>;
  /** The hand-over failed: close our end of the pair (the caller closes actor_fd); the TLS session goes on. */
  discard(): void;
}

export function createTlsRelay(secure: tls.TLSSocket): TlsRelay {
  const [local_fd, actor_fd] = socketPair();
  const local = new net.Socket({ fd: local_fd, readable: true, writable: true, allowHalfOpen: true });
  local.pause();
  let started = false;
  const destroy = (): void => {
    local.destroy();
    secure.destroy();
  };
  return {
    actor_fd,
    discard: () => local.destroy(),
    start(): Promise<void> {
      if (started) throw new Error('TlsRelay.start() called twice');
      started = true;
      const closed = Promise.all([
        new Promise<void>((resolve) => local.once('close', () => resolve())),
        new Promise<void>((resolve) => secure.once('close', () => resolve())),
      ]);
      // Errors (ECONNRESET, EPIPE, a bad TLS record) end both sides; 'close' follows.
      local.on('error', destroy);
      secure.on('error', destroy);
      // The actor is done: what it wrote still leaves (end flushes), bounded
      // by a timer against a client that stopped reading.
      local.once('close', () => {
        if (secure.destroyed) return;
        const timer = setTimeout(() => secure.destroy(), RELAY_FLUSH_TIMEOUT_MS);
        secure.once('close', () => clearTimeout(timer));
        secure.end(() => secure.destroy());
      });
      secure.once('close', () => local.destroy());
      secure.pipe(local);
      local.pipe(secure);
      secure.resume();
      local.resume();
      return closed.then(() => undefined);
    },
  };
}

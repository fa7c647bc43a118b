// One client connection: the greeting, the framing of the handshake (client
// flags, option headers, option data), the hand-over of the transmission to
// an I/O actor at GO or EXPORT_NAME, and the end of the connection in every
// way it can end.
//
//   accept ─► greeting ─► CLIENT_FLAGS ─► OPTION_HEADER ⇄ OPTION_DATA / OPTION_DISCARD
//                                              │  ▲
//                         STARTTLS acked       ▼  │ handshake done: haggling restarts inside TLS
//                                        TLS_HANDSHAKE
//                                              │
//                   GO / EXPORT_NAME accepted  ▼
//                        OPENING (socket paused; our queued writes flushed)
//                                              │ engine.hostSession (session.ts)
//                                              ▼
//       HOSTED: the actor owns the socket (a duplicated descriptor), writes
//       the GO replies and runs the transmission (actors/nbd-session.ts);
//       this side only waits for the end ─► CLOSED
//
// The hand-over: once every byte this thread queued is in the kernel, the
// bytes it read past GO are collected, the socket's descriptor is
// duplicated for the actor, and this thread's handle is closed without a
// shutdown, so the connection itself never notices. A refusal by the engine
// (the export vanished, the request rings are full) comes before anything is
// handed over and is answered here, as GO's error reply.
//
// A TLS connection's hand-over differs: its session cannot leave this
// thread, so the actor gets one end of a local socket pair and this thread
// relays between it and the TLSSocket (tls-relay.ts says why and what it
// costs).
//
// Ends: the client closes or vanishes (the transmission waits for the
// engine, then closes the queue); the client half-closes (answer what
// arrived, then end); a violation (hard disconnect: destroy); ABORT (ACK,
// then end); DISC (answer everything, then end); the handshake timeout
// (destroy); the server stopping (handshakes: destroy; transmissions:
// drain at a request boundary, then end, bounded by the stop timeout).

import type { ClientStatus } from '../frontend';
import { closeSync } from 'node:fs';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { ANONYMOUS_IDENTITY, type Access } from './access';
import type { EngineControl, ExportTarget, HostedSession } from '../../engine/api';
import { NBD_SESSION_MODULE, type NbdSessionPayload } from './session';
import { duplicateFd } from '../../native';
import { assert } from '../../shared/assert';
import { isUblksnapError } from '../../shared/errors';
import type { EngineCatalog } from './exports';
import { encodeGreeting, encodeOptionError, parseClientFlags, parseOptionHeader } from './handshake-codec';
import type { NbdLogger } from './logger';
import { Negotiation, NegotiationLimits, NegotiationSecurity, OptionOutcome, clientFlagsProblem } from './negotiation';
import type { ServerSecurity } from './security';
import { serverSocketOptions } from './tls-credentials';
import { createTlsRelay, type TlsRelay } from './tls-relay';
import {
  CLIENT_FLAGS_BYTES, OPTION_HEADER_BYTES, OPT_EXPORT_NAME, OPT_GO, REP_ERR_POLICY, REP_ERR_SHUTDOWN, REP_ERR_TOO_BIG,
  optionName,
} from './protocol';

/** Everything a connection needs from its server, resolved once. */
export interface ConnectionSettings {
  handshake_timeout_ms: number;
  /** Option data larger than this is dropped and answered REP_ERR_TOO_BIG. */
  option_bytes_max: number;
  negotiation: NegotiationLimits;
  queue_depth: number;
  max_io_bytes: number;
  /** WRITE payloads above this are a denial of service: hard disconnect. */
  discard_bytes_max: number;
  zero_segment_bytes: number;
  write_backlog_bytes_max: number;
  /** How long a stopping server lets a connection finish its requests. */
  stop_drain_timeout_ms: number;
}

export interface ConnectionContext {
  id: number;
  peer: string;
  engine: EngineControl;
  catalog: EngineCatalog;
  settings: ConnectionSettings;
  logger: NbdLogger;
  security: ServerSecurity;
  /**
   * Unix-socket clients are the daemon's own user (the socket is 0600): TLS
   * is offered but never required of them, and the authorisation rules,
   * which name remote identities, do not apply to them in plain text.
   */
  transport: 'unix' | 'tcp';
  shuttingDown(): boolean;
}

/** One connection as `status` shows it (the frontends' contract). */
export type ConnectionStatus = ClientStatus;

const enum Phase {
  CLIENT_FLAGS,
  OPTION_HEADER,
  OPTION_DATA,
  OPTION_DISCARD,
  /** STARTTLS acked: the TLS handshake runs; no option is read until it is done. */
  TLS_HANDSHAKE,
  /** GO / EXPORT_NAME accepted, the hand-over under way: input waits in `early`. */
  OPENING,
  /** An I/O actor serves the transmission. */
  HOSTED,
  CLOSED,
}

export class Connection {
  readonly closed: Promise<void>;
  private resolve_closed: (() => void) | null = null;
  private phase = Phase.CLIENT_FLAGS;
  private stage: Buffer = Buffer.alloc(CLIENT_FLAGS_BYTES);
  private stage_filled = 0;
  private discard_remaining = 0;
  private option = 0;
  private negotiation: Negotiation<ExportTarget> | null = null;
  private hosted: HostedSession | null = null;
  private handshake_timer: NodeJS.Timeout | null = null;
  private stop_timer: NodeJS.Timeout | null = null;
  private export_name = '';
  /** Bytes that arrived during the hand-over (a client that did not wait for GO's reply). */
  private readonly early: Buffer[] = [];
  private opening: Promise<void> | null = null;

  /** The TLS session once STARTTLS succeeded (this.socket is then the same object). */
  private secure: tls.TLSSocket | null = null;
  private tls_active = false;
  private identity = ANONYMOUS_IDENTITY;
  private read_only = false;
  private relay: TlsRelay | null = null;
  private readonly negotiation_security: NegotiationSecurity;

  constructor(private socket: Socket, private readonly context: ConnectionContext) {
    this.closed = new Promise((resolve) => { this.resolve_closed = resolve; });
    const local = context.transport === 'unix';
    this.negotiation_security = {
      tls_mode: local && context.security.tls_mode === 'require' ? 'allow' : context.security.tls_mode,
      tls_active: () => this.tls_active,
      accessOf: (export_name, listing) => this.accessOf(export_name, listing),
    };
  }

  get in_transmission(): boolean {
    return this.hosted !== null;
  }

  /** The export this connection is bound to, or null before its handshake ends. */
  get bound_export(): string | null {
    return this.hosted !== null ? this.export_name : null;
  }

  get id(): number {
    return this.context.id;
  }

  get peer(): string {
    return this.context.peer;
  }

  status(): ConnectionStatus {
    return {
      id: this.context.id,
      peer: this.context.peer,
      tls: this.tls_active,
      identity: this.identity,
      export: this.hosted !== null ? this.export_name : null,
      read_only: this.read_only,
    };
  }

  start(): void {
    this.listen(this.socket);
    this.handshake_timer = setTimeout(() => {
      this.context.logger.warn({ connection: this.context.id, peer: this.context.peer },
        `nbd handshake not finished within ${this.context.settings.handshake_timeout_ms} ms: disconnecting`);
      this.socket.destroy();
    }, this.context.settings.handshake_timeout_ms);
    this.socket.write(encodeGreeting());
  }

  private listen(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error: Error) => {
      // ECONNRESET, EPIPE, a bad TLS record: the client vanished or broke the session. 'close' follows and cleans up.
      const level = this.phase === Phase.TLS_HANDSHAKE ? 'warn' : 'debug';
      this.context.logger[level]({ connection: this.context.id, peer: this.context.peer, err: error.message },
        this.phase === Phase.TLS_HANDSHAKE ? 'nbd TLS handshake failed' : 'nbd socket error');
    });
    socket.on('end', () => this.onEnd());
    socket.on('close', () => this.onClose());
  }

  private accessOf(export_name: string, listing: boolean): Access {
    if (this.context.transport === 'unix' && !this.tls_active) return 'read-write';
    const access = this.context.security.access.accessOf(this.identity, export_name);
    if (access === 'none' && !listing) {
      this.context.security.noteRefusal(this.context.peer, this.identity, export_name, this.tls_active);
    }
    return access;
  }

  /** Server stop: end handshakes now; let transmissions finish in-flight requests first. */
  shutdown(): void {
    if (this.phase === Phase.CLOSED) return;
    const hosted = this.hosted;
    if (hosted === null) {
      this.socket.destroy();
      return;
    }
    this.stop_timer = setTimeout(() => {
      this.context.logger.warn({ connection: this.context.id },
        `nbd connection did not drain within ${this.context.settings.stop_drain_timeout_ms} ms: disconnecting`);
      hosted.close();
    }, this.context.settings.stop_drain_timeout_ms);
    hosted.drain();
  }

  private onData(chunk: Buffer): void {
    let position = 0;
    while (position < chunk.length && this.phase < Phase.OPENING) {
      if (this.phase === Phase.TLS_HANDSHAKE) {
        this.violation('data after STARTTLS before its reply: a client must wait for the ACK before the TLS handshake');
        return;
      }
      if (this.phase === Phase.OPTION_DISCARD) {
        const count = Math.min(this.discard_remaining, chunk.length - position);
        this.discard_remaining -= count;
        position += count;
        if (this.discard_remaining === 0) this.optionTooBig();
        continue;
      }
      const count = Math.min(this.stage.length - this.stage_filled, chunk.length - position);
      chunk.copy(this.stage, this.stage_filled, position, position + count);
      this.stage_filled += count;
      position += count;
      if (this.stage_filled === this.stage.length) this.stageComplete();
    }
    if (position === chunk.length) return;
    if (this.phase === Phase.OPENING) this.early.push(chunk.subarray(position));
  }

  private expect(phase: Phase, bytes: number): void {
    this.phase = phase;
    this.stage = Buffer.alloc(bytes);
    this.stage_filled = 0;
  }

  private stageComplete(): void {
    switch (this.phase) {
      case Phase.CLIENT_FLAGS: {
        const flags = parseClientFlags(this.stage);
        const problem = clientFlagsProblem(flags);
        if (problem !== null) {
          this.violation(problem);
          return;
        }
        this.negotiation = new Negotiation(flags, this.context.catalog, this.context.settings.negotiation, this.negotiation_security);
        this.expect(Phase.OPTION_HEADER, OPTION_HEADER_BYTES);
        return;
      }
      case Phase.OPTION_HEADER: {
        const header = parseOptionHeader(this.stage);
        if (!header.magic_ok) {
          this.violation('option magic is not IHAVEOPT');
          return;
        }
        this.option = header.option;
        if (header.length > this.context.settings.option_bytes_max) {
          if (header.option === OPT_EXPORT_NAME) {
            this.violation(`EXPORT_NAME of ${header.length} bytes`);
            return;
          }
          this.phase = Phase.OPTION_DISCARD;
          this.discard_remaining = header.length;
          return;
        }
        if (header.length === 0) {
          this.runOption(Buffer.alloc(0));
          return;
        }
        this.expect(Phase.OPTION_DATA, header.length);
        return;
      }
      case Phase.OPTION_DATA:
        this.runOption(this.stage);
        return;
      default:
        assert(false, `stage complete in phase ${this.phase}`);
    }
  }

  private optionTooBig(): void {
    this.socket.write(encodeOptionError(this.option, REP_ERR_TOO_BIG,
      `option data above ${this.context.settings.option_bytes_max} bytes`));
    this.expect(Phase.OPTION_HEADER, OPTION_HEADER_BYTES);
  }

  private runOption(data: Buffer): void {
    const negotiation = this.negotiation!;
    const outcome = negotiation.handle(this.option, data, this.context.shuttingDown());
    switch (outcome.kind) {
      case 'continue':
        for (const reply of outcome.replies) this.socket.write(reply);
        this.expect(Phase.OPTION_HEADER, OPTION_HEADER_BYTES);
        return;
      case 'abort':
        for (const reply of outcome.replies) this.socket.write(reply);
        this.phase = Phase.CLOSED;
        this.socket.end();
        return;
      case 'disconnect':
        this.violation(outcome.reason);
        return;
      case 'starttls':
        for (const reply of outcome.replies) this.socket.write(reply);
        this.startTls();
        return;
      case 'transmission':
        this.phase = Phase.OPENING;
        this.socket.pause();
        this.opening = this.enterTransmission(outcome);
        return;
    }
  }

  /**
   * STARTTLS was acked: the client's next bytes are its ClientHello. The
   * plain socket's listeners go, the TLSSocket takes the stream over, and
   * haggling starts again on it once the handshake is done. Bytes the
   * client sent after STARTTLS without waiting for the ACK cannot be TLS:
   * onData treats them as a violation (the phase is not a reading one).
   */
  private startTls(): void {
    const credentials = this.context.security.credentials();
    assert(credentials !== null, 'STARTTLS acked without TLS credentials');
    this.phase = Phase.TLS_HANDSHAKE;
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('end');
    plain.removeAllListeners('close');
    plain.removeAllListeners('error');
    // The TLSSocket reports errors from here on; the plain one's would be duplicates.
    plain.on('error', () => undefined);
    let psk_identity: string | null = null;
    const options = serverSocketOptions(credentials, (identity) => { psk_identity = identity; });
    const secure = new tls.TLSSocket(plain, { ...options, allowHalfOpen: true } as tls.TLSSocketOptions);
    this.secure = secure;
    this.socket = secure;
    this.listen(secure);
    secure.once('secure', () => {
      if (this.phase !== Phase.TLS_HANDSHAKE) return;
      // A PSK session proved its user; a certificate session is checked here.
      const refused = psk_identity === null && credentials.verify_peer ? certificateProblem(secure) : null;
      if (refused !== null) {
        this.context.logger.warn({ connection: this.context.id, peer: this.context.peer, reason: refused },
          'nbd TLS client certificate refused');
        this.phase = Phase.CLOSED;
        secure.destroy();
        return;
      }
      this.tls_active = true;
      this.identity = psk_identity ?? (credentials.verify_peer ? certificateIdentity(secure) : null) ?? ANONYMOUS_IDENTITY;
      this.context.logger.info({
        connection: this.context.id, peer: this.context.peer, identity: this.identity,
        protocol: secure.getProtocol(), cipher: secure.getCipher().name,
      }, 'nbd TLS session started');
      this.expect(Phase.OPTION_HEADER, OPTION_HEADER_BYTES);
    });
  }

  private async enterTransmission(outcome: Extract<OptionOutcome<ExportTarget>, { kind: 'transmission' }>): Promise<void> {
    // Every byte this thread queued (earlier option replies) reaches the
    // kernel before the actor writes anything: the stream stays in order.
    await new Promise<void>((resolve) => { this.socket.write(EMPTY, () => resolve()); });
    if (this.phase !== Phase.OPENING) return;
    const settings = this.context.settings;
    const target = outcome.export.target;
    const needs_changes = outcome.contexts.some((context) => context.kind === 'changed');
    let fd = -1;
    let hosted: HostedSession;
    this.takeBufferedInput();
    try {
      const change_map = needs_changes ? this.context.catalog.changeMapOf(target) : null;
      if (this.secure !== null) {
        this.relay = createTlsRelay(this.secure);
        fd = this.relay.actor_fd;
      } else {
        fd = duplicateFd(socketFd(this.socket));
      }
      const payload: NbdSessionPayload = {
        fd,
        early: this.early,
        replies: outcome.replies,
        connection_id: this.context.id,
        limits: {
          size_bytes: target.size_bytes,
          // A read-only grant (access.ts) clears it even for a writable target.
          writable: outcome.export.writable,
          structured: outcome.structured,
          minimum_block_bytes: outcome.export.block_sizes.minimum_bytes,
          maximum_payload_bytes: outcome.export.block_sizes.maximum_bytes,
          discard_bytes_max: settings.discard_bytes_max,
          contexts_count: outcome.contexts.length,
        },
        contexts: outcome.contexts,
        change_map,
        zero_segment_bytes: settings.zero_segment_bytes,
        write_backlog_bytes_max: settings.write_backlog_bytes_max,
      };
      hosted = this.context.engine.hostSession({
        module: NBD_SESSION_MODULE,
        frontend: 'nbd',
        target_handle: target.handle,
        queue_depth: settings.queue_depth,
        max_io_bytes: settings.max_io_bytes,
        payload,
      });
    } catch (error) {
      // The volume went away, the engine is stopping, or every request-ring
      // slot is taken by other queues: GO can say so, EXPORT_NAME cannot.
      if (fd >= 0) closeSync(fd);
      this.relay?.discard();
      this.relay = null;
      this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
      this.refuseBinding(error);
      return;
    }
    this.hosted = hosted;
    this.phase = Phase.HOSTED;
    this.export_name = outcome.export.name;
    this.read_only = !outcome.export.writable;
    if (this.handshake_timer !== null) clearTimeout(this.handshake_timer);
    this.handshake_timer = null;
    this.early.length = 0;
    this.releaseSocket();
    this.context.logger.info({
      connection: this.context.id, peer: this.context.peer, export: this.export_name,
      tls: this.tls_active, identity: this.identity, read_only: this.read_only,
      option: optionName(this.option), structured: outcome.structured,
      contexts: outcome.contexts.map((context) => context.name), flags: outcome.transmission_flags,
    }, 'nbd export bound');
  }

  /**
   * Moves the bytes the paused stream read past GO into `early`. The
   * 'data' listener goes first: read() would hand them to it a second time.
   */
  private takeBufferedInput(): void {
    this.socket.removeAllListeners('data');
    for (let chunk: Buffer | null; (chunk = this.socket.read() as Buffer | null) !== null;) this.early.push(chunk);
  }

  /** The actor owns the connection: close this thread's handle without ending the stream. */
  private releaseSocket(): void {
    const socket = this.socket;
    socket.removeAllListeners('end');
    socket.removeAllListeners('close');
    socket.removeAllListeners('error');
    socket.on('error', () => undefined);
    if (this.relay !== null) void this.relay.start();
    else socket.destroy();
    void this.awaitHosted(this.hosted!);
  }

  /** The hosted session ended (client gone, DISC, violation, server stop). */
  private async awaitHosted(hosted: HostedSession): Promise<void> {
    try {
      const counters = await hosted.finished;
      this.context.logger.info({ connection: this.context.id, export: this.export_name, ...counters }, 'nbd connection closed');
    } catch (error) {
      this.context.logger.error({ connection: this.context.id, err: error }, 'nbd: the actor serving the connection failed');
    }
    this.onClose();
  }

  private refuseBinding(error: unknown): void {
    if (this.phase === Phase.CLOSED) return;
    const message = `cannot serve the export: ${(error as Error).message}`;
    if (!isUblksnapError(error)) this.context.logger.error({ err: error }, `nbd: ${message}`);
    if (this.option !== OPT_GO) {
      this.violation(message);
      return;
    }
    const reply_type = isUblksnapError(error) && error.code === 'ESHUTDOWN' ? REP_ERR_SHUTDOWN : REP_ERR_POLICY;
    this.socket.write(encodeOptionError(OPT_GO, reply_type, message));
    this.expect(Phase.OPTION_HEADER, OPTION_HEADER_BYTES);
    this.socket.resume();
    for (const chunk of this.early.splice(0)) this.onData(chunk);
  }

  /** A broken rule that loses the stream (or a denial of service): hard disconnect. */
  private violation(reason: string): void {
    if (this.phase === Phase.CLOSED) return;
    this.context.logger.warn({ connection: this.context.id, peer: this.context.peer }, `nbd protocol violation: ${reason}`);
    this.phase = Phase.CLOSED;
    this.socket.destroy();
  }

  /**
   * The client shut its sending side (the server listens half-open). In
   * transmission that is a DISC without the message: what arrived is
   * answered, then we close. In the handshake the client gave up.
   */
  private onEnd(): void {
    if (this.phase !== Phase.CLOSED && this.phase !== Phase.OPENING) this.socket.destroy();
    else if (this.phase === Phase.CLOSED) this.socket.end();
  }

  private onClose(): void {
    this.phase = Phase.CLOSED;
    if (this.handshake_timer !== null) clearTimeout(this.handshake_timer);
    if (this.stop_timer !== null) clearTimeout(this.stop_timer);
    this.handshake_timer = null;
    this.stop_timer = null;
    this.early.length = 0;
    // A hand-over under way finishes first; a hosted session calls here once it ended.
    if (this.hosted === null && this.opening !== null) {
      void this.opening.then(() => { if (this.hosted === null) this.resolve_closed?.(); });
      return;
    }
    this.resolve_closed?.();
  }
}

/** A zero-length write: its callback runs once everything queued before it is written. */
const EMPTY = Buffer.alloc(0);

/**
 * Why the client's certificate is not acceptable (OpenSSL's verify code),
 * or null when the CA vouches for it. Node checks this itself only for
 * sockets a tls.Server accepted (its onServerSocketSecure reads the same
 * handle's verifyError()); a TLSSocket made over an existing socket, as
 * STARTTLS needs, must do it here, or any certificate would pass.
 */
function certificateProblem(secure: tls.TLSSocket): string | null {
  const handle = (secure as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null } })._handle;
  assert(typeof handle?.verifyError === 'function', 'the TLS socket has no verifyError to check the client certificate');
  const error = handle.verifyError();
  if (error !== null && error !== undefined) return error.code ?? error.message;
  if (Object.keys(secure.getPeerCertificate()).length === 0) return 'no client certificate';
  return null;
}

/** The subject's CN of the client certificate (verified before this is asked); null without one. */
function certificateIdentity(secure: tls.TLSSocket): string | null {
  const subject = secure.getPeerCertificate().subject as Record<string, string | string[]> | undefined;
  const common_name = subject?.CN;
  if (typeof common_name === 'string' && common_name !== '') return common_name;
  return null;
}

/** The descriptor under a connected socket (libuv's handle exposes it on Unix). */
function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  assert(typeof fd === 'number' && fd >= 0, 'the socket has no file descriptor to hand over');
  return fd;
}

// One client connection: the greeting, the framing of the handshake (client
// flags, option headers, option data), the hand-over to transmission at GO
// or EXPORT_NAME, and the end of the connection in every way it can end.
//
//   accept ─► greeting ─► CLIENT_FLAGS ─► OPTION_HEADER ⇄ OPTION_DATA / OPTION_DISCARD
//                                              │
//                   GO / EXPORT_NAME accepted  ▼
//                        OPENING (the IoQueue opens; input waits, socket paused)
//                                              │ replies sent
//                                              ▼
//                                         TRANSMISSION (transmission.ts) ─► CLOSED
//
// Ends: the client closes or vanishes (the transmission waits for the
// engine, then closes the queue); the client half-closes (answer what
// arrived, then end); a violation (hard disconnect: destroy); ABORT (ACK,
// then end); DISC (answer everything, then end); the handshake timeout
// (destroy); the server stopping (handshakes: destroy; transmissions:
// drain at a request boundary, then end, bounded by the stop timeout).

import type { Socket } from 'node:net';
import type { EngineControl, ExportTarget, IoQueue } from '../engine/api';
import { assert } from '../shared/assert';
import { isUblksnapError } from '../shared/errors';
import type { EngineCatalog } from './exports';
import { encodeGreeting, encodeOptionError, parseClientFlags, parseOptionHeader } from './handshake-codec';
import type { NbdLogger } from './logger';
import type { ChangeMap } from './meta-context';
import { Negotiation, NegotiationLimits, OptionOutcome, clientFlagsProblem } from './negotiation';
import {
  CLIENT_FLAGS_BYTES, OPTION_HEADER_BYTES, OPT_EXPORT_NAME, OPT_GO, REP_ERR_POLICY, REP_ERR_SHUTDOWN, REP_ERR_TOO_BIG,
  optionName,
} from './protocol';
import { Transmission } from './transmission';

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
  shuttingDown(): boolean;
}

const enum Phase {
  CLIENT_FLAGS,
  OPTION_HEADER,
  OPTION_DATA,
  OPTION_DISCARD,
  /** GO / EXPORT_NAME accepted, the IoQueue opening: input waits in `early`. */
  OPENING,
  TRANSMISSION,
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
  private transmission: Transmission | null = null;
  private handshake_timer: NodeJS.Timeout | null = null;
  private stop_timer: NodeJS.Timeout | null = null;
  private export_name = '';
  /** Bytes that arrived while the queue was opening (a client that did not wait for GO's reply). */
  private readonly early: Buffer[] = [];
  private opening: Promise<void> | null = null;

  constructor(private readonly socket: Socket, private readonly context: ConnectionContext) {
    this.closed = new Promise((resolve) => { this.resolve_closed = resolve; });
  }

  get in_transmission(): boolean {
    return this.transmission !== null;
  }

  start(): void {
    const socket = this.socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error: Error) => {
      // ECONNRESET, EPIPE: the client vanished. 'close' follows and cleans up.
      this.context.logger.debug({ connection: this.context.id, err: error.message }, 'nbd socket error');
    });
    socket.on('end', () => this.onEnd());
    socket.on('close', () => this.onClose());
    this.handshake_timer = setTimeout(() => {
      this.context.logger.warn({ connection: this.context.id, peer: this.context.peer },
        `nbd handshake not finished within ${this.context.settings.handshake_timeout_ms} ms: disconnecting`);
      socket.destroy();
    }, this.context.settings.handshake_timeout_ms);
    socket.write(encodeGreeting());
  }

  /** Server stop: end handshakes now; let transmissions finish in-flight requests first. */
  shutdown(): void {
    if (this.phase === Phase.CLOSED) return;
    if (this.transmission === null) {
      this.socket.destroy();
      return;
    }
    this.stop_timer = setTimeout(() => {
      this.context.logger.warn({ connection: this.context.id },
        `nbd connection did not drain within ${this.context.settings.stop_drain_timeout_ms} ms: disconnecting`);
      this.socket.destroy();
    }, this.context.settings.stop_drain_timeout_ms);
    this.transmission.drain();
  }

  private onData(chunk: Buffer): void {
    let position = 0;
    while (position < chunk.length && this.phase < Phase.OPENING) {
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
    if (this.phase === Phase.TRANSMISSION) this.transmission!.onData(chunk, position);
    else if (this.phase === Phase.OPENING) this.early.push(chunk.subarray(position));
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
        this.negotiation = new Negotiation(flags, this.context.catalog, this.context.settings.negotiation);
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
      case 'transmission':
        this.phase = Phase.OPENING;
        this.socket.pause();
        this.opening = this.enterTransmission(outcome);
        return;
    }
  }

  private async enterTransmission(outcome: Extract<OptionOutcome<ExportTarget>, { kind: 'transmission' }>): Promise<void> {
    const settings = this.context.settings;
    const target = outcome.export.target;
    const needs_changes = outcome.contexts.some((context) => context.kind === 'changed');
    let change_map: ChangeMap | null = null;
    let queue: IoQueue;
    try {
      if (needs_changes) change_map = this.context.catalog.changeMapOf(target);
      queue = await this.context.engine.openQueue({ depth: settings.queue_depth, max_io_bytes: settings.max_io_bytes });
    } catch (error) {
      // The volume went away, the engine is stopping, or every request-ring
      // slot is taken by other queues: GO can say so, EXPORT_NAME cannot.
      this.refuseBinding(error);
      return;
    }
    if (this.phase === Phase.CLOSED) {
      // The client left while the queue opened.
      await queue.close();
      return;
    }
    for (const reply of outcome.replies) this.socket.write(reply);
    if (this.handshake_timer !== null) clearTimeout(this.handshake_timer);
    this.handshake_timer = null;
    this.phase = Phase.TRANSMISSION;
    this.export_name = outcome.export.name;
    const engine = this.context.engine;
    this.transmission = new Transmission({
      socket: this.socket,
      queue,
      target_handle: target.handle,
      limits: {
        size_bytes: target.size_bytes,
        writable: target.writable,
        structured: outcome.structured,
        minimum_block_bytes: outcome.export.block_sizes.minimum_bytes,
        maximum_payload_bytes: outcome.export.block_sizes.maximum_bytes,
        discard_bytes_max: settings.discard_bytes_max,
        contexts_count: outcome.contexts.length,
      },
      contexts: outcome.contexts,
      change_map,
      isLive: () => engine.isLive(target.handle),
      zero_segment_bytes: settings.zero_segment_bytes,
      write_backlog_bytes_max: settings.write_backlog_bytes_max,
      logger: this.context.logger,
      host: {
        violation: (reason) => this.violation(reason),
        drained: () => this.drained(),
      },
    });
    this.socket.resume();
    for (const chunk of this.early.splice(0)) this.transmission.onData(chunk);
    this.context.logger.info({
      connection: this.context.id, peer: this.context.peer, export: this.export_name,
      option: optionName(this.option), structured: outcome.structured,
      contexts: outcome.contexts.map((context) => context.name), flags: outcome.transmission_flags,
    }, 'nbd export bound');
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

  /** DISC answered everything, or a stopping server's connection finished: flush what is queued, then close. */
  private drained(): void {
    this.socket.end(() => this.socket.destroy());
  }

  /**
   * The client shut its sending side (the server listens half-open). In
   * transmission that is a DISC without the message: what arrived is
   * answered, then we close. In the handshake the client gave up.
   */
  private onEnd(): void {
    if (this.transmission !== null && this.phase === Phase.TRANSMISSION) {
      this.transmission.endOfInput();
      return;
    }
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
    void this.release().then(() => this.resolve_closed?.());
  }

  /** After close: wait for a queue being opened, then for the transmission to give back every tag. */
  private async release(): Promise<void> {
    if (this.opening !== null) await this.opening;
    const transmission = this.transmission;
    if (transmission === null) return;
    await transmission.close();
    this.context.logger.info({ connection: this.context.id, export: this.export_name, ...transmission.counters },
      'nbd connection closed');
  }
}

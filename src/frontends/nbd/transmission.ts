// The transmission phase of one connection: requests in, engine I/O through
// the connection's IoQueue, replies out. The connection hands every byte it
// receives after GO to onData(); the rest happens here.
//
// Design notes
//
// - Input is a small state machine over the received chunks (HEADER →
//   PAYLOAD / SUBMIT / STATUS / DISCARD → HEADER). A request is checked
//   (request.ts) before any of its payload is buffered; a rejected WRITE's
//   payload is read and dropped, then the error is sent.
// - Every request holds tags of the IoQueue (tags.ts): a READ or WRITE is cut
//   into segments of one slot (max_io_bytes); a TRIM or WRITE_ZEROES into
//   zero segments. The advertised maximum block is at most depth × slot, so
//   one request's segments always fit the queue at once: the dispatcher,
//   which handles one request at a time, can always finish submitting it.
// - No free tag, or too many reply bytes waiting in the socket: the socket is
//   paused (TCP back-pressure reaches the client) and input resumes when a
//   tag is released or the socket drains. Memory per connection is bounded
//   by depth × slot, whatever the client sends.
// - A READ's reply is written when all its segments completed: header, then
//   each slot, in one corked batch, so no other reply interleaves. A slot
//   is released only in its socket write's callback.
// - WRITE, TRIM, WRITE_ZEROES and FLUSH get a simple reply on success (proto.md
//   allows it for replies without payload even with structured replies) and
//   an error chunk with a message on failure when structured replies are on.
// - Closing (client gone, violation, DISC, server stop): input stops; tags
//   in the engine are waited for; their completions and write callbacks
//   release them; when every tag is free the IoQueue is closed.

import type { Socket } from 'node:net';
import { IoFlags, IoOp, IoQueue } from '../../engine/api';
import { assert } from '../../shared/assert';
import { codeOfErrno } from '../../shared/errors';
import { writeBlockStatusReply } from './block-status';
import type { NbdLogger } from './logger';
import type { ChangeMap, MetaContext } from './meta-context';
import {
  CMD_BLOCK_STATUS, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_REQ_ONE, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE,
  CMD_WRITE_ZEROES, NBD_EIO, NBD_ESHUTDOWN, REPLY_FLAG_DONE, commandName, nbdErrorOf,
} from './protocol';
import { HANDLE_BYTES, encodeErrorReply, writeNoneChunk, writeOffsetDataHeader, writeSimpleReply } from './reply-codec';
import {
  Problem, REQUEST_HANDLE_POSITION, REQUEST_HEADER_BYTES, RequestLimits, Verdict, checkRequest, describeProblem,
  errorOf, newRequestHeader, parseRequestHeader, verdictOf,
} from './request';
import { InputQueue } from './input-queue';
import { TAG_HEADER_BYTES, TagState, TagTable } from './tags';

/** A payload remainder smaller than this is not worth a read of its own: it comes with the next header. */
const DIRECT_READ_BYTES_MIN = 64 * 1024;

/** CBT map bytes read per BLOCK_STATUS: 65 536 tracking blocks, ≥ 4 GiB at the smallest block. */
export const CBT_SCRATCH_BLOCKS = 65_536;

const enum Input {
  HEADER,
  PAYLOAD,
  SUBMIT,
  STATUS,
  DISCARD,
  /** DISC received, or the server is stopping: input is dropped, in-flight requests finish. */
  DRAIN,
  CLOSED,
}

const enum Blocked {
  NONE,
  TAG,
  DRAIN,
}

/** What the transmission asks of its connection. */
export interface TransmissionHost {
  /** A violation that loses the stream: hard disconnect. */
  violation(reason: string): void;
  /** Draining (DISC or stop) finished: every request answered. */
  drained(): void;
}

export interface TransmissionConfig {
  socket: Socket;
  queue: IoQueue;
  target_handle: number;
  limits: RequestLimits;
  contexts: MetaContext[];
  change_map: ChangeMap | null;
  /** False once the export is gone (an image after destroy): requests get EIO. */
  isLive: () => boolean;
  /** TRIM and WRITE_ZEROES are cut into segments of at most this. */
  zero_segment_bytes: number;
  /** Stop reading requests while more reply bytes than this wait in the socket. */
  write_backlog_bytes_max: number;
  logger: NbdLogger;
  host: TransmissionHost;
}

export interface TransmissionCounters {
  requests: number;
  errors: number;
  bytes_read: number;
  bytes_written: number;
  /** WRITE payload bytes the host read straight into their slots (directTarget). */
  bytes_direct: number;
}

export class Transmission {
  readonly counters: TransmissionCounters = { requests: 0, errors: 0, bytes_read: 0, bytes_written: 0, bytes_direct: 0 };
  private readonly socket: Socket;
  private readonly queue: IoQueue;
  private readonly tags: TagTable;
  private readonly slots: Buffer[];
  private readonly slot_bytes: number;
  /** Per-tag socket write callbacks, made once. */
  private readonly write_done: ((error?: Error | null) => void)[] = [];
  private readonly header_bytes = Buffer.alloc(REQUEST_HEADER_BYTES);
  private header_filled = 0;
  private readonly header = newRequestHeader();
  private readonly scratch: Uint8Array;

  private input = Input.HEADER;
  private blocked = Blocked.NONE;
  private readonly pending = new InputQueue();
  private pumping = false;
  private pump_again = false;
  private input_paused = false;
  private drain_armed = false;
  private corked = false;

  // The request being dispatched (one at a time).
  private current_lead = -1;
  private current_op: IoOp = IoOp.READ;
  private current_io_flags = 0;
  private current_segment_bytes = 0;
  private current_next_offset = 0;
  private current_fill_tag = -1;
  private current_fill_bytes = 0;

  private discard_remaining = 0;
  private discard_error = 0;
  private discard_message = '';

  private closed = false;
  /** drain() was called: enter DRAIN at the next request boundary. */
  private draining = false;
  private drain_reported = false;
  private queue_closed: Promise<void> | null = null;
  private resolve_finished: (() => void) | null = null;
  readonly finished: Promise<void>;

  constructor(private readonly config: TransmissionConfig) {
    this.socket = config.socket;
    this.queue = config.queue;
    this.slot_bytes = config.queue.max_io_bytes;
    this.tags = new TagTable(config.queue.depth);
    assert(config.limits.maximum_payload_bytes <= config.queue.depth * this.slot_bytes,
      'the maximum block must fit the queue: depth × max_io_bytes');
    this.slots = this.tags.bindSlots((tag) => config.queue.buffer(tag), this.slot_bytes);
    for (let tag = 0; tag < this.tags.depth; tag += 1) this.write_done.push(() => this.afterWrite(tag));
    this.scratch = config.change_map !== null ? new Uint8Array(CBT_SCRATCH_BLOCKS) : new Uint8Array(0);
    this.finished = new Promise((resolve) => { this.resolve_finished = resolve; });
    config.queue.onComplete((tag, errno) => this.complete(tag, errno));
  }

  get in_flight(): number {
    return this.tags.in_use_count;
  }

  /**
   * Where the next bytes from the socket may land directly: the rest of the
   * slot a WRITE's payload is filling, when nothing else waits before them.
   * A host that reads the socket itself (actors/nbd-session.ts) reads into
   * it and calls onDirectData, saving the copy out of its own buffer; null
   * means read into the host's buffer and call onData.
   */
  directTarget(): Buffer | null {
    const tag = this.current_fill_tag;
    if (tag < 0 || this.closed || this.input !== Input.PAYLOAD || !this.pending.empty) return null;
    const want = this.tags.segment_bytes[tag]! - this.current_fill_bytes;
    if (want < DIRECT_READ_BYTES_MIN) return null;
    return this.slots[tag]!.subarray(this.current_fill_bytes, this.current_fill_bytes + want);
  }

  /** `bytes` arrived in the buffer directTarget() returned. */
  onDirectData(bytes: number): void {
    if (this.closed || this.input !== Input.PAYLOAD || this.current_fill_tag < 0) return;
    this.current_fill_bytes += bytes;
    this.counters.bytes_direct += bytes;
    this.pump();
  }

  /** Bytes received from the socket, in order. */
  onData(chunk: Buffer, start = 0): void {
    if (this.closed || this.input === Input.DRAIN) return;
    this.pending.push(chunk, start);
    this.pump();
  }

  /**
   * The caller will overwrite the chunks it passed to onData (a socket
   * reading into one reused buffer): keep a copy of what is not consumed.
   */
  releaseInput(): void {
    if (!this.pending.empty) this.pending.detach();
  }

  /**
   * Stop taking requests, finish those in flight, then tell the host
   * (server stop). A request whose header or payload is arriving is taken
   * in whole first: draining starts at the next request boundary.
   */
  drain(): void {
    if (this.closed || this.input === Input.DRAIN) return;
    this.draining = true;
    this.pump();
  }

  /** No more bytes will come (the client half-closed): answer what arrived whole, then drain. */
  endOfInput(): void {
    if (this.closed || this.input === Input.DRAIN) return;
    this.enterDrain();
  }

  /** The socket is gone (or is being destroyed): release everything once the engine is done. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.input = Input.CLOSED;
      this.pending.clear();
      this.abandonCurrent();
      this.checkIdle();
    }
    return this.finished;
  }

  // ── input ──────────────────────────────────────────────────────────────

  private pump(): void {
    if (this.pumping) {
      this.pump_again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pump_again = false;
        this.blocked = Blocked.NONE;
        this.step();
      } while (this.pump_again && !this.closed);
    } finally {
      this.pumping = false;
    }
    this.updateFlow();
  }

  /** Runs input states until one cannot progress (no bytes, or blocked). */
  private step(): void {
    for (;;) {
      let progressed: boolean;
      switch (this.input) {
        case Input.HEADER:
          if (this.draining && this.header_filled === 0) {
            this.enterDrain();
            return;
          }
          progressed = this.readHeader();
          break;
        case Input.PAYLOAD: progressed = this.readPayload(); break;
        case Input.SUBMIT: progressed = this.submitSegments(); break;
        case Input.STATUS: progressed = this.blockStatus(); break;
        case Input.DISCARD: progressed = this.discardPayload(); break;
        case Input.DRAIN:
          this.pending.clear();
          return;
        case Input.CLOSED: return;
      }
      if (!progressed) return;
    }
  }

  private updateFlow(): void {
    if (this.closed) return;
    const stop = this.blocked !== Blocked.NONE;
    if (stop && !this.input_paused) {
      this.input_paused = true;
      this.socket.pause();
    } else if (!stop && this.input_paused) {
      this.input_paused = false;
      this.socket.resume();
    }
  }

  private readHeader(): boolean {
    if (this.pending.empty) return false;
    if (this.socket.writableLength > this.config.write_backlog_bytes_max) {
      // The client is not reading its replies: stop reading its requests.
      this.blocked = Blocked.DRAIN;
      if (!this.drain_armed) {
        this.drain_armed = true;
        this.socket.once('drain', () => { this.drain_armed = false; this.pump(); });
      }
      return false;
    }
    this.header_filled += this.pending.take(this.header_bytes, this.header_filled, REQUEST_HEADER_BYTES - this.header_filled);
    if (this.header_filled < REQUEST_HEADER_BYTES) return false;
    this.header_filled = 0;
    parseRequestHeader(this.header_bytes, this.header);
    this.counters.requests += 1;
    this.onRequest();
    return true;
  }

  private onRequest(): void {
    const header = this.header;
    const limits = this.config.limits;
    const problem = checkRequest(header, limits);
    switch (verdictOf(problem, header.type)) {
      case Verdict.DISCONNECT:
        // Nothing after this is a request: stop reading now, the socket closes behind us.
        this.config.host.violation(describeProblem(problem, header, limits));
        void this.close();
        return;
      case Verdict.DISC:
        this.enterDrain();
        return;
      case Verdict.ERROR:
        this.reject(errorOf(problem, header.type), describeProblem(problem, header, limits), problem);
        return;
      case Verdict.OK:
        break;
    }
    if (!this.config.isLive()) {
      this.reject(NBD_EIO, `${commandName(header.type)}: the export is gone (its volume was detached or its snapshot destroyed)`, Problem.NONE);
      return;
    }
    this.dispatch();
  }

  /** Answers the current request with an error, after dropping a WRITE's payload. */
  private reject(error: number, message: string, problem: Problem): void {
    this.counters.errors += 1;
    this.config.logger.debug({ error, problem }, `nbd request refused: ${message}`);
    if (this.header.type === CMD_WRITE && this.header.length > 0) {
      this.discard_remaining = this.header.length;
      this.discard_error = error;
      this.discard_message = message;
      this.input = Input.DISCARD;
      return;
    }
    this.sendRequestError(error, message);
    this.input = Input.HEADER;
  }

  private discardPayload(): boolean {
    this.discard_remaining -= this.pending.take(null, 0, this.discard_remaining);
    if (this.discard_remaining > 0) return false;
    this.sendRequestError(this.discard_error, this.discard_message);
    this.discard_message = '';
    this.input = Input.HEADER;
    return true;
  }

  private dispatch(): void {
    const header = this.header;
    const fua = (header.flags & CMD_FLAG_FUA) !== 0 ? IoFlags.FUA : 0;
    this.current_lead = -1;
    this.current_fill_tag = -1;
    this.current_next_offset = header.offset;
    switch (header.type) {
      case CMD_READ:
        this.setCurrent(IoOp.READ, 0, this.slot_bytes, Input.SUBMIT);
        return;
      case CMD_WRITE:
        this.setCurrent(IoOp.WRITE, fua, this.slot_bytes, Input.PAYLOAD);
        return;
      case CMD_TRIM:
        this.setCurrent(IoOp.DISCARD, fua, this.config.zero_segment_bytes, Input.SUBMIT);
        return;
      case CMD_WRITE_ZEROES: {
        const unmap = (header.flags & CMD_FLAG_NO_HOLE) === 0 ? IoFlags.MAY_UNMAP : 0;
        this.setCurrent(IoOp.WRITE_ZEROES, fua | unmap, this.config.zero_segment_bytes, Input.SUBMIT);
        return;
      }
      case CMD_FLUSH:
        this.setCurrent(IoOp.FLUSH, 0, 0, Input.SUBMIT);
        return;
      case CMD_BLOCK_STATUS:
        this.input = Input.STATUS;
        return;
      default:
        assert(false, `dispatch of unchecked command ${header.type}`);
    }
  }

  private setCurrent(op: IoOp, io_flags: number, segment_bytes: number, input: Input): void {
    this.current_op = op;
    this.current_io_flags = io_flags;
    this.current_segment_bytes = segment_bytes;
    this.input = input;
  }

  /** Segment count of the current request: FLUSH is one segment of no bytes. */
  private segmentsOf(): number {
    if (this.header.type === CMD_FLUSH) return 1;
    return Math.ceil(this.header.length / this.current_segment_bytes);
  }

  /** Acquires the current request's lead; false when no tag is free. */
  private startCurrent(): boolean {
    const lead = this.acquireTag();
    if (lead < 0) return false;
    const header = this.header;
    this.tags.startRequest(lead, header.type, header.flags, header.offset, header.length, this.segmentsOf());
    this.header_bytes.copy(this.tags.handles, lead * HANDLE_BYTES, REQUEST_HANDLE_POSITION, REQUEST_HANDLE_POSITION + HANDLE_BYTES);
    this.tags.state[lead] = TagState.HELD;
    this.current_lead = lead;
    return true;
  }

  /** The tag for the current request's next segment (the lead for the first); -1 when none is free. */
  private nextSegmentTag(): number {
    const lead = this.current_lead;
    if (this.tags.segments_submitted[lead] === 0 && this.tags.tail[lead] < 0) return lead;
    return this.acquireTag();
  }

  /** A free tag, or -1 with the connection marked blocked until a tag frees. */
  private acquireTag(): number {
    const tag = this.tags.acquire();
    if (tag < 0) this.blocked = Blocked.TAG;
    return tag;
  }

  private nextSegmentBytes(): number {
    if (this.header.type === CMD_FLUSH) return 0;
    return Math.min(this.current_segment_bytes, this.header.offset + this.header.length - this.current_next_offset);
  }

  /** READ, TRIM, WRITE_ZEROES, FLUSH: submit every segment as tags allow. */
  private submitSegments(): boolean {
    if (this.current_lead < 0 && !this.startCurrent()) return false;
    const lead = this.current_lead;
    const tags = this.tags;
    while (tags.segments_submitted[lead]! < tags.segments_total[lead]!) {
      const tag = this.nextSegmentTag();
      if (tag < 0) return false;
      const bytes = this.nextSegmentBytes();
      tags.linkSegment(lead, tag, this.current_next_offset, bytes);
      this.current_next_offset += bytes;
      this.submit(lead, tag);
    }
    this.currentDispatched();
    return true;
  }

  /** WRITE: fill each segment's slot from the socket, submit it when full. */
  private readPayload(): boolean {
    if (this.current_lead < 0 && !this.startCurrent()) return false;
    const lead = this.current_lead;
    const tags = this.tags;
    while (tags.segments_submitted[lead]! < tags.segments_total[lead]!) {
      if (this.current_fill_tag < 0) {
        const tag = this.nextSegmentTag();
        if (tag < 0) return false;
        tags.linkSegment(lead, tag, this.current_next_offset, this.nextSegmentBytes());
        tags.state[tag] = TagState.FILLING;
        this.current_fill_tag = tag;
        this.current_fill_bytes = 0;
      }
      const tag = this.current_fill_tag;
      const want = tags.segment_bytes[tag]! - this.current_fill_bytes;
      this.current_fill_bytes += this.pending.take(this.slots[tag]!, this.current_fill_bytes, want);
      if (this.current_fill_bytes < tags.segment_bytes[tag]!) return false;
      this.current_next_offset += tags.segment_bytes[tag]!;
      this.current_fill_tag = -1;
      this.submit(lead, tag);
    }
    this.currentDispatched();
    return true;
  }

  private submit(lead: number, tag: number): void {
    const tags = this.tags;
    tags.state[tag] = TagState.SUBMITTED;
    // Counted before submit: a completion delivered at once must see it.
    tags.segments_submitted[lead] += 1;
    this.queue.submit(tag, this.current_op, this.config.target_handle, tags.segment_offset[tag]!,
      tags.segment_bytes[tag]!, this.current_io_flags);
  }

  /** The current request is fully submitted: input moves on; a request of no segments is answered now. */
  private currentDispatched(): void {
    const lead = this.current_lead;
    this.current_lead = -1;
    this.input = Input.HEADER;
    if (this.tags.segments_total[lead] === 0) this.finish(lead);
  }

  private blockStatus(): boolean {
    const lead = this.acquireTag();
    if (lead < 0) return false;
    const header = this.header;
    const tags = this.tags;
    tags.startRequest(lead, header.type, header.flags, header.offset, header.length, 0);
    this.header_bytes.copy(tags.handles, lead * HANDLE_BYTES, REQUEST_HANDLE_POSITION, REQUEST_HANDLE_POSITION + HANDLE_BYTES);
    tags.state[lead] = TagState.HELD;
    this.input = Input.HEADER;
    let bytes: number;
    try {
      bytes = writeBlockStatusReply(this.slots[lead]!, this.config.contexts,
        { offset: header.offset, length: header.length, req_one: (header.flags & CMD_FLAG_REQ_ONE) !== 0 },
        this.config.change_map, this.scratch, tags.handles, lead * HANDLE_BYTES);
    } catch (error) {
      // The CBT map went away under us (volume detached): an I/O error for this request.
      tags.release(lead);
      this.counters.errors += 1;
      this.sendRequestError(NBD_EIO, `BLOCK_STATUS failed: ${(error as Error).message}`);
      return true;
    }
    tags.state[lead] = TagState.WRITING;
    tags.writes_pending[lead] = 1;
    this.batch();
    this.socket.write(this.slots[lead]!.subarray(0, bytes), this.write_done[lead]);
    return true;
  }

  // ── completions and replies ───────────────────────────────────────────

  private complete(tag: number, errno: number): void {
    const tags = this.tags;
    assert(tags.state[tag] === TagState.SUBMITTED, `completion of tag ${tag} in state ${tags.state[tag]}`);
    const lead = tags.lead[tag]!;
    if (errno !== 0 && tags.errno[lead] === 0) {
      tags.errno[lead] = errno;
      tags.error_offset[lead] = tags.segment_offset[tag]!;
    }
    tags.segments_done[lead] += 1;
    tags.state[tag] = TagState.DONE;
    // Only a READ's segments hold data to send; the others are free now.
    if (tag !== lead && tags.type[lead] !== CMD_READ) tags.release(tag);
    if (tags.segments_done[lead] === tags.segments_total[lead] &&
      tags.segments_submitted[lead] === tags.segments_total[lead]) {
      this.finish(lead);
    }
    this.afterRelease();
  }

  /** Every segment of lead's request completed (or it had none): answer it. */
  private finish(lead: number): void {
    const tags = this.tags;
    if (this.closed) {
      this.releaseRequest(lead);
      return;
    }
    const errno = tags.errno[lead]!;
    const type = tags.type[lead]!;
    if (type === CMD_READ && errno === 0) {
      this.sendReadData(lead);
      return;
    }
    if (type === CMD_READ) this.releaseSegments(lead);
    else if (type === CMD_WRITE) this.counters.bytes_written += errno === 0 ? tags.length[lead]! : 0;
    tags.state[lead] = TagState.WRITING;
    tags.writes_pending[lead] = 1;
    if (errno === 0) {
      writeSimpleReply(this.tags.headers, lead * TAG_HEADER_BYTES, 0, tags.handles, lead * HANDLE_BYTES);
      this.batch();
      this.socket.write(this.tags.simple_headers[lead]!, this.write_done[lead]);
      return;
    }
    this.counters.errors += 1;
    const error = nbdErrorOf(errno);
    const offset = tags.error_offset[lead]!;
    const message = `${commandName(type)} failed at offset ${offset}: ${codeOfErrno(errno) ?? 'errno'} ${errno}`;
    this.config.logger.debug({ errno, offset }, `nbd ${message}`);
    this.batch();
    this.socket.write(encodeErrorReply(this.config.limits.structured, error, message, type === CMD_FLUSH ? null : offset, tags.handles, lead * HANDLE_BYTES),
      this.write_done[lead]);
  }

  /** A successful READ: header, then every segment's slot, in one batch. */
  private sendReadData(lead: number): void {
    const tags = this.tags;
    const length = tags.length[lead]!;
    const header_at = lead * TAG_HEADER_BYTES;
    const handle_at = lead * HANDLE_BYTES;
    let header: Buffer;
    if (!this.config.limits.structured) {
      writeSimpleReply(tags.headers, header_at, 0, tags.handles, handle_at);
      header = this.tags.simple_headers[lead]!;
    } else if (length === 0) {
      writeNoneChunk(tags.headers, header_at, REPLY_FLAG_DONE, tags.handles, handle_at);
      header = this.tags.none_headers[lead]!;
    } else {
      // All data is in memory: no error can follow, so this one chunk may be final.
      writeOffsetDataHeader(tags.headers, header_at, REPLY_FLAG_DONE, tags.handles, handle_at, tags.offset[lead]!, length);
      header = this.tags.data_headers[lead]!;
    }
    tags.writes_pending[lead] = 1 + tags.segments_total[lead]!;
    tags.state[lead] = TagState.WRITING;
    this.counters.bytes_read += length;
    this.batch();
    this.socket.write(header, this.write_done[lead]);
    const first = tags.segments_total[lead]! > 0 ? lead : -1;
    for (let tag = first; tag >= 0; tag = tags.next[tag]!) {
      tags.state[tag] = TagState.WRITING;
      const bytes = tags.segment_bytes[tag]!;
      const slot = this.slots[tag]!;
      this.socket.write(bytes === this.slot_bytes ? slot : slot.subarray(0, bytes), this.write_done[tag]);
    }
  }

  /**
   * Corks the socket until the end of this tick: the replies of every
   * completion the engine delivers in one turn leave in one writev, and a
   * READ's header and slots are never split by another reply.
   */
  private batch(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    process.nextTick(this.uncork_later);
  }

  private readonly uncork_later = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  /** A socket write from tag's header or slot called back: the bytes are out. */
  private afterWrite(tag: number): void {
    const tags = this.tags;
    const lead = tags.lead[tag]!;
    if (tag !== lead) tags.release(tag);
    tags.writes_pending[lead] -= 1;
    if (tags.writes_pending[lead] === 0) tags.release(lead);
    this.afterRelease();
  }

  private afterRelease(): void {
    if (this.blocked === Blocked.TAG && !this.pumping) this.pump();
    this.checkIdle();
  }

  /** Releases a READ's non-lead segments (after an error or a close). */
  private releaseSegments(lead: number): void {
    const tags = this.tags;
    for (let tag = tags.next[lead]!; tag >= 0;) {
      const next = tags.next[tag]!;
      tags.release(tag);
      tag = next;
    }
    if (tags.segments_total[lead] === 0) return;
    tags.next[lead] = -1;
  }

  /** Closed: a finished request's tags go back without a reply. */
  private releaseRequest(lead: number): void {
    if (this.tags.type[lead] === CMD_READ) this.releaseSegments(lead);
    this.tags.release(lead);
  }

  /** Close during dispatch: segments never submitted are freed; the rest wait for the engine. */
  private abandonCurrent(): void {
    const lead = this.current_lead;
    if (lead < 0) return;
    this.current_lead = -1;
    const tags = this.tags;
    const fill = this.current_fill_tag;
    this.current_fill_tag = -1;
    if (fill >= 0 && fill !== lead) {
      // The unsubmitted tail of the list: unlink it from the request.
      tags.release(fill);
    }
    const submitted = tags.segments_submitted[lead]!;
    if (submitted === 0) {
      tags.release(lead);
      return;
    }
    // Part of the request reached the engine: if a reply still goes out (a
    // server stop drains), it must not claim the whole request succeeded.
    tags.segments_total[lead] = submitted;
    if (tags.errno[lead] === 0) {
      tags.errno[lead] = NBD_ESHUTDOWN;
      tags.error_offset[lead] = tags.offset[lead]!;
    }
    if (tags.segments_done[lead] === submitted) this.releaseRequest(lead);
  }

  /** An error answer to the request whose header is in header_bytes (refused before any I/O). */
  private sendRequestError(error: number, message: string): void {
    if (this.closed) return;
    this.batch();
    this.socket.write(encodeErrorReply(this.config.limits.structured, error, message, null, this.header_bytes, REQUEST_HANDLE_POSITION));
  }

  private enterDrain(): void {
    this.input = Input.DRAIN;
    this.pending.clear();
    this.abandonCurrent();
    this.checkIdle();
  }

  private checkIdle(): void {
    if (this.tags.in_use_count !== 0) return;
    if (this.input === Input.DRAIN && !this.closed) {
      // Told once: the host ends the socket, and ending it twice could cut the flush short.
      if (!this.drain_reported) {
        this.drain_reported = true;
        this.config.host.drained();
      }
      return;
    }
    if (this.closed && this.queue_closed === null) {
      this.queue_closed = this.queue.close().then(
        () => this.resolve_finished?.(),
        (error: unknown) => {
          this.config.logger.error({ err: error }, 'nbd: closing the I/O queue failed');
          this.resolve_finished?.();
        });
    }
  }
}

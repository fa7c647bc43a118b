// Per-connection tag bookkeeping: the state of every IoQueue tag and of the
// request each tag serves, in typed arrays indexed by tag, allocated once
// when the connection enters transmission (per-tag state in arrays, as ublk servers keep it;
// no allocation per request).
//
// A request holds one or more tags. Its first tag is its *lead*: the lead
// indexes the request's fields, carries its handle and reply header, and
// is released last, when the reply has been written. Further tags are the
// request's other segments (a READ or WRITE longer than one slot, a TRIM or
// WRITE_ZEROES longer than one zero segment).
//
//   tag life:  FREE ─acquire─► FILLING (WRITE payload arriving)
//                   └────────► SUBMITTED ─engine completion─► DONE
//              DONE ─► WRITING (a READ's data, or a reply from the slot) ─socket write callback─► FREE
//              DONE ─► FREE (a non-lead segment without data to send)
//
// A slot is free for reuse only after the socket write that sends from it
// has called back (docs/design.md §4: replies are sent from slab buffers).

import { assert, assertIndex } from '../../shared/assert';
import { SIMPLE_REPLY_HEADER_BYTES, STRUCTURED_REPLY_HEADER_BYTES } from './protocol';
import { HANDLE_BYTES, OFFSET_DATA_HEADER_BYTES, REPLY_HEADER_BYTES_MAX } from './reply-codec';

export const enum TagState {
  FREE = 0,
  FILLING = 1,
  SUBMITTED = 2,
  DONE = 3,
  WRITING = 4,
  /** The lead of a request whose reply needs no engine I/O (BLOCK_STATUS, zero length). */
  HELD = 5,
}

/** Per-tag header space: the largest fixed reply header, rounded to 8 bytes. */
export const TAG_HEADER_BYTES = Math.ceil(REPLY_HEADER_BYTES_MAX / 8) * 8;

export class TagTable {
  readonly depth: number;
  readonly state: Uint8Array;
  /** The lead tag of the request a tag serves (itself for a lead). */
  readonly lead: Int32Array;
  /** Segment byte range of a tag. */
  readonly segment_offset: Float64Array;
  readonly segment_bytes: Float64Array;
  /** The next segment of the same request, in offset order, or -1. */
  readonly next: Int32Array;

  // Request fields, indexed by the lead tag.
  readonly type: Uint8Array;
  readonly flags: Uint16Array;
  readonly offset: Float64Array;
  readonly length: Float64Array;
  readonly segments_total: Int32Array;
  readonly segments_submitted: Int32Array;
  readonly segments_done: Int32Array;
  /** The first engine errno seen, 0 if none, and the segment offset where it happened. */
  readonly errno: Int32Array;
  readonly error_offset: Float64Array;
  /** The last segment tag linked so far (the tail of the `next` list). */
  readonly tail: Int32Array;
  /** Socket writes of the reply still pending; the lead is released when it reaches 0. */
  readonly writes_pending: Int32Array;

  /** Raw request handles, HANDLE_BYTES per lead tag. */
  readonly handles: Buffer;
  /** Reply header space, TAG_HEADER_BYTES per tag, and per-tag views of it sized for each fixed header. */
  readonly headers: Buffer;
  readonly simple_headers: Buffer[] = [];
  readonly data_headers: Buffer[] = [];
  readonly none_headers: Buffer[] = [];

  private readonly free_stack: Int32Array;
  private free_top: number;

  constructor(depth: number) {
    assert(Number.isInteger(depth) && depth >= 1, `queue depth ${depth}`);
    this.depth = depth;
    this.state = new Uint8Array(depth);
    this.lead = new Int32Array(depth).fill(-1);
    this.segment_offset = new Float64Array(depth);
    this.segment_bytes = new Float64Array(depth);
    this.next = new Int32Array(depth).fill(-1);
    this.type = new Uint8Array(depth);
    this.flags = new Uint16Array(depth);
    this.offset = new Float64Array(depth);
    this.length = new Float64Array(depth);
    this.segments_total = new Int32Array(depth);
    this.segments_submitted = new Int32Array(depth);
    this.segments_done = new Int32Array(depth);
    this.errno = new Int32Array(depth);
    this.error_offset = new Float64Array(depth);
    this.tail = new Int32Array(depth).fill(-1);
    this.writes_pending = new Int32Array(depth);
    this.handles = Buffer.alloc(depth * HANDLE_BYTES);
    this.headers = Buffer.alloc(depth * TAG_HEADER_BYTES);
    for (let tag = 0; tag < depth; tag += 1) {
      const at = tag * TAG_HEADER_BYTES;
      this.simple_headers.push(this.headers.subarray(at, at + SIMPLE_REPLY_HEADER_BYTES));
      this.data_headers.push(this.headers.subarray(at, at + OFFSET_DATA_HEADER_BYTES));
      this.none_headers.push(this.headers.subarray(at, at + STRUCTURED_REPLY_HEADER_BYTES));
    }
    this.free_stack = new Int32Array(depth);
    // Lowest tags on top: a quiet connection keeps reusing the same few slots.
    for (let index = 0; index < depth; index += 1) this.free_stack[index] = depth - 1 - index;
    this.free_top = depth;
  }

  /** Buffer views of every tag's slot (the IoQueue's shared memory), slot_bytes each, made once. */
  bindSlots(slotOf: (tag: number) => Uint8Array, slot_bytes: number): Buffer[] {
    const slots: Buffer[] = [];
    for (let tag = 0; tag < this.depth; tag += 1) {
      const view = slotOf(tag);
      assert(view.byteLength >= slot_bytes, `tag ${tag} slot is smaller than ${slot_bytes} bytes`);
      slots.push(Buffer.from(view.buffer, view.byteOffset, slot_bytes));
    }
    return slots;
  }

  get free_count(): number {
    return this.free_top;
  }

  get in_use_count(): number {
    return this.depth - this.free_top;
  }

  /** A free tag, now owned by the caller, or -1 when all are in use. */
  acquire(): number {
    if (this.free_top === 0) return -1;
    this.free_top -= 1;
    const tag = this.free_stack[this.free_top]!;
    assert(this.state[tag] === TagState.FREE, `tag ${tag} on the free stack is in state ${this.state[tag]}`);
    this.next[tag] = -1;
    this.lead[tag] = -1;
    return tag;
  }

  release(tag: number): void {
    assertIndex(tag, this.depth, 'tag');
    assert(this.state[tag] !== TagState.FREE, `tag ${tag} released twice`);
    this.state[tag] = TagState.FREE;
    this.free_stack[this.free_top] = tag;
    this.free_top += 1;
  }

  /** Starts a request on lead: resets its fields. */
  startRequest(lead: number, type: number, flags: number, offset: number, length: number, segments_total: number): void {
    this.lead[lead] = lead;
    this.type[lead] = type;
    this.flags[lead] = flags;
    this.offset[lead] = offset;
    this.length[lead] = length;
    this.segments_total[lead] = segments_total;
    this.segments_submitted[lead] = 0;
    this.segments_done[lead] = 0;
    this.errno[lead] = 0;
    this.error_offset[lead] = 0;
    this.tail[lead] = -1;
    this.writes_pending[lead] = 0;
  }

  /** Appends segment tag (possibly the lead itself) to lead's request. */
  linkSegment(lead: number, tag: number, offset: number, bytes: number): void {
    this.lead[tag] = lead;
    this.segment_offset[tag] = offset;
    this.segment_bytes[tag] = bytes;
    this.next[tag] = -1;
    const tail = this.tail[lead]!;
    if (tail >= 0) this.next[tail] = tag;
    this.tail[lead] = tag;
  }
}

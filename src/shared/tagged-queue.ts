// What every IoQueue shares, wherever its requests are served: tags, one
// aligned slab slot per tag, the checks on a submission, the request record
// it becomes, and the completion ring it is answered through. Subclasses
// decide only where a record goes and when completions are delivered:
//
//   EngineIoQueue (io-queue.ts)          main thread → request ring → an actor;
//                                        completions awaited on the event loop
//   ActorLocalQueue (actors/local-queue) inside an actor: served at once, in
//                                        the submitting thread; completions
//                                        delivered in a microtask
//
// submit() writes one preallocated record and allocates nothing.

import { alignedOffset } from '../native';
import { assert, AssertionError } from './assert';
import {
  COMPLETION_WORDS, CompletionWord, handleSerial, handleVolume, packRequest, REQUEST_WORDS,
} from './request-record';
import { Ring } from './ring';
import { Slab } from './slab';
import { PAGE_BYTES } from './units';
import type { IoQueue } from './io-queue';
import type { IoOp } from './request-record';

export abstract class TaggedQueue implements IoQueue {
  readonly buffers: Slab;
  readonly completions: Ring;
  protected readonly request = new Int32Array(REQUEST_WORDS);
  private readonly completion = new Int32Array(COMPLETION_WORDS);
  private readonly busy: Uint8Array;
  private handler: (tag: number, errno: number) => void = () => undefined;
  private in_flight_count = 0;
  protected open = true;

  /** buffers: a slab of depth slots of max_io_bytes to reuse (its pages already mapped); a new one otherwise. */
  constructor(readonly queue_id: number, readonly depth: number, readonly max_io_bytes: number, buffers?: Slab) {
    assert(max_io_bytes % PAGE_BYTES === 0, `queue buffers must be whole pages, got ${max_io_bytes}`);
    assert(buffers === undefined || (buffers.slot_count === depth && buffers.slot_bytes === max_io_bytes), 'a reused slab must match the queue');
    this.buffers = buffers ?? Slab.create(max_io_bytes, depth, alignedOffset);
    let capacity = 1;
    while (capacity < depth) capacity *= 2;
    this.completions = Ring.create(capacity, COMPLETION_WORDS);
    this.busy = new Uint8Array(depth);
  }

  get in_flight(): number {
    return this.in_flight_count;
  }

  buffer(tag: number): Uint8Array {
    return this.buffers.view(tag);
  }

  get slab(): { data: SharedArrayBuffer; data_offset: number; slot_bytes: number } {
    return this.buffers.buffers;
  }

  onComplete(handler: (tag: number, errno: number) => void): void {
    this.handler = handler;
  }

  abstract close(): Promise<void>;

  /** Hands the record in `this.request` to whoever serves it. */
  protected abstract dispatch(record: Int32Array, target_handle: number): void;

  submit(tag: number, op: IoOp, target_handle: number, offset_bytes: number, length_bytes: number, flags: number): void {
    // Checked without building messages: a template literal per call would
    // allocate on every request. The message is made only for the bug report.
    const valid = this.open && Number.isInteger(tag) && tag >= 0 && tag < this.depth && this.busy[tag] === 0 &&
      Number.isSafeInteger(length_bytes) && length_bytes >= 0 && length_bytes <= this.max_io_bytes &&
      Number.isSafeInteger(offset_bytes) && offset_bytes >= 0;
    if (!valid) this.rejectSubmission(tag, offset_bytes, length_bytes);
    // The queue's own bounds are checked above; packRequest asserts what the record layout promises.
    const record = this.request;
    packRequest(record, tag, this.queue_id, op, flags, handleVolume(target_handle), handleSerial(target_handle),
      offset_bytes, length_bytes);
    this.busy[tag] = 1;
    this.in_flight_count += 1;
    this.dispatch(record, target_handle);
  }

  private rejectSubmission(tag: number, offset_bytes: number, length_bytes: number): never {
    throw new AssertionError(`bad submission: queue ${this.open ? 'open' : 'closed'}, tag ${tag} of ${this.depth}` +
      ` (busy ${this.busy[tag]}), offset ${offset_bytes}, length ${length_bytes} of at most ${this.max_io_bytes}`);
  }

  /** Hands every completion in the ring to the handler. */
  protected deliverCompletions(): void {
    const completion = this.completion;
    while (this.completions.tryPop(completion, 0)) {
      const tag = completion[CompletionWord.TAG]!;
      this.busy[tag] = 0;
      this.in_flight_count -= 1;
      try {
        this.handler(tag, completion[CompletionWord.ERRNO]!);
      } catch (error) {
        console.error('ublksnap: a completion handler threw', error);
      }
    }
  }
}

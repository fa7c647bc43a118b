// One frontend queue on the main thread: tags, their request buffers
// (a slab slot per tag, in shared memory), submission into the cow or
// image request ring, and a completion ring drained on the event loop.
//
//   frontend ─submit(tag)─► request ring (cow | image) ─► actor ─► completion ring ─► onComplete(tag, errno)
//
// submit() writes one preallocated record and allocates nothing. The
// completion loop sleeps in Atomics.waitAsync on the completion ring and
// delivers every completion it finds in one turn.

import { alignedOffset } from '../native';
import { assert, AssertionError } from '../shared/assert';
import { COMPLETION_WORDS, CompletionWord, handleIsImage, handleSerial, handleVolume, REQUEST_WORDS, RequestWord, writeOffset } from '../shared/request-record';
import { Ring } from '../shared/ring';
import { Slab } from '../shared/slab';
import { PAGE_BYTES } from '../shared/units';
import type { QueueDescriptor } from '../actors/messages';
import type { IoOp, IoQueue } from './api';

/** The completion loop re-checks for closing this often when idle. */
const COMPLETION_IDLE_WAIT_MS = 100;
/** close() waits this long for requests in flight before giving up on them. */
export const QUEUE_CLOSE_TIMEOUT_MS = 30_000;

export class EngineIoQueue implements IoQueue {
  readonly buffers: Slab;
  readonly completions: Ring;
  private readonly request = new Int32Array(REQUEST_WORDS);
  private readonly completion = new Int32Array(COMPLETION_WORDS);
  private readonly busy: Uint8Array;
  private handler: (tag: number, errno: number) => void = () => undefined;
  private in_flight_count = 0;
  private kick_scheduled = false;
  private wake_cow = false;
  private wake_image = false;
  private open = true;
  private readonly loop_done: Promise<void>;

  constructor(readonly queue_id: number, readonly depth: number, readonly max_io_bytes: number,
    private readonly rings: { cow: Ring; image: Ring }, private readonly onClose: (queue: EngineIoQueue) => Promise<void>) {
    assert(max_io_bytes % PAGE_BYTES === 0, `queue buffers must be whole pages, got ${max_io_bytes}`);
    this.buffers = Slab.create(max_io_bytes, depth, alignedOffset);
    let capacity = 1;
    while (capacity < depth) capacity *= 2;
    this.completions = Ring.create(capacity, COMPLETION_WORDS);
    this.busy = new Uint8Array(depth);
    this.loop_done = this.completionLoop();
  }

  get descriptor(): QueueDescriptor {
    return { queue_id: this.queue_id, completions: this.completions.buffer, slab: this.buffers.buffers };
  }

  get in_flight(): number {
    return this.in_flight_count;
  }

  buffer(tag: number): Uint8Array {
    return this.buffers.view(tag);
  }

  submit(tag: number, op: IoOp, target_handle: number, offset_bytes: number, length_bytes: number, flags: number): void {
    // Checked without building messages: a template literal per call would
    // allocate on every request. The message is made only for the bug report.
    const valid = this.open && Number.isInteger(tag) && tag >= 0 && tag < this.depth && this.busy[tag] === 0 &&
      Number.isSafeInteger(length_bytes) && length_bytes >= 0 && length_bytes <= this.max_io_bytes &&
      Number.isSafeInteger(offset_bytes) && offset_bytes >= 0;
    if (!valid) this.rejectSubmission(tag, offset_bytes, length_bytes);
    const record = this.request;
    record[RequestWord.TAG] = tag;
    record[RequestWord.QUEUE] = this.queue_id;
    record[RequestWord.OP] = op;
    record[RequestWord.FLAGS] = flags;
    record[RequestWord.VOLUME] = handleVolume(target_handle);
    record[RequestWord.SERIAL] = handleSerial(target_handle);
    writeOffset(record, offset_bytes);
    record[RequestWord.LENGTH] = length_bytes;
    const image = handleIsImage(target_handle);
    const ring = image ? this.rings.image : this.rings.cow;
    // The rings hold as many records as all open queues have tags.
    ring.pushCertain(record, 0, false, 'request submission (more requests in flight than tags?)');
    this.busy[tag] = 1;
    this.in_flight_count += 1;
    // One wake-up per ring per turn of the event loop, however many requests
    // a frontend submits in it (a wake-up costs more than a submission).
    if (image) this.wake_image = true;
    else this.wake_cow = true;
    if (!this.kick_scheduled) {
      this.kick_scheduled = true;
      queueMicrotask(this.kick);
    }
  }

  private rejectSubmission(tag: number, offset_bytes: number, length_bytes: number): never {
    throw new AssertionError(`bad submission: queue ${this.open ? 'open' : 'closed'}, tag ${tag} of ${this.depth}` +
      ` (busy ${this.busy[tag]}), offset ${offset_bytes}, length ${length_bytes} of at most ${this.max_io_bytes}`);
  }

  /** Wakes the actors for everything submitted this turn. */
  private readonly kick = (): void => {
    this.kick_scheduled = false;
    if (this.wake_cow) this.rings.cow.wakeConsumers();
    if (this.wake_image) this.rings.image.wakeConsumers();
    this.wake_cow = false;
    this.wake_image = false;
  };

  onComplete(handler: (tag: number, errno: number) => void): void {
    this.handler = handler;
  }

  async close(): Promise<void> {
    if (!this.open) return;
    const deadline = Date.now() + QUEUE_CLOSE_TIMEOUT_MS;
    while (this.in_flight_count > 0 && Date.now() < deadline) await this.completions.waitForRecords(COMPLETION_IDLE_WAIT_MS);
    this.open = false;
    this.completions.wakeAll();
    await this.loop_done;
    await this.onClose(this);
  }

  private async completionLoop(): Promise<void> {
    const completion = this.completion;
    while (this.open) {
      await this.completions.waitForRecords(COMPLETION_IDLE_WAIT_MS);
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
}

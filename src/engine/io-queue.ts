// One frontend queue on the main thread (tagged-queue.ts holds the tags,
// slots and records): submission into the cow or image request ring, and a
// completion ring drained on the event loop.
//
//   frontend ─submit(tag)─► request ring (cow | image) ─► actor ─► completion ring ─► onComplete(tag, errno)
//
// The completion loop sleeps in Atomics.waitAsync on the completion ring and
// delivers every completion it finds in one turn.

import { handleIsImage } from '../shared/request-record';
import { Ring } from '../shared/ring';
import type { QueueDescriptor } from '../actors/messages';
import { TaggedQueue } from '../shared/tagged-queue';

/** The completion loop re-checks for closing this often when idle. */
const COMPLETION_IDLE_WAIT_MS = 100;
/** close() waits this long for requests in flight before giving up on them. */
export const QUEUE_CLOSE_TIMEOUT_MS = 30_000;

export class EngineIoQueue extends TaggedQueue {
  private kick_scheduled = false;
  private wake_cow = false;
  private wake_image = false;
  private readonly loop_done: Promise<void>;

  constructor(queue_id: number, depth: number, max_io_bytes: number,
    private readonly rings: { cow: Ring; image: Ring }, private readonly onClose: (queue: EngineIoQueue) => Promise<void>) {
    super(queue_id, depth, max_io_bytes);
    this.loop_done = this.completionLoop();
  }

  get descriptor(): QueueDescriptor {
    return { queue_id: this.queue_id, completions: this.completions.buffer, slab: this.buffers.buffers };
  }

  protected dispatch(record: Int32Array, target_handle: number): void {
    const image = handleIsImage(target_handle);
    const ring = image ? this.rings.image : this.rings.cow;
    // The rings hold as many records as all open queues have tags.
    ring.pushCertain(record, 0, false, 'request submission (more requests in flight than tags?)');
    // One wake-up per ring per turn of the event loop, however many requests
    // a frontend submits in it (a wake-up costs more than a submission).
    if (image) this.wake_image = true;
    else this.wake_cow = true;
    if (!this.kick_scheduled) {
      this.kick_scheduled = true;
      queueMicrotask(this.kick);
    }
  }

  /** Wakes the actors for everything submitted this turn. */
  private readonly kick = (): void => {
    this.kick_scheduled = false;
    if (this.wake_cow) this.rings.cow.wakeConsumers();
    if (this.wake_image) this.rings.image.wakeConsumers();
    this.wake_cow = false;
    this.wake_image = false;
  };

  async close(): Promise<void> {
    if (!this.open) return;
    const deadline = Date.now() + QUEUE_CLOSE_TIMEOUT_MS;
    while (this.in_flight > 0 && Date.now() < deadline) await this.completions.waitForRecords(COMPLETION_IDLE_WAIT_MS);
    this.open = false;
    this.completions.wakeAll();
    await this.loop_done;
    await this.onClose(this);
  }

  private async completionLoop(): Promise<void> {
    while (this.open) {
      await this.completions.waitForRecords(COMPLETION_IDLE_WAIT_MS);
      this.deliverCompletions();
    }
  }
}

// An IoQueue that lives inside an I/O actor and is served there: a frontend
// session hosted by the actor (an NBD transmission, nbd-session.ts) submits
// a request and the actor's handler runs it at once, in the same thread —
// no request ring, no wake-up, no second thread between the socket and the
// volume. Completions go through the queue's own completion ring like any
// queue's and are delivered in one microtask per turn, so the frontend sees
// the same asynchronous contract as EngineIoQueue (tagged-queue.ts).
//
// A request that meets a frozen gate is parked by the actor like a ring
// request and completes after the thaw.

import type { QueueDescriptor } from './messages';
import { TaggedQueue } from '../engine/tagged-queue';

/** What the actor offers a queue it hosts. */
export interface QueueHost {
  /** Registers the queue so the handlers find its buffers and completions (io-actor.ts attachQueue). */
  attach(descriptor: QueueDescriptor, wake: () => void): void;
  detach(queue_id: number): void;
  /** Serves one request record now; its completion lands in the queue's ring. */
  serve(record: Int32Array): void;
}

export class ActorLocalQueue extends TaggedQueue {
  private drain_scheduled = false;
  private closing: ((value: void) => void) | null = null;

  constructor(queue_id: number, depth: number, max_io_bytes: number, private readonly host: QueueHost) {
    super(queue_id, depth, max_io_bytes);
    host.attach({ queue_id, completions: this.completions.buffer, slab: this.buffers.buffers }, this.wake);
  }

  protected dispatch(record: Int32Array): void {
    this.host.serve(record);
  }

  /** Called by the actor after completions were pushed: deliver them once this turn's work is done. */
  private readonly wake = (): void => {
    if (this.drain_scheduled) return;
    this.drain_scheduled = true;
    queueMicrotask(this.drain);
  };

  private readonly drain = (): void => {
    this.drain_scheduled = false;
    this.deliverCompletions();
    if (this.closing !== null && this.in_flight === 0) this.finishClose();
  };

  /** Waits for requests still parked at a gate, then unregisters. */
  close(): Promise<void> {
    if (!this.open) return Promise.resolve();
    this.open = false;
    return new Promise((resolve) => {
      this.closing = resolve;
      if (this.in_flight === 0) this.finishClose();
    });
  }

  private finishClose(): void {
    const resolve = this.closing!;
    this.closing = null;
    this.host.detach(this.queue_id);
    resolve();
  }
}

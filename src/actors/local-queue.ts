// An IoQueue that lives inside an I/O actor and is served there: a frontend
// session hosted by the actor (session-host.ts) submits
// a request and the actor's handler runs it at once, in the same thread —
// no request ring, no wake-up, no second thread between the socket and the
// volume. Completions go through the queue's own completion ring like any
// queue's and are delivered in one microtask per turn, so the frontend sees
// the same asynchronous contract as EngineIoQueue (tagged-queue.ts).
//
// A request that meets a frozen gate is parked by the actor like a ring
// request and completes after the thaw.

import type { QueueDescriptor } from './messages';
import { Slab } from '../shared/slab';
import { TaggedQueue } from '../shared/tagged-queue';

/**
 * Slabs of closed queues this actor keeps for the next ones: a new
 * connection then writes into pages already mapped instead of faulting in
 * up to depth × max_io_bytes of fresh memory (nbdcopy opens four
 * connections per copy; each image read touched 64 MiB of new pages).
 */
const SPARE_SLABS_MAX = 2;
const spare_slabs: Slab[] = [];

function takeSlab(depth: number, max_io_bytes: number): Slab | undefined {
  const index = spare_slabs.findIndex((slab) => slab.slot_count === depth && slab.slot_bytes === max_io_bytes);
  return index < 0 ? undefined : spare_slabs.splice(index, 1)[0];
}

function keepSlab(slab: Slab): void {
  if (spare_slabs.length >= SPARE_SLABS_MAX) spare_slabs.shift();
  spare_slabs.push(slab);
}

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
    super(queue_id, depth, max_io_bytes, takeSlab(depth, max_io_bytes));
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
    keepSlab(this.buffers);
    resolve();
  }
}

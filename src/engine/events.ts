// The event queue of one snapshot: bounded, waited for by long-polling
// clients (snapshot_waitevent, snapshot_watcher). When full, the oldest
// event is dropped and the next one delivered says how many were lost, so a
// slow client learns it missed something instead of blocking the engine.

import type { SnapshotEvent } from './api';

/** Events kept per snapshot; blksnap keeps a similar short list. */
export const EVENT_QUEUE_CAPACITY = 64;

interface Waiter {
  resolve: (event: SnapshotEvent | null) => void;
  timer: NodeJS.Timeout;
}

export class EventQueue {
  private readonly events: SnapshotEvent[] = [];
  private readonly waiters: Waiter[] = [];
  private dropped_count = 0;
  private closed = false;

  push(event: SnapshotEvent): void {
    const waiter = this.waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(event);
      return;
    }
    if (this.events.length >= EVENT_QUEUE_CAPACITY) {
      this.events.shift();
      this.dropped_count += 1;
    }
    this.events.push(event);
  }

  /** The next event, or null after timeout_ms. */
  wait(timeout_ms: number): Promise<SnapshotEvent | null> {
    const event = this.events.shift();
    if (event) return Promise.resolve(this.withDropped(event));
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        resolve,
        timer: setTimeout(() => {
          const index = this.waiters.indexOf(waiter);
          if (index >= 0) this.waiters.splice(index, 1);
          resolve(null);
        }, timeout_ms),
      };
      this.waiters.push(waiter);
    });
  }

  get pending(): number {
    return this.events.length;
  }

  /** Delivers `last` to every waiter (or keeps it) and accepts no more waits after it drained. */
  close(last: SnapshotEvent): void {
    this.push(last);
    for (const waiter of this.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.resolve(last);
    }
    this.closed = true;
  }

  get drained(): boolean {
    return this.closed && this.events.length === 0;
  }

  private withDropped(event: SnapshotEvent): SnapshotEvent {
    if (this.dropped_count === 0) return event;
    const annotated = { ...event, dropped: this.dropped_count };
    this.dropped_count = 0;
    return annotated;
  }
}

// Snapshot events between the engine and IPC clients.
//
//   engine.waitEvent(id, PUMP_WAIT_MS) ◄── one pump per snapshot (a loop)
//                 │ event
//                 ▼
//  oldest waiter that accepts it? ──yes──► resolve it (each event goes to one waiter,
//                 │ no            as blksnap's wait_event does; the last one,
//                 │               'destroyed', goes to every waiter)
//                 ▼
//        queue (EVENT_QUEUE_CAPACITY) ──► the next wait() takes it at once
//
// Why a pump instead of passing each client's wait to the engine: a client
// that disconnects mid-wait must cost nothing, and an engine wait cannot be
// cancelled. Were the client's wait the engine's wait, its event would be
// delivered to a dead client and lost. Here a client's wait is only a
// waiter record: a timer and an abort listener, both removed the moment
// the client leaves, and the pump hands the event to the next waiter.
//
// A pump starts with the first wait for its snapshot and ends when the
// engine reports 'destroyed' or an error (ESRCH), or at stop().

import type { Logger } from 'pino';
import type { EngineControl, SnapshotEvent } from '../engine/api';
import { UblksnapError, fromSystemError } from '../shared/errors';

/** Events kept per snapshot for a client that is not waiting right now. */
export const EVENT_QUEUE_CAPACITY = 256;
/** One engine wait; also how long stop() may wait for a pump to notice. */
export const PUMP_WAIT_MS = 1_000;
/** A finished snapshot's last events are kept this long for a late waiter. */
export const FINISHED_TTL_MS = 60_000;

/** Which event codes a waiter wants; the others pass it by. */
export type EventFilter = (code: string) => boolean;

interface Waiter {
  accepts?: EventFilter;
  resolve: (event: SnapshotEvent | null) => void;
  reject: (error: Error) => void;
}

class SnapshotEvents {
  readonly queue: SnapshotEvent[] = [];
  readonly waiters: Waiter[] = [];
  /** The pump's terminal error (ESRCH after destroy, ESHUTDOWN at stop), once the queue is empty. */
  error: UblksnapError | null = null;
  pumping = true;
  expiry: NodeJS.Timeout | null = null;

  constructor(readonly id: string) {}
}

export class EventHub {
  private readonly snapshots = new Map<string, SnapshotEvents>();
  private stopped = false;
  private readonly pumps = new Set<Promise<void>>();

  constructor(private readonly engine: Pick<EngineControl, 'waitEvent'>, private readonly logger: Logger) {}

  /** Waiters across every snapshot: what status shows, what tests check after a disconnect. */
  get waiter_count(): number {
    let count = 0;
    for (const entry of this.snapshots.values()) count += entry.waiters.length;
    return count;
  }

  /**
   * The next event of snapshot id, or null after timeout_ms. Rejects with
   * the engine's error (ESRCH for an unknown or finished snapshot), or when
   * signal aborts (the client left, or the daemon is stopping).
   */
  wait(id: string, timeout_ms: number, signal: AbortSignal, accepts?: EventFilter): Promise<SnapshotEvent | null> {
    if (this.stopped) return Promise.reject(new UblksnapError('ESHUTDOWN', 'the daemon is stopping'));
    if (signal.aborted) return Promise.reject(abortError(signal));
    let entry = this.snapshots.get(id);
    if (!entry) {
      entry = new SnapshotEvents(id);
      this.snapshots.set(id, entry);
      this.startPump(entry);
    }
    // A filtered waiter consumes what it does not accept: it asked not to see it.
    let queued = entry.queue.shift();
    while (queued && accepts && !accepts(queued.code)) queued = entry.queue.shift();
    if (queued) {
      this.forgetIfDone(entry);
      return Promise.resolve(queued);
    }
    if (entry.error) {
      const error = entry.error;
      this.forget(entry);
      return Promise.reject(error);
    }
    const target = entry;
    return new Promise((resolve, reject) => {
      const onAbort = (): void => settle(() => reject(abortError(signal)));
      const timer = setTimeout(() => settle(() => resolve(null)), timeout_ms);
      const waiter: Waiter = {
        ...(accepts ? { accepts } : {}),
        resolve: (event) => settle(() => resolve(event)),
        reject: (error) => settle(() => reject(error)),
      };
      // Runs exactly once: removes every trace of this waiter, then answers.
      let settled = false;
      const settle = (answer: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        const index = target.waiters.indexOf(waiter);
        if (index !== -1) target.waiters.splice(index, 1);
        answer();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      target.waiters.push(waiter);
    });
  }

  /** Ends every pump and answers every waiter with ESHUTDOWN. */
  async stop(): Promise<void> {
    this.stopped = true;
    const error = new UblksnapError('ESHUTDOWN', 'the daemon is stopping');
    for (const entry of this.snapshots.values()) {
      for (const waiter of [...entry.waiters]) waiter.reject(error);
      if (entry.expiry) clearTimeout(entry.expiry);
    }
    this.snapshots.clear();
    await Promise.all([...this.pumps]);
  }

  private startPump(entry: SnapshotEvents): void {
    const pump = this.pump(entry).finally(() => this.pumps.delete(pump));
    this.pumps.add(pump);
  }

  private async pump(entry: SnapshotEvents): Promise<void> {
    while (!this.stopped) {
      let event: SnapshotEvent | null;
      try {
        event = await this.engine.waitEvent(entry.id, PUMP_WAIT_MS);
      } catch (error) {
        // ESRCH: unknown or finished snapshot; anything else is reported the same way.
        this.finish(entry, fromSystemError(error, `snapshot ${entry.id}`));
        return;
      }
      if (event === null) continue;
      this.logger.info({ snapshot: entry.id, event: event.code, volume: event.volume, errno: event.errno }, 'snapshot event');
      if (event.code === 'destroyed') {
        // The last event reaches every waiter, as the engine's own queue does (EventQueue.close).
        // A waiter that does not accept it learns the end as a waiter that
        // comes later does: ESRCH (finish, below).
        if (entry.waiters.length === 0) entry.queue.push(event);
        for (const waiter of [...entry.waiters]) if (!waiter.accepts || waiter.accepts(event.code)) waiter.resolve(event);
        this.finish(entry, new UblksnapError('ESRCH', `snapshot ${entry.id} was destroyed`));
        return;
      }
      this.deliver(entry, event);
    }
  }

  private deliver(entry: SnapshotEvents, event: SnapshotEvent): void {
    const waiter = entry.waiters.find((candidate) => !candidate.accepts || candidate.accepts(event.code));
    if (waiter) {
      waiter.resolve(event);
      return;
    }
    if (entry.queue.length >= EVENT_QUEUE_CAPACITY) {
      const dropped = entry.queue.shift();
      this.logger.warn({ snapshot: entry.id, dropped: dropped?.code }, 'event queue full; dropping the oldest event');
    }
    entry.queue.push(event);
  }

  /** The pump ended: waiters with nothing queued get the error; the rest is kept a while. */
  private finish(entry: SnapshotEvents, error: UblksnapError): void {
    entry.pumping = false;
    entry.error = error;
    for (const waiter of [...entry.waiters]) waiter.reject(error);
    if (entry.queue.length === 0) {
      // The engine will say ESRCH again to the next waiter: nothing to keep.
      this.forget(entry);
      return;
    }
    entry.expiry = setTimeout(() => this.forget(entry), FINISHED_TTL_MS);
    entry.expiry.unref();
  }

  private forgetIfDone(entry: SnapshotEvents): void {
    if (!entry.pumping && entry.queue.length === 0) this.forget(entry);
  }

  private forget(entry: SnapshotEvents): void {
    if (entry.expiry) clearTimeout(entry.expiry);
    if (this.snapshots.get(entry.id) === entry) this.snapshots.delete(entry.id);
  }
}

function abortError(signal: AbortSignal): UblksnapError {
  return signal.reason === 'shutdown'
    ? new UblksnapError('ESHUTDOWN', 'the daemon is stopping')
    : new UblksnapError('ETIMEDOUT', 'the client went away');
}

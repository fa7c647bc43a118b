// The body shared by the long-lived I/O actors (cow-read, image-io): a
// registry of what the control plane attached (cow/registry.ts), a loop over
// one request ring, the frontend sessions the actor hosts (session-host.ts),
// and the comlink control surface.
//
// Design notes
//
// The loop drains the request ring synchronously, a batch at a time; when
// the ring is empty it awaits Atomics.waitAsync on the ring's doorbell
// (ring.waitForRecords), which lets comlink control messages in between.
// Per-request traffic never touches postMessage and allocates nothing: the
// record is copied into one preallocated Int32Array and handled in place.
//
// Parking: a write that meets a frozen volume (take or destroy in progress)
// is copied into the parked ring and retried at every turn of the loop once
// the gate opened. The parked ring holds every open tag (shared/limits.ts).
//
// Which waits this thread may do, each bounded:
//   - Atomics.wait on the request ring for SYNC_WAIT_MS, only while it hosts
//     no session and no deferred I/O is in libuv's thread pool (their events
//     arrive on the event loop, which must keep turning);
//   - Atomics.waitAsync on the request ring for IDLE_WAIT_MS (not blocking);
//   - inside a handler, the copy-on-write core's waits: a chunk lock held
//     by another thread, or a free chunk buffer (DiffArea,
//     BUFFER_WAIT_TIMEOUT_MS; the snapshot breaks, never the write). While
//     one request waits there, every session this actor hosts waits too.

import { PerformanceObserver } from 'node:perf_hooks';
import { parentPort } from 'node:worker_threads';
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/umd/node-adapter';
import { assert } from '../shared/assert';
import { CbtMap } from '../shared/cbt-map';
import { ERRNO_BY_CODE } from '../shared/errors';
import { PARKED_CAPACITY } from '../shared/limits';
import { COMPLETION_WORDS, packCompletion, REQUEST_WORDS, RequestWord } from '../shared/request-record';
import { Ring } from '../shared/ring';
import { Slab } from '../shared/slab';
import { DiffArea } from '../cow/diff-area';
import { DEFERRED, IoRegistry, PARKED, type RegisteredQueue, type RequestHandler } from '../cow/registry';
import { VolumeReader } from '../cow/volume-io';
import type { ActorNotice, IoActorControl, QueueDescriptor } from './messages';
import type { QueueHost } from './local-queue';
import { SessionHost } from './session-host';

/** Requests handled before the loop yields to control messages. */
const BATCH_MAX = 64;
/**
 * The longest an idle actor sleeps before re-checking its parked requests
 * and stop flag. Only a safety net: every event that needs the loop wakes
 * it (a request: the ring's doorbell; a thaw: the engine's wakeAll; stop:
 * wakeAll; a deferred completion or a session's request: the event loop).
 * Each timed-out Atomics.waitAsync costs V8's delayed-task thread, a
 * platform worker and this thread a wake-up; at 50 ms the idle actors of
 * a daemon serving one block device took a large share of the two vCPUs
 * of the benchmark's emulated guest (bench/README.md).
 */
const IDLE_WAIT_MS = 1000;
/**
 * Before it goes to sleep on the event loop, an idle actor blocks this long
 * in a synchronous Atomics.wait: a wake-up then costs a futex wake, where
 * waking an Atomics.waitAsync sleeper costs a task posted to this thread, an
 * eventfd write and a promise (a profile of the network benchmark showed that path as
 * a quarter of the main thread's time). Control messages wait at most this.
 */
const SYNC_WAIT_MS = 2;
/** A busy actor still turns its event loop this often, so control calls are never starved. */
const YIELD_INTERVAL_MS = 5;
/** The exit status of an actor whose loop died: a bug (EX_SOFTWARE). */
const EXIT_LOOP_DIED = 70;

const ENODEV = ERRNO_BY_CODE.ENODEV;
const EIO = ERRNO_BY_CODE.EIO;

function notify(notice: ActorNotice): void {
  parentPort!.postMessage({ ublksnap_notice: notice });
}

export class IoActor implements QueueHost {
  private readonly ring: Ring;
  private readonly registry = new IoRegistry({
    flush: (area_id) => notify({ type: 'flush', area_id }),
    corrupted: (area_id, errno, message) => notify({ type: 'corrupted', area_id, errno, message }),
    lowSpace: (area_id) => notify({ type: 'low_space', area_id }),
  });
  private readonly parked = Ring.create(PARKED_CAPACITY, REQUEST_WORDS);
  private readonly request = new Int32Array(REQUEST_WORDS);
  private readonly completion = new Int32Array(COMPLETION_WORDS);
  /** Queues that got completions in this batch (their consumers are woken after it). */
  private readonly woken_queues: RegisteredQueue[] = [];
  private readonly sessions: SessionHost;
  private running = true;
  private served = 0;
  private parked_total = 0;
  /** DEFERRED requests whose I/O is still in libuv's thread pool: their callbacks need the event loop. */
  private deferred_count = 0;
  /** Garbage collections in this actor: the benchmark shows the I/O path allocates nothing. */
  private gc_count = 0;
  private readonly gc_observer = new PerformanceObserver((list) => { this.gc_count += list.getEntries().length; });

  /** Runs an actor serving `ring_buffer` with `handle` until stop() comes over comlink. Call once per worker. */
  static run(ring_buffer: SharedArrayBuffer, handle: RequestHandler): void {
    const actor = new IoActor(ring_buffer, handle);
    Comlink.expose(actor.control(), nodeEndpoint(parentPort!));
    void actor.loop().catch((error: unknown) => {
      console.error('ublksnap actor: loop died', error);
      process.exit(EXIT_LOOP_DIED);
    });
  }

  private constructor(ring_buffer: SharedArrayBuffer, private readonly handle: RequestHandler) {
    this.ring = new Ring(ring_buffer);
    assert(this.ring.record_words === REQUEST_WORDS, 'request ring records have the wrong size');
    this.gc_observer.observe({ entryTypes: ['gc'] });
    this.registry.completeLater = (queue_id, tag, errno) => this.completeDeferred(queue_id, tag, errno);
    this.sessions = new SessionHost(this, this.registry, (level, fields, message) => {
      notify({ type: 'log', level, fields, message });
    });
  }

  // ── QueueHost: the queues of hosted sessions ───────────────────────────

  attach(descriptor: QueueDescriptor, wake: () => void): void {
    this.register(descriptor, wake, true);
  }

  /** Maps the queue's ring and slab once; `wake` gets the mapped completion ring. */
  private register(descriptor: QueueDescriptor, wake: (completions: Ring) => void, defer_large_writes: boolean): void {
    const completions = new Ring(descriptor.completions);
    this.registry.queues[descriptor.queue_id] = {
      completions, buffers: new Slab(descriptor.slab), wake_pending: false, wake: () => wake(completions), defer_large_writes,
    };
  }

  detach(queue_id: number): void {
    this.registry.queues[queue_id] = undefined;
  }

  serve(record: Int32Array): void {
    this.complete(record);
    this.wakeQueues();
  }

  // ── serving ────────────────────────────────────────────────────────────

  private complete(request: Int32Array): void {
    const queue = this.registry.queues[request[RequestWord.QUEUE]!];
    // A queue closed while its request was in flight: nobody waits for it.
    if (queue === undefined) return;
    const errno = this.serveOne(request);
    if (errno === PARKED) {
      this.parked.pushCertain(request, 0, false, 'parking (more requests than open tags?)');
      this.parked_total += 1;
      return;
    }
    if (errno === DEFERRED) {
      this.deferred_count += 1;
      return;
    }
    this.pushCompletion(queue, request[RequestWord.TAG]!, errno);
  }

  private serveOne(request: Int32Array): number {
    if (this.registry.volumes[request[RequestWord.VOLUME]!] === undefined) return ENODEV;
    try {
      return this.handle(request, this.registry);
    } catch (error) {
      // Operating errors are errnos inside handle(); reaching here is a bug.
      console.error('ublksnap actor: request failed unexpectedly', error);
      return EIO;
    }
  }

  private pushCompletion(queue: RegisteredQueue, tag: number, errno: number): void {
    this.served += 1;
    packCompletion(this.completion, tag, errno);
    queue.completions.pushCertain(this.completion, 0, false, 'completion (more requests than tags?)');
    if (!queue.wake_pending) {
      queue.wake_pending = true;
      this.woken_queues.push(queue);
    }
  }

  private completeDeferred(queue_id: number, tag: number, errno: number): void {
    this.deferred_count -= 1;
    const queue = this.registry.queues[queue_id];
    if (queue === undefined) return;
    this.pushCompletion(queue, tag, errno);
    this.wakeQueues();
  }

  /** One wake-up per queue per batch, not one per completion. */
  private wakeQueues(): void {
    const woken = this.woken_queues;
    for (let i = 0; i < woken.length; i += 1) {
      const queue = woken[i]!;
      queue.wake_pending = false;
      queue.wake();
    }
    woken.length = 0;
  }

  private retryParked(): void {
    for (let n = this.parked.count; n > 0 && this.parked.tryPop(this.request, 0); n -= 1) this.complete(this.request);
    this.wakeQueues();
  }

  private async loop(): Promise<void> {
    const ring = this.ring;
    const request = this.request;
    let last_yield_ms = Date.now();
    while (this.running) {
      if (this.parked.count > 0) this.retryParked();
      let handled = 0;
      while (handled < BATCH_MAX && ring.tryPop(request, 0)) {
        this.complete(request);
        handled += 1;
      }
      this.wakeQueues();
      if (handled === BATCH_MAX || Date.now() - last_yield_ms >= YIELD_INTERVAL_MS) {
        // Let control messages in, however busy the ring is.
        await new Promise<void>((resolve) => setImmediate(resolve));
        last_yield_ms = Date.now();
      } else if (this.sessions.count === 0 && this.deferred_count === 0 && ring.pop(request, 0, SYNC_WAIT_MS)) {
        this.complete(request);
        this.wakeQueues();
      } else {
        await ring.waitForRecords(IDLE_WAIT_MS);
        last_yield_ms = Date.now();
      }
    }
  }

  // ── control (comlink) ──────────────────────────────────────────────────

  private control(): IoActorControl {
    const registry = this.registry;
    return {
      attachVolume: (volume) => {
        registry.volumes[volume.volume_index] = {
          descriptor: volume,
          control: new Int32Array(volume.control),
          cbt: new CbtMap(volume.cbt),
          reader: new VolumeReader(volume.fd, volume.faults),
          write_hold: volume.write_hold ? new Int32Array(volume.write_hold) : undefined,
        };
      },
      detachVolume: (volume_index) => { registry.volumes[volume_index] = undefined; },
      addArea: (area) => { registry.areas.set(area.area_id, new DiffArea(area, registry)); },
      forgetArea: (area_id) => { registry.areas.delete(area_id); },
      // The queue's consumer is another thread: its doorbell is the ring's (Atomics).
      attachQueue: (queue) => this.register(queue, (completions) => completions.wakeConsumers(), false),
      detachQueue: (queue_id) => this.detach(queue_id),
      hostSession: (session) => this.sessions.host(session),
      drainSession: (session_id) => this.sessions.drain(session_id),
      closeSession: (session_id) => this.sessions.close(session_id),
      stats: () => ({ served: this.served, parked: this.parked_total, gc_count: this.gc_count, sessions: this.sessions.count }),
      stop: () => {
        this.running = false;
        this.sessions.closeAll();
        this.gc_observer.disconnect();
        this.ring.wakeAll();
      },
    };
  }
}

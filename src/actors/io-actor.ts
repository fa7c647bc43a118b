// The body shared by the long-lived I/O actors (cow-read, image-io): a
// registry of what the control plane attached (volumes, diff areas, frontend
// queues), a loop over one request ring, the NBD sessions the actor hosts
// (nbd-session.ts), and the comlink control surface.
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
// the gate opened. The parked ring is sized for every tag of every queue.
//
// Hosted sessions: their requests arrive on this thread's event loop (socket
// reads) and are served at once through serve(); an actor that hosts any
// never blocks its thread in Atomics.wait, or the sockets would wait too.
// The same holds while DEFERRED I/O is in libuv's thread pool: its
// completion callbacks run on this thread's event loop.

import { PerformanceObserver } from 'node:perf_hooks';
import { parentPort } from 'node:worker_threads';
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/umd/node-adapter';
import { assert } from '../shared/assert';
import { CbtMap } from '../shared/cbt-map';
import { ERRNO_BY_CODE } from '../shared/errors';
import { CompletionWord, COMPLETION_WORDS, REQUEST_WORDS, RequestWord } from '../shared/request-record';
import { Ring } from '../shared/ring';
import { Slab } from '../shared/slab';
import { DiffArea, type AreaNotifier } from '../engine/diff-area';
import { VolumeReader } from '../engine/volume-io';
import type { ActorNotice, ActorStats, DiffAreaDescriptor, IoActorControl, QueueDescriptor, VolumeDescriptor } from './messages';
import type { QueueHost } from './local-queue';
import { NbdSessions } from './nbd-session';

/** Requests handled before the loop yields to control messages. */
const BATCH_MAX = 64;
/** An idle actor re-checks its parked requests and stop flag this often. */
const IDLE_WAIT_MS = 50;
/**
 * Before it goes to sleep on the event loop, an idle actor blocks this long
 * in a synchronous Atomics.wait: a wake-up then costs a futex wake, where
 * waking an Atomics.waitAsync sleeper costs a task posted to this thread, an
 * eventfd write and a promise (the profile of bench/nbd showed that path as
 * a quarter of the main thread's time). Control messages wait at most this.
 */
const SYNC_WAIT_MS = 2;
/** A busy actor still turns its event loop this often, so control calls are never starved. */
const YIELD_INTERVAL_MS = 5;
/** Parked writes: at most every tag of every queue at once. */
const PARKED_CAPACITY = 8192;

export interface ActorVolume {
  descriptor: VolumeDescriptor;
  control: Int32Array;
  cbt: CbtMap;
  reader: VolumeReader;
}

export interface ActorQueue {
  completions: Ring;
  buffers: Slab;
  /** Completions were pushed since the last wake-up. */
  wake_pending: boolean;
  /** Tells the queue's consumer that completions wait. */
  wake: () => void;
}

/** What a concrete actor does with one request. Returns an errno, PARKED or DEFERRED. */
export type RequestHandler = (request: Int32Array, registry: ActorRegistry) => number;
export const PARKED = -1;
/** The handler finishes the request later and reports it through registry.completeLater. */
export const DEFERRED = -2;

export class ActorRegistry implements AreaNotifier {
  readonly volumes: (ActorVolume | undefined)[] = [];
  readonly areas = new Map<number, DiffArea>();
  readonly queues: (ActorQueue | undefined)[] = [];
  /** Completes a request its handler DEFERRED (set by runIoActor). */
  completeLater: (queue_id: number, tag: number, errno: number) => void = () => undefined;

  flush(area_id: number): void {
    notify({ type: 'flush', area_id });
  }

  corrupted(area_id: number, errno: number, message: string): void {
    notify({ type: 'corrupted', area_id, errno, message });
  }
}

function notify(notice: ActorNotice): void {
  parentPort!.postMessage({ ublksnap_notice: notice });
}

const ENODEV = ERRNO_BY_CODE.ENODEV;

/**
 * Runs the actor: serves `ring` with `handle` until stop() is called over
 * comlink. Call once, from the worker's entry file.
 */
export function runIoActor(ring_buffer: SharedArrayBuffer, handle: RequestHandler): void {
  const ring = new Ring(ring_buffer);
  assert(ring.record_words === REQUEST_WORDS, 'request ring records have the wrong size');
  const registry = new ActorRegistry();
  const parked = Ring.create(PARKED_CAPACITY, REQUEST_WORDS);
  const request = new Int32Array(REQUEST_WORDS);
  const completion = new Int32Array(COMPLETION_WORDS);
  /** Queues that got completions in this batch (their consumers are woken after it). */
  const woken_queues: ActorQueue[] = [];
  let running = true;
  let served = 0;
  let parked_total = 0;
  /** DEFERRED requests whose I/O is still in libuv's thread pool: their callbacks need the event loop. */
  let deferred_count = 0;
  // Garbage collections in this actor: the benchmark shows the I/O path allocates nothing.
  let gc_count = 0;
  const gc_observer = new PerformanceObserver((list) => { gc_count += list.getEntries().length; });
  gc_observer.observe({ entryTypes: ['gc'] });

  function complete(request: Int32Array): void {
    const queue = registry.queues[request[RequestWord.QUEUE]!];
    // A queue closed while its request was in flight: nobody waits for it.
    if (queue === undefined) return;
    completion[CompletionWord.TAG] = request[RequestWord.TAG]!;
    completion[CompletionWord.ERRNO] = serveOne(request);
    if (completion[CompletionWord.ERRNO] === PARKED) {
      parked.pushCertain(request, 0, false, `parking (more than ${PARKED_CAPACITY} requests?)`);
      parked_total += 1;
      return;
    }
    if (completion[CompletionWord.ERRNO] === DEFERRED) {
      deferred_count += 1;
      return;
    }
    pushCompletion(queue);
  }

  function pushCompletion(queue: ActorQueue): void {
    served += 1;
    queue.completions.pushCertain(completion, 0, false, 'completion (more requests than tags?)');
    if (!queue.wake_pending) {
      queue.wake_pending = true;
      woken_queues.push(queue);
    }
  }

  registry.completeLater = (queue_id, tag, errno) => {
    deferred_count -= 1;
    const queue = registry.queues[queue_id];
    if (queue === undefined) return;
    completion[CompletionWord.TAG] = tag;
    completion[CompletionWord.ERRNO] = errno;
    pushCompletion(queue);
    wakeQueues();
  };

  /** One wake-up per queue per batch, not one per completion. */
  function wakeQueues(): void {
    for (let i = 0; i < woken_queues.length; i += 1) {
      const queue = woken_queues[i]!;
      queue.wake_pending = false;
      queue.wake();
    }
    woken_queues.length = 0;
  }

  function serveOne(request: Int32Array): number {
    if (registry.volumes[request[RequestWord.VOLUME]!] === undefined) return ENODEV;
    try {
      return handle(request, registry);
    } catch (error) {
      // Operating errors are errnos inside handle(); reaching here is a bug.
      console.error('ublksnap actor: request failed unexpectedly', error);
      return ERRNO_BY_CODE.EIO;
    }
  }

  function retryParked(): void {
    for (let n = parked.count; n > 0 && parked.tryPop(request, 0); n -= 1) complete(request);
    wakeQueues();
  }

  async function loop(): Promise<void> {
    let last_yield_ms = Date.now();
    while (running) {
      if (parked.count > 0) retryParked();
      let handled = 0;
      while (handled < BATCH_MAX && ring.tryPop(request, 0)) {
        complete(request);
        handled += 1;
      }
      wakeQueues();
      if (handled === BATCH_MAX || Date.now() - last_yield_ms >= YIELD_INTERVAL_MS) {
        // Let control messages in, however busy the ring is.
        await new Promise<void>((resolve) => setImmediate(resolve));
        last_yield_ms = Date.now();
      } else if (sessions.count === 0 && deferred_count === 0 && ring.pop(request, 0, SYNC_WAIT_MS)) {
        complete(request);
        wakeQueues();
      } else {
        await ring.waitForRecords(IDLE_WAIT_MS);
        last_yield_ms = Date.now();
      }
    }
  }

  const queue_host: QueueHost = {
    attach(descriptor, wake) {
      attachQueue(descriptor, wake);
    },
    detach(queue_id) {
      registry.queues[queue_id] = undefined;
    },
    serve(record) {
      complete(record);
      wakeQueues();
    },
  };
  const sessions = new NbdSessions(queue_host, registry, (level, fields, message) => {
    notify({ type: 'log', level, fields, message });
  });

  function attachQueue(descriptor: QueueDescriptor, wake: (completions: Ring) => void): void {
    const completions = new Ring(descriptor.completions);
    registry.queues[descriptor.queue_id] = {
      completions, buffers: new Slab(descriptor.slab), wake_pending: false, wake: () => wake(completions),
    };
  }

  const control: IoActorControl = {
    attachVolume(volume: VolumeDescriptor): void {
      registry.volumes[volume.volume_index] = {
        descriptor: volume,
        control: new Int32Array(volume.control),
        cbt: new CbtMap(volume.cbt),
        reader: new VolumeReader(volume.fd, volume.faults),
      };
    },
    detachVolume(volume_index: number): void {
      registry.volumes[volume_index] = undefined;
    },
    addArea(area: DiffAreaDescriptor): void {
      registry.areas.set(area.area_id, new DiffArea(area, registry));
    },
    forgetArea(area_id: number): void {
      registry.areas.delete(area_id);
    },
    attachQueue(queue: QueueDescriptor): void {
      // The queue's consumer is another thread: wake it through the ring.
      attachQueue(queue, (completions) => completions.wakeConsumers());
    },
    detachQueue(queue_id: number): void {
      registry.queues[queue_id] = undefined;
    },
    hostNbdSession(session) {
      return sessions.host(session);
    },
    drainNbdSession(session_id: number): void {
      sessions.drain(session_id);
    },
    closeNbdSession(session_id: number): void {
      sessions.close(session_id);
    },
    stats(): ActorStats {
      return { served, parked: parked_total, gc_count, sessions: sessions.count };
    },
    stop(): void {
      running = false;
      sessions.closeAll();
      gc_observer.disconnect();
      ring.wakeAll();
    },
  };
  Comlink.expose(control, nodeEndpoint(parentPort!));
  void loop().catch((error: unknown) => {
    console.error('ublksnap actor: loop died', error);
    process.exit(70);
  });
}

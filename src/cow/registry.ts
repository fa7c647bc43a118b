// What an I/O thread knows of the engine's shared memory: the attached
// volumes, the diff areas, and the frontend queues whose requests it serves,
// each mapped once from its descriptor (shared/descriptors.ts). The request
// handlers (volume-requests.ts, image-requests.ts) read it per request; the
// actor fills it from control messages.

import type { CbtMap } from '../shared/cbt-map';
import type { VolumeDescriptor } from '../shared/descriptors';
import type { Ring } from '../shared/ring';
import type { Slab } from '../shared/slab';
import type { AreaNotifier, DiffArea } from './diff-area';
import type { VolumeReader } from './volume-io';

export interface RegisteredVolume {
  descriptor: VolumeDescriptor;
  control: Int32Array;
  cbt: CbtMap;
  reader: VolumeReader;
  /** Tests only (shared/write-hold.ts): undefined unless the engine injects faults. */
  write_hold: Int32Array | undefined;
}

export interface RegisteredQueue {
  completions: Ring;
  buffers: Slab;
  /** Completions were pushed since the last wake-up. */
  wake_pending: boolean;
  /** Tells the queue's consumer that completions wait (its doorbell: ring.ts). */
  wake: () => void;
  /**
   * Large writes of this queue go to libuv's thread pool (volume-requests.ts):
   * true for the queues of sessions the actor hosts, which have a socket to
   * read meanwhile; false for request rings, whose other requests the
   * pool's other actors take anyway.
   */
  defer_large_writes: boolean;
}

/**
 * What a handler does with one request: returns an errno (0 = done), or
 * PARKED (a frozen gate: retry after the thaw), or DEFERRED (the I/O went to
 * libuv's thread pool; the handler reports it through completeLater).
 */
export type RequestHandler = (request: Int32Array, registry: IoRegistry) => number;
export const PARKED = -1;
export const DEFERRED = -2;

export class IoRegistry implements AreaNotifier {
  readonly volumes: (RegisteredVolume | undefined)[] = [];
  readonly areas = new Map<number, DiffArea>();
  readonly queues: (RegisteredQueue | undefined)[] = [];
  /** Completes a request its handler DEFERRED (set by the thread's loop). */
  completeLater: (queue_id: number, tag: number, errno: number) => void = () => undefined;

  constructor(private readonly notifier: AreaNotifier) {}

  flush(area_id: number): void {
    this.notifier.flush(area_id);
  }

  corrupted(area_id: number, errno: number, message: string): void {
    this.notifier.corrupted(area_id, errno, message);
  }

  lowSpace(area_id: number): void {
    this.notifier.lowSpace(area_id);
  }
}

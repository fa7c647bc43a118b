// The contract between a frontend and whoever serves its requests: a queue
// of tags, one request-buffer slot per tag, completions by tag. Every
// frontend drives this one interface; the engine
// and the I/O actors implement it (tagged-queue.ts and its subclasses).
//
// A tag is a request slot: the frontend owns tags 0..depth-1, puts a
// write's payload in buffer(tag) before submit, and finds a read's data
// there on completion. A tag is reused only after its completion was
// delivered. Nothing on this path allocates.

import type { IoOp } from './request-record';

export interface IoQueue {
  readonly queue_id: number;
  readonly depth: number;
  readonly max_io_bytes: number;
  buffer(tag: number): Uint8Array;
  /** The slots' memory: native code may address a slot directly (data_offset + tag × slot_bytes). */
  readonly slab: { data: SharedArrayBuffer; data_offset: number; slot_bytes: number };
  submit(tag: number, op: IoOp, target_handle: number, offset_bytes: number, length_bytes: number, flags: number): void;
  /** Called once per completed request on the submitting thread; errno 0 = success. */
  onComplete(handler: (tag: number, errno: number) => void): void;
  close(): Promise<void>;
}

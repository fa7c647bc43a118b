// The buffer slab: a fixed number of equally sized buffers in one
// SharedArrayBuffer, with a free list, allocated once and recycled forever.
// Chunk copies (the store queue's data) and request payloads live here, so
// a worker, the main thread and the native addon all reach the same bytes
// by slot index, and nothing on the I/O path allocates.
//
// Layout:
//
//   data: SharedArrayBuffer
//     [0, data_offset)                          padding up to the alignment
//     [data_offset + i × slot_bytes, + slot_bytes)   slot i, i < slot_count
//   free: a Ring (ring.ts) of one-word records, each a free slot index
//
// Protocol: alloc pops a slot index from the free ring, free pushes it back.
// The ring is as large as the slot count, so a free never finds it full
// for longer than a consumer's preemption (ring.ts, pushCertain); a slot
// freed twice would, and asserts.
//
// data_offset makes every slot start on an alignment boundary in memory
// (O_DIRECT needs 512 or 4096): the caller measures it with the addon's
// alignedOffset(), because JavaScript cannot see addresses.

import { assert, assertIndex } from './assert';
import { Ring } from './ring';
import { PAGE_BYTES, isPowerOfTwo } from './units';

export interface SlabBuffers {
  data: SharedArrayBuffer;
  free: SharedArrayBuffer;
  slot_bytes: number;
  slot_count: number;
  data_offset: number;
}

export class Slab {
  readonly slot_bytes: number;
  readonly slot_count: number;
  private readonly free: Ring;
  private readonly views: Uint8Array[];
  private readonly record = new Int32Array(1);

  /**
   * Allocates a slab. `alignedOffset(buffer, alignment)` finds the first
   * aligned byte of the new buffer; without it slots are only as aligned as
   * V8 made the buffer (enough for buffered I/O, not for O_DIRECT).
   */
  static create(slot_bytes: number, slot_count: number,
    alignedOffset?: (buffer: SharedArrayBuffer, alignment_bytes: number) => number): Slab {
    assert(isPowerOfTwo(slot_bytes) || slot_bytes % PAGE_BYTES === 0,
      `slab slots must be a power of two or whole pages, got ${slot_bytes} bytes`);
    assert(Number.isInteger(slot_count) && slot_count >= 1, `slab needs at least one slot, got ${slot_count}`);
    const data = new SharedArrayBuffer(slot_bytes * slot_count + PAGE_BYTES);
    const data_offset = alignedOffset ? alignedOffset(data, PAGE_BYTES) : 0;
    assert(data_offset >= 0 && data_offset < PAGE_BYTES, `aligned offset ${data_offset} outside the padding`);
    let ring_capacity = 1;
    while (ring_capacity < slot_count) ring_capacity *= 2;
    const free = Ring.create(ring_capacity, 1);
    const slab = new Slab({ data, free: free.buffer, slot_bytes, slot_count, data_offset });
    for (let slot = 0; slot < slot_count; slot += 1) slab.release(slot);
    return slab;
  }

  constructor(readonly buffers: SlabBuffers) {
    this.slot_bytes = buffers.slot_bytes;
    this.slot_count = buffers.slot_count;
    assert(buffers.data.byteLength >= buffers.data_offset + this.slot_bytes * this.slot_count,
      'slab buffer is smaller than its slots');
    this.free = new Ring(buffers.free);
    // One view per slot, made once per thread: the I/O path indexes, never allocates.
    this.views = [];
    for (let slot = 0; slot < this.slot_count; slot += 1) {
      this.views.push(new Uint8Array(buffers.data, buffers.data_offset + slot * this.slot_bytes, this.slot_bytes));
    }
  }

  /** A free slot index, or -1 when every slot is in use. */
  tryAlloc(): number {
    return this.free.tryPop(this.record, 0) ? this.record[0]! : -1;
  }

  /** A free slot index, waiting up to timeout_ms for one; -1 on timeout. */
  alloc(timeout_ms: number): number {
    return this.free.pop(this.record, 0, timeout_ms) ? this.record[0]! : -1;
  }

  release(slot: number): void {
    assertIndex(slot, this.slot_count, 'slab slot');
    this.record[0] = slot;
    this.free.pushCertain(this.record, 0, true, `release of slab slot ${slot} (released twice?)`);
  }

  /** The whole slot as bytes (a view made at attach time). */
  view(slot: number): Uint8Array {
    return this.views[slot]!;
  }

  /** Byte offset of the slot in buffers.data, for the native side. */
  byteOffset(slot: number): number {
    return this.buffers.data_offset + slot * this.slot_bytes;
  }

  get free_count(): number {
    return this.free.count;
  }
}

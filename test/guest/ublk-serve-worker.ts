// The worker side of native-queue.guest.ts: serves one ublk queue over a
// backing file with synchronous fs calls, from the worker's event loop.
//
// A reference for how the engine drives UblkQueue: records are read in the
// callback, every request is committed (bytes, 0, or -errno; never
// -EAGAIN), and one submit() ends the batch.

import { closeSync, fdatasyncSync, openSync, readSync, writeSync } from 'node:fs';
import os from 'node:os';
import type { MessagePort } from 'node:worker_threads';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocate } from '../../src/native/index';
import * as ublk from '../../src/native/ublk';

export interface ServeData {
  dev_id: number;
  queue_id: number;
  queue_depth: number;
  slot_bytes: number;
  buffer: SharedArrayBuffer;
  backing_file: string;
  flags: bigint;
  /** Host the queue's io_uring on a native thread (UblkQueueOptions.native_thread). */
  native_thread: boolean;
}

const SECTOR_BYTES = 512;
const UINT32_SPAN = 2 ** 32;
/** How long the tags may take to see ABORT after STOP_DEV, and how often to look. */
const ABORT_WAIT_MS = 10_000;
const ABORT_POLL_MS = 10;

/** The positive errno of a thrown fs or native error; EIO when unknown. */
function errnoOf(error: unknown): number {
  const code = (error as { code?: unknown }).code;
  const number = typeof code === 'string' ? (os.constants.errno as Record<string, number>)[code] : undefined;
  return number ?? os.constants.errno.EIO;
}

/** Serves one request; returns what to commit. */
function serveOne(fd: number, op: number, flags: number, slot: Uint8Array, position: number, bytes: number): number {
  switch (op) {
    case ublk.UBLK_IO_OP_READ: {
      const view = slot.subarray(0, bytes);
      const done = readSync(fd, view, 0, bytes, position);
      if (done < bytes) view.fill(0, done);  // past the backing file's end: zeros
      return bytes;
    }
    case ublk.UBLK_IO_OP_WRITE: {
      let done = 0;
      while (done < bytes) done += writeSync(fd, slot, done, bytes - done, position + done);
      if (flags & ublk.UBLK_IO_F_FUA) fdatasyncSync(fd);
      return bytes;
    }
    case ublk.UBLK_IO_OP_FLUSH:
      fdatasyncSync(fd);
      return 0;
    case ublk.UBLK_IO_OP_DISCARD:
      fallocate(fd, position, bytes, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
      return 0;
    case ublk.UBLK_IO_OP_WRITE_ZEROES: {
      // The kernel loop driver's rule: NOUNMAP keeps the blocks allocated.
      const mode = flags & ublk.UBLK_IO_F_NOUNMAP ? FALLOC_FL_ZERO_RANGE : FALLOC_FL_PUNCH_HOLE;
      fallocate(fd, position, bytes, mode | FALLOC_FL_KEEP_SIZE);
      return 0;
    }
    default:
      return -os.constants.errno.EOPNOTSUPP;
  }
}

/**
 * Commits the queue must refuse with a TypeError, without harm: the tag just
 * committed again, a tag out of range, a fractional result. Returns how many
 * were refused that way (3 when all were).
 */
function checkMisuse(queue: ublk.UblkQueue, committed_tag: number, depth: number): number {
  const attempts: Array<[number, number]> = [[committed_tag, 0], [depth, 0], [committed_tag, 0.5]];
  let refused = 0;
  for (const [tag, result] of attempts) {
    try {
      queue.commit(tag, result);
    } catch (error) {
      if (error instanceof TypeError) refused += 1;
    }
  }
  return refused;
}

/**
 * serveDirect refuses what is not a volume: a missing buffer, a control
 * block too small, a CBT buffer that is not a map (either hosting).
 * Returns how many TypeErrors.
 */
function checkDirectMisuse(queue: ublk.UblkQueue, fd: number): number {
  const control = new SharedArrayBuffer(32);
  const cbt = new SharedArrayBuffer(64 + 2 * 16);
  new Int32Array(cbt, 0, 4).set([0, 0, 16, 16]);  // 64 KiB blocks, 16 of them
  const attempts: unknown[] = [{ fd, capacity_bytes: 1 << 20, cbt }, { fd, capacity_bytes: 1 << 20, control: new SharedArrayBuffer(8), cbt },
    { fd, capacity_bytes: 1 << 20, control, cbt: new SharedArrayBuffer(64) }];
  let refused = 0;
  for (const volume of attempts) {
    try {
      queue.serveDirect(volume as ublk.DirectVolumeSpec);
    } catch (error) {
      if (error instanceof TypeError) refused += 1;
    }
  }
  queue.serveDirect(null);
  return refused;
}

export function serveQueue(data: ServeData, port: MessagePort): void {
  const fd = openSync(data.backing_file, 'r+');
  const requests = new Int32Array(data.queue_depth * ublk.REQUEST_WORDS);
  const queue = new ublk.UblkQueue({
    dev_id: data.dev_id, queue_id: data.queue_id, queue_depth: data.queue_depth, slot_bytes: data.slot_bytes,
    buffer: data.buffer, buffer_offset_bytes: 0, requests, flags: data.flags, native_thread: data.native_thread,
  });
  const slots = Array.from({ length: data.queue_depth },
    (_, tag) => new Uint8Array(data.buffer, tag * data.slot_bytes, data.slot_bytes));
  let batches = 0;
  let misuse_checks: number | undefined;
  const direct_misuse_checks = checkDirectMisuse(queue, fd);
  queue.start((count) => {
    batches += 1;
    for (let index = 0; index < count; index += 1) {
      const base = index * ublk.REQUEST_WORDS;
      const tag = requests[base + ublk.REQUEST_TAG];
      const sectors = requests[base + ublk.REQUEST_NR_SECTORS] >>> 0;
      const start = (requests[base + ublk.REQUEST_START_SECTOR_LOW] >>> 0) +
        (requests[base + ublk.REQUEST_START_SECTOR_HIGH] >>> 0) * UINT32_SPAN;
      let result: number;
      try {
        result = serveOne(fd, requests[base + ublk.REQUEST_OP], requests[base + ublk.REQUEST_FLAGS], slots[tag],
          start * SECTOR_BYTES, sectors * SECTOR_BYTES);
      } catch (error) {
        result = -errnoOf(error);
      }
      queue.commit(tag, result);
      if (misuse_checks === undefined) misuse_checks = checkMisuse(queue, tag, data.queue_depth);
    }
    queue.submit();
  });
  // After STOP_DEV every tag completes with ABORT, as task work to this
  // thread; close once all have (or after a bound).
  const closeWhenAborted = (deadline: number): void => {
    const before = queue.stats();
    if (before.aborted + before.failed < data.queue_depth && Date.now() < deadline) {
      setTimeout(() => closeWhenAborted(deadline), ABORT_POLL_MS);
      return;
    }
    const stats = { ...before, native_thread: before.native_thread ? 1 : 0, batches, misuse_checks: misuse_checks ?? 0, direct_misuse_checks };
    queue.close();
    queue.close();  // idempotent
    closeSync(fd);
    port.postMessage({ kind: 'closed', stats });
    port.close();
  };
  port.on('message', (message: { kind: string }) => {
    if (message.kind === 'close') closeWhenAborted(Date.now() + ABORT_WAIT_MS);
  });
  port.postMessage({ kind: 'serving' });
}

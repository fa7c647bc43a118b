// One I/O thread of the ublk contract driver (ublk.ts): synchronous pread,
// pwrite and fdatasync on an O_DIRECT descriptor of /dev/ublkbN, one request
// at a time, through an aligned bounce buffer the driver shares with it.
//
// Why threads of our own, not fs.read/fs.write on libuv's pool: a request to
// /dev/ublkbN blocks its thread until the engine serves it, and the engine's
// actors use the same process-wide libuv pool for their deferred writes. Four
// pool threads stuck in our pwrites, with the engine's write that would
// release them queued behind, is a deadlock; threads of our own cannot
// starve the engine.
//
//   driver (main thread) ──postMessage {id, op, fd, offset, length}──► this thread
//        data in the shared bounce (aligned view), copied in/out by the driver
//   driver ◄── {id, errno, bytes} (errno 0 on success) ──────────────────────

import { fdatasyncSync, readSync, writeSync } from 'node:fs';
import { constants as os_constants } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';

export type UblkIoOp = 'read' | 'write' | 'flush';

export interface UblkIoRequest {
  id: number;
  op: UblkIoOp;
  fd: number;
  offset_bytes: number;
  length_bytes: number;
}

export interface UblkIoReply {
  id: number;
  /** 0 on success, else the positive errno the system call failed with. */
  errno: number;
  /** Bytes read or written (0 for flush). */
  bytes: number;
  /** The error's own text, for the failure message. */
  message: string;
}

export interface UblkIoWorkerData {
  bounce: SharedArrayBuffer;
  /** Where the aligned part of the bounce starts, and its length. */
  aligned_offset_bytes: number;
  aligned_length_bytes: number;
}

/** The positive errno of a failed fs call (Node's own errors carry it negative, with the code). */
function errnoOf(error: unknown): number {
  const code = (error as NodeJS.ErrnoException).code;
  const by_code = code === undefined ? undefined : (os_constants.errno as Record<string, number>)[code];
  if (by_code !== undefined) return by_code;
  const errno = (error as NodeJS.ErrnoException).errno;
  if (typeof errno === 'number' && errno !== 0) return Math.abs(errno);
  throw error;
}

function serve(data: UblkIoWorkerData): void {
  const port = parentPort;
  if (port === null) throw new Error('ublk-io-worker runs as a worker thread only');
  const view = new Uint8Array(data.bounce, data.aligned_offset_bytes, data.aligned_length_bytes);
  port.on('message', (request: UblkIoRequest) => {
    const { id, op, fd, offset_bytes, length_bytes } = request;
    let reply: UblkIoReply;
    try {
      let bytes = 0;
      if (op === 'read') bytes = readSync(fd, view, 0, length_bytes, offset_bytes);
      else if (op === 'write') bytes = writeSync(fd, view, 0, length_bytes, offset_bytes);
      else fdatasyncSync(fd);
      reply = { id, errno: 0, bytes, message: '' };
    } catch (error) {
      reply = { id, errno: errnoOf(error), bytes: 0, message: (error as Error).message };
    }
    port.postMessage(reply);
  });
}

serve(workerData as UblkIoWorkerData);

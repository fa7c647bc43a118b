// Requests to live volumes: the one copy-on-write write path. Before a write
// (or discard, or write-zeroes) reaches a volume held by a taken snapshot,
// the chunks it covers are copied (diff-area.ts, copyBeforeWrite); then the
// CBT is marked and the write goes through. Reads and flushes go straight
// to the volume.
//
//   request ring ──► [gate] ──► copy-before-write ──► mark CBT ──► volume ──► completion ring
//
// Runs in the cow actors (actors/cow-read.ts), for ring requests and hosted
// sessions alike.

import { fdatasync, fallocate, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE } from '../native';
import { ERRNO_BY_CODE, errnoOf } from '../shared/errors';
import { IoFlags, IoOp, readOffset, RequestWord } from '../shared/request-record';
import { SECTOR_BYTES } from '../shared/units';
import { ARMED_AREA, enterWriteGate, leaveWriteGate, NO_AREA } from '../shared/volume-control';
import { claimWriteHold, holdUntilReleased } from '../shared/write-hold';
import { readFully, writeFully, writeFullyLater, writeZeros } from './volume-io';
import { DEFERRED, PARKED, type IoRegistry, type RegisteredVolume } from './registry';

const EINVAL = ERRNO_BY_CODE.EINVAL;
const ENOTSUP = ERRNO_BY_CODE.ENOTSUP;
/**
 * Writes at least this large from a hosted session's queue go to libuv's
 * thread pool: the actor reads the next request from its socket while the
 * kernel copies this one (nbdkit gets the same overlap from its threads).
 * Smaller ones are written in place: the hand-off would cost more than it
 * saves. So are all writes from a request ring: the other actors of the
 * pool serve its next requests meanwhile, and the hand-off only added
 * threads writing one file (engine bench, 1 MiB writes on the fast path:
 * 0.69-0.76× the plain loop deferred, 0.90-0.95× in place; bench/README.md).
 */
const DEFERRED_WRITE_BYTES_MIN = 256 * 1024;

export function handleVolumeRequest(request: Int32Array, registry: IoRegistry): number {
  const volume = registry.volumes[request[RequestWord.VOLUME]!]!;
  const op = request[RequestWord.OP]! as IoOp;
  const offset = readOffset(request);
  const length = request[RequestWord.LENGTH]!;
  if (offset + length > volume.descriptor.capacity_bytes || length < 0) return EINVAL;
  switch (op) {
    case IoOp.READ: {
      const queue = registry.queues[request[RequestWord.QUEUE]!]!;
      try {
        readFully(volume.descriptor.fd, queue.buffers.view(request[RequestWord.TAG]!), 0, length, offset);
        return 0;
      } catch (error) {
        return errnoOf(error);
      }
    }
    case IoOp.FLUSH:
      try {
        fdatasync(volume.descriptor.fd);
        return 0;
      } catch (error) {
        return errnoOf(error);
      }
    case IoOp.WRITE:
    case IoOp.DISCARD:
    case IoOp.WRITE_ZEROES:
      return write(request, registry, volume, op, offset, length);
    default:
      return EINVAL;
  }
}

function write(request: Int32Array, registry: IoRegistry, volume: RegisteredVolume, op: IoOp,
  offset: number, length: number): number {
  if (!enterWriteGate(volume.control)) return PARKED;
  // Tests only: a held write waits inside the gate (shared/write-hold.ts). It
  // keeps a copy of its record: the actor reuses the one it was given.
  if (volume.write_hold !== undefined && claimWriteHold(volume.write_hold)) {
    const held = request.slice();
    holdUntilReleased(volume.write_hold, () => {
      const errno = writeInsideGate(held, registry, volume, op, offset, length);
      if (errno !== DEFERRED) registry.completeLater(held[RequestWord.QUEUE]!, held[RequestWord.TAG]!, errno);
    });
    return DEFERRED;
  }
  return writeInsideGate(request, registry, volume, op, offset, length);
}

/** The write itself, once the gate let it in; leaves the gate when done (a deferred write when it lands). */
function writeInsideGate(request: Int32Array, registry: IoRegistry, volume: RegisteredVolume, op: IoOp,
  offset: number, length: number): number {
  let deferred = false;
  try {
    const area_id = Atomics.load(volume.control, ARMED_AREA);
    if (area_id !== NO_AREA) registry.areas.get(area_id)?.copyBeforeWrite(volume.reader, offset, length);
    const first_sector = Math.floor(offset / SECTOR_BYTES);
    volume.cbt.mark(first_sector, Math.ceil((offset + length) / SECTOR_BYTES) - first_sector);
    const fd = volume.descriptor.fd;
    const flags = request[RequestWord.FLAGS]!;
    if (op === IoOp.WRITE) {
      const queue_id = request[RequestWord.QUEUE]!;
      const tag = request[RequestWord.TAG]!;
      const queue = registry.queues[queue_id]!;
      const source = queue.buffers.view(tag);
      if (length >= DEFERRED_WRITE_BYTES_MIN && (flags & IoFlags.FUA) === 0 && queue.defer_large_writes) {
        deferred = true;
        writeFullyLater(fd, source, 0, length, offset, (error) => {
          leaveWriteGate(volume.control);
          registry.completeLater(queue_id, tag, error === null ? 0 : errnoOf(error));
        });
        return DEFERRED;
      }
      writeFully(fd, source, 0, length, offset);
    } else {
      zeroRange(fd, op, offset, length, flags);
    }
    if ((flags & IoFlags.FUA) !== 0) fdatasync(fd);
    return 0;
  } catch (error) {
    return errnoOf(error);
  } finally {
    // A deferred write holds the gate until it lands: take and destroy wait for it.
    if (!deferred) leaveWriteGate(volume.control);
  }
}

/**
 * DISCARD punches a hole (advisory: where the storage cannot, the data
 * stays). WRITE_ZEROES must leave zeros: punch when unmapping is allowed,
 * else zero the range, else write zeros.
 */
function zeroRange(fd: number, op: IoOp, offset: number, length: number, flags: number): void {
  if (length === 0) return;
  const punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  if (op === IoOp.DISCARD) {
    try {
      fallocate(fd, offset, length, punch);
    } catch (error) {
      // Not supported: a discard is only a hint, the data may stay. Any
      // other failure (EIO, EROFS, …) is the client's to know.
      if (errnoOf(error) !== ENOTSUP) throw error;
    }
    return;
  }
  try {
    fallocate(fd, offset, length, (flags & IoFlags.MAY_UNMAP) !== 0 ? punch : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE);
    return;
  } catch (error) {
    // Not supported: the storage cannot zero ranges; write the zeros below.
    if (errnoOf(error) !== ENOTSUP) throw error;
  }
  writeZeros(fd, offset, length);
}

// Requests to snapshot images, served by the image actors (actors/image-io.ts). Reads and writes
// go through the diff area (diff-area.ts, imageRead / imageWrite): per
// chunk from the volume, a chunk buffer or the difference storage. Image
// writes never reach the volume. Every request first passes the image gate,
// so a destroyed snapshot's image answers EIO and destroy can wait for the
// image I/O in flight to drain.

import { ERRNO_BY_CODE } from '../shared/errors';
import { IoOp, readOffset, RequestWord } from '../shared/request-record';
import { IMAGE_AREA, enterImageGate, leaveImageGate } from '../shared/volume-control';
import { ZERO_BUFFER, ZERO_BUFFER_BYTES } from './volume-io';
import type { IoRegistry } from './registry';

const EIO = ERRNO_BY_CODE.EIO;
const EINVAL = ERRNO_BY_CODE.EINVAL;

export function handleImageRequest(request: Int32Array, registry: IoRegistry): number {
  const volume = registry.volumes[request[RequestWord.VOLUME]!]!;
  const offset = readOffset(request);
  const length = request[RequestWord.LENGTH]!;
  if (offset + length > volume.descriptor.capacity_bytes || length < 0) return EINVAL;
  if (!enterImageGate(volume.control, request[RequestWord.SERIAL]!)) return EIO;
  try {
    const area = registry.areas.get(Atomics.load(volume.control, IMAGE_AREA));
    if (area === undefined) return EIO;
    const queue = registry.queues[request[RequestWord.QUEUE]!]!;
    const buffer = queue.buffers.view(request[RequestWord.TAG]!);
    switch (request[RequestWord.OP]! as IoOp) {
      case IoOp.READ:
        return area.imageRead(volume.reader, buffer, offset, length);
      case IoOp.WRITE:
        return area.imageWrite(volume.reader, buffer, offset, length);
      case IoOp.WRITE_ZEROES:
      case IoOp.DISCARD:
        // An image has no holes to punch: both leave zeros, through the buffers.
        for (let done = 0; done < length; done += ZERO_BUFFER_BYTES) {
          const piece = Math.min(ZERO_BUFFER_BYTES, length - done);
          const errno = area.imageWrite(volume.reader, ZERO_BUFFER, offset + done, piece);
          if (errno !== 0) return errno;
        }
        return 0;
      case IoOp.FLUSH:
        // Image data lives only as long as the snapshot: nothing to make durable.
        return area.healthy ? 0 : EIO;
      default:
        return EINVAL;
    }
  } finally {
    leaveImageGate(volume.control);
  }
}

// The image files themselves: filled with non-zero random data (every page
// allocated on tmpfs, nothing a server could skip as a hole or as zeroes),
// and checksummed directly while their server is idle.

import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';

const PIECE_BYTES = 4 * 1024 * 1024;
export const CHECKSUM_ALGORITHM = 'sha256';

/** Writes `bytes` of random data to file (created or truncated). */
export function fillRandom(file: string, bytes: number): void {
  const piece = Buffer.allocUnsafe(PIECE_BYTES);
  const fd = openSync(file, 'w');
  try {
    for (let offset = 0; offset < bytes; offset += PIECE_BYTES) {
      randomFillSync(piece);
      writeSync(fd, piece, 0, Math.min(PIECE_BYTES, bytes - offset), offset);
    }
  } finally {
    closeSync(fd);
  }
}

/** The checksum of a file read directly (the volume before take). */
export function fileChecksum(file: string): string {
  const hash = createHash(CHECKSUM_ALGORITHM);
  const piece = Buffer.allocUnsafe(PIECE_BYTES);
  const fd = openSync(file, 'r');
  try {
    for (;;) {
      const count = readSync(fd, piece, 0, PIECE_BYTES, null);
      if (count === 0) break;
      hash.update(piece.subarray(0, count));
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

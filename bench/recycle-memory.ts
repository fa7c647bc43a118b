// Memory the guest wrote a moment ago, for the next storage to allocate.
//
// This machine is a VM whose host backs guest memory lazily and takes freed
// memory back (free page reporting is on): the first write into a page the
// guest has not used lately can cost ten times a plain copy. A C loop (read
// 1 MiB of the volume, write it to a fresh tmpfs storage, write the volume)
// ran at 4.3 GB/s in rounds whose storage reused the last round's pages and
// at 0.97 GB/s in its first round; the engine bench's first-touch rounds
// fell to 0.06× the plain loop, the NBD bench's one write per 256 KiB chunk
// to 0.03× the no-snapshot server (bench/README.md, "Recycled memory in the
// NBD rows"), with the time in the kernel's copy into the storage's pages.
// A no-snapshot row overwrites pages it owns and never meets this; writing
// and deleting a file before a snapshot gives the snapshot rows the same
// footing, as writing the volume once before the rounds does for every row.

import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

const WRITE_BYTES = 1024 * 1024;

/** Writes and deletes a file of `bytes` in `dir` (a tmpfs), so the next allocations reuse its pages. */
export function recycleMemory(dir: string, bytes: number): void {
  const file = path.join(dir, 'recycled-memory');
  const fd = openSync(file, 'w');
  try {
    const buffer = Buffer.alloc(WRITE_BYTES, 0x5a);
    for (let offset = 0; offset < bytes; offset += WRITE_BYTES) writeSync(fd, buffer, 0, Math.min(WRITE_BYTES, bytes - offset), offset);
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
}

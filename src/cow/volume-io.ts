// Whole-range synchronous I/O on a file descriptor, as the actors do it:
// loop until every byte moved (pread/pwrite may be short), fail with the
// system error otherwise. Volume reads pass the test-only fault layer.

import { readSync, write, writeSync, writevSync } from 'node:fs';
import { cloneRange, copyRange } from '../native';
import { readFails } from '../shared/fault-words';

/** Zeros for ranges that must read back as zeros where no fallocate mode can make them. */
export const ZERO_BUFFER_BYTES = 1 << 20;
export const ZERO_BUFFER = new Uint8Array(ZERO_BUFFER_BYTES);

export class ShortIoError extends Error {
  readonly code = 'EIO';
  constructor(what: string, done_bytes: number, want_bytes: number, position: number) {
    super(`${what}: ${done_bytes} of ${want_bytes} bytes at ${position} (end of file)`);
  }
}

export class InjectedFaultError extends Error {
  readonly code = 'EIO';
  constructor(position: number) {
    super(`injected read error at byte ${position}`);
  }
}

export function readFully(fd: number, target: Uint8Array, offset: number, length: number, position: number): void {
  let done = 0;
  while (done < length) {
    const n = readSync(fd, target, offset + done, length - done, position + done);
    if (n === 0) throw new ShortIoError('read', done, length, position);
    done += n;
  }
}

export function writeFully(fd: number, source: Uint8Array, offset: number, length: number, position: number): void {
  let done = 0;
  while (done < length) {
    done += writeSync(fd, source, offset + done, length - done, position + done);
  }
}

/** Writes zeros over [position, +length) through ZERO_BUFFER, a piece of at most ZERO_BUFFER_BYTES at a time. */
export function writeZeros(fd: number, position: number, length: number): void {
  for (let done = 0; done < length; done += ZERO_BUFFER_BYTES) {
    writeFully(fd, ZERO_BUFFER, 0, Math.min(ZERO_BUFFER_BYTES, length - done), position + done);
  }
}

/**
 * Writes `views` back to back from `position` with pwritev: one system
 * call (one take of the file's lock) for a whole store run. A short write
 * (a signal, a filesystem that splits) goes on view by view from where it
 * stopped.
 */
export function writevFully(fd: number, views: Uint8Array[], total_bytes: number, position: number): void {
  let done = writevSync(fd, views, position);
  if (done === total_bytes) return;
  let view_start = 0;
  for (const view of views) {
    const view_end = view_start + view.length;
    if (done < view_end) {
      const from = Math.max(done, view_start) - view_start;
      writeFully(fd, view, from, view.length - from, position + view_start + from);
      done = view_end;
    }
    view_start = view_end;
  }
}

/**
 * writeFully in libuv's thread pool: the calling thread goes on (reading the
 * next request) while the kernel copies a large payload.
 */
export function writeFullyLater(fd: number, source: Uint8Array, offset: number, length: number, position: number,
  done: (error: Error | null) => void): void {
  write(fd, source, offset, length, position, (error, written) => {
    if (error !== null) done(error);
    else if (written === length) done(null);
    else writeFullyLater(fd, source, offset + written, length - written, position + written, done);
  });
}

/** A volume as an actor reads it: its fd plus, in tests, injected faults. */
export class VolumeReader {
  private readonly faults: Float64Array | undefined;

  constructor(readonly fd: number, faults: SharedArrayBuffer | undefined) {
    this.faults = faults ? new Float64Array(faults) : undefined;
  }

  read(target: Uint8Array, offset: number, length: number, position: number): void {
    if (this.faults !== undefined && readFails(this.faults, position, length)) throw new InjectedFaultError(position);
    readFully(this.fd, target, offset, length, position);
  }

  /**
   * Clones [position, +length) of the volume into dest_fd at dest_offset.
   * False (nothing done) where a read would meet an injected fault: the
   * caller then copies, and the copy's read fails as a real one would.
   */
  clone(dest_fd: number, dest_offset: number, length: number, position: number): boolean {
    if (this.faults !== undefined && readFails(this.faults, position, length)) return false;
    cloneRange(dest_fd, dest_offset, this.fd, position, length);
    return true;
  }

  /**
   * Copies [position, +length) of the volume to dest_fd at dest_offset
   * inside the kernel (copy_file_range). Returns the bytes copied (fewer
   * where the volume ended), or -1 (nothing done) where a read would meet
   * an injected fault: the caller then reads, and that read fails as a
   * real one would.
   */
  copyTo(dest_fd: number, dest_offset: number, length: number, position: number): number {
    if (this.faults !== undefined && readFails(this.faults, position, length)) return -1;
    return copyRange(dest_fd, dest_offset, this.fd, position, length);
  }
}

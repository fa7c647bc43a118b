// Exact-length reads from a socket, as promises: the NBD client reads a
// header of known size, then a payload whose size the header gave. Bytes
// that arrive are queued as they came; a read copies only when the bytes
// it wants span several arrivals.
//
// One reader at a time: the NBD client's reply loop is the only caller, so
// a single waiter slot suffices (asserted).

import type net from 'node:net';
import { assert } from '../shared/assert';
import { UblksnapError } from '../shared/errors';

export class ByteReader {
  private readonly queued: Buffer[] = [];
  private queued_bytes = 0;
  private waiter: (() => void) | null = null;
  private end_error: UblksnapError | null = null;

  constructor(socket: net.Socket, private readonly what: string) {
    socket.on('data', (chunk: Buffer) => {
      this.queued.push(chunk);
      this.queued_bytes += chunk.length;
      this.wake();
    });
    socket.on('error', (error) => this.end(new UblksnapError('EIO', `${this.what}: ${error.message}`)));
    socket.on('close', () => this.end(new UblksnapError('EIO', `${this.what}: the server closed the connection`)));
  }

  /** Ends every current and later read with error (the first error wins). */
  end(error: UblksnapError): void {
    this.end_error ??= error;
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  private async waitFor(length_bytes: number): Promise<void> {
    while (this.queued_bytes < length_bytes) {
      if (this.end_error) throw this.end_error;
      assert(this.waiter === null, 'ByteReader: one reader at a time');
      await new Promise<void>((resolve) => { this.waiter = resolve; });
    }
  }

  /**
   * Exactly length_bytes into out at offset: the data of a READ goes
   * straight into the request's buffer, one copy from the socket's chunks.
   */
  async readInto(out: Buffer, offset: number, length_bytes: number): Promise<void> {
    let done_bytes = 0;
    while (done_bytes < length_bytes) {
      await this.waitFor(1);
      const piece = this.queued[0] as Buffer;
      const take_bytes = Math.min(piece.length, length_bytes - done_bytes);
      piece.copy(out, offset + done_bytes, 0, take_bytes);
      done_bytes += take_bytes;
      this.queued_bytes -= take_bytes;
      if (take_bytes === piece.length) this.queued.shift();
      else this.queued[0] = piece.subarray(take_bytes);
    }
  }

  /** Exactly length_bytes, or the connection's end error. */
  async read(length_bytes: number): Promise<Buffer> {
    await this.waitFor(length_bytes);
    this.queued_bytes -= length_bytes;
    const first = this.queued[0];
    if (first !== undefined && first.length >= length_bytes) {
      if (first.length === length_bytes) this.queued.shift();
      else this.queued[0] = first.subarray(length_bytes);
      return first.subarray(0, length_bytes);
    }
    const out = Buffer.allocUnsafe(length_bytes);
    let done_bytes = 0;
    while (done_bytes < length_bytes) {
      const piece = this.queued[0] as Buffer;
      const take_bytes = Math.min(piece.length, length_bytes - done_bytes);
      piece.copy(out, done_bytes, 0, take_bytes);
      done_bytes += take_bytes;
      if (take_bytes === piece.length) this.queued.shift();
      else this.queued[0] = piece.subarray(take_bytes);
    }
    return out;
  }
}

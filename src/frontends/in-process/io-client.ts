// A promise-per-request client over an IoQueue, for tests, the benchmark
// and tools that want `await client.write(...)`. It allocates per request
// (a promise), so frontends on the hot path use IoQueue directly.

import { UblksnapError, codeOfErrno } from '../../shared/errors';
import { IoFlags, IoOp, type EngineControl, type IoQueue } from '../../engine/api';

export class IoError extends UblksnapError {
  constructor(readonly errno: number, what: string) {
    super(codeOfErrno(errno) ?? 'EIO', `${what} failed with errno ${errno}`);
  }
}

export class IoClient {
  private readonly free_tags: number[] = [];
  private readonly waiting_for_tag: ((tag: number) => void)[] = [];
  private readonly pending: (((errno: number) => void) | undefined)[] = [];

  private constructor(readonly queue: IoQueue) {
    for (let tag = queue.depth - 1; tag >= 0; tag -= 1) this.free_tags.push(tag);
    queue.onComplete((tag, errno) => {
      const resolve = this.pending[tag];
      this.pending[tag] = undefined;
      resolve?.(errno);
    });
  }

  static async open(engine: EngineControl, depth = 32, max_io_bytes = 1 << 20): Promise<IoClient> {
    return new IoClient(await engine.openQueue({ depth, max_io_bytes }));
  }

  /** Reads length bytes at offset of the target into a new Buffer. */
  async read(handle: number, offset_bytes: number, length_bytes: number): Promise<Buffer> {
    const out = Buffer.alloc(length_bytes);
    await this.pieces(length_bytes, async (tag, done, piece) => {
      await this.run(tag, IoOp.READ, handle, offset_bytes + done, piece, IoFlags.NONE, 'read');
      out.set(this.queue.buffer(tag).subarray(0, piece), done);
    });
    return out;
  }

  async write(handle: number, offset_bytes: number, data: Uint8Array, flags = IoFlags.NONE): Promise<void> {
    await this.pieces(data.length, async (tag, done, piece) => {
      this.queue.buffer(tag).set(data.subarray(done, done + piece));
      await this.run(tag, IoOp.WRITE, handle, offset_bytes + done, piece, flags, 'write');
    });
  }

  async flush(handle: number): Promise<void> {
    await this.single(IoOp.FLUSH, handle, 0, 0, 'flush');
  }

  async discard(handle: number, offset_bytes: number, length_bytes: number): Promise<void> {
    await this.pieces(length_bytes, (tag, done, piece) => this.run(tag, IoOp.DISCARD, handle, offset_bytes + done, piece, IoFlags.NONE, 'discard'));
  }

  async writeZeroes(handle: number, offset_bytes: number, length_bytes: number, flags = IoFlags.NONE): Promise<void> {
    await this.pieces(length_bytes, (tag, done, piece) => this.run(tag, IoOp.WRITE_ZEROES, handle, offset_bytes + done, piece, flags, 'write-zeroes'));
  }

  close(): Promise<void> {
    return this.queue.close();
  }

  /** Splits a range into pieces of at most max_io_bytes, run concurrently on free tags. */
  private async pieces(length_bytes: number, each: (tag: number, done: number, piece: number) => Promise<void>): Promise<void> {
    const jobs: Promise<void>[] = [];
    for (let done = 0; done < length_bytes; done += this.queue.max_io_bytes) {
      const piece = Math.min(this.queue.max_io_bytes, length_bytes - done);
      jobs.push(this.withTag((tag) => each(tag, done, piece)));
    }
    await Promise.all(jobs);
  }

  private single(op: IoOp, handle: number, offset: number, length: number, what: string): Promise<void> {
    return this.withTag((tag) => this.run(tag, op, handle, offset, length, IoFlags.NONE, what));
  }

  private async withTag<T>(use: (tag: number) => Promise<T>): Promise<T> {
    const tag = this.free_tags.pop() ?? await new Promise<number>((resolve) => this.waiting_for_tag.push(resolve));
    try {
      return await use(tag);
    } finally {
      const next = this.waiting_for_tag.shift();
      if (next) next(tag);
      else this.free_tags.push(tag);
    }
  }

  private run(tag: number, op: IoOp, handle: number, offset: number, length: number, flags: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending[tag] = (errno) => (errno === 0 ? resolve() : reject(new IoError(errno, `${what} of ${length} bytes at ${offset}`)));
      this.queue.submit(tag, op, handle, offset, length, flags);
    });
  }
}

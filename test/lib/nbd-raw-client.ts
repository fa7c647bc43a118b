// A deliberately small NBD client that speaks the protocol byte by byte,
// for tests that must send what real clients never send (bad magic,
// truncated handshakes, oversized lengths, requests after DISC) and read
// every reply field as it is on the wire. Every read has a timeout, so a
// server that hangs fails the test instead of the file's runner timeout.

import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';

/** A read the server never answers fails after this. */
export const RAW_READ_TIMEOUT_MS = 10_000;

export const NBD = {
  REQUEST_MAGIC: 0x25609513,
  SIMPLE_MAGIC: 0x67446698,
  STRUCTURED_MAGIC: 0x668e33ef,
  OPTION_REPLY_MAGIC: 0x3e889045565a9n,
  IHAVEOPT: Buffer.from('IHAVEOPT'),
} as const;

const OPT_STARTTLS_CODE = 5;
const REP_ACK_CODE = 1;

export interface OptionReply {
  option: number;
  type: number;
  payload: Buffer;
}

export interface Chunk {
  flags: number;
  type: number;
  handle: bigint;
  payload: Buffer;
}

export interface SimpleReply {
  error: number;
  handle: bigint;
}

export type Reply = { kind: 'simple'; error: number; handle: bigint } | ({ kind: 'chunk' } & Chunk);

export interface GoOptions {
  structured?: boolean;
  contexts?: string[];
  /** NBD_INFO requests to send with GO. */
  infos?: number[];
  /** Send NO_ZEROES / FIXED_NEWSTYLE client flags; default both. */
  client_flags?: number;
  /** The handshake (and STARTTLS) was done already: start with the options. */
  handshake_done?: boolean;
}

export interface GoResult {
  size: number;
  flags: number;
  block_sizes: [number, number, number] | null;
  context_ids: Map<string, number>;
}

export class RawNbd {
  private readonly received: Buffer[] = [];
  private buffered = 0;
  private waiter: (() => void) | null = null;
  private ended = false;
  /** The default bound of read(); a client with requests that may wait long (a take, a destroy) raises it. */
  read_timeout_ms = RAW_READ_TIMEOUT_MS;
  readonly closed: Promise<void>;

  private constructor(public socket: net.Socket) {
    this.listen(socket);
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.ended = true;
      this.wake();
      resolve();
    }));
  }

  private listen(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      this.received.push(chunk);
      this.buffered += chunk.length;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /**
   * Sends STARTTLS; on its ACK runs the client side of the TLS handshake
   * with options (a PSK callback or certificates) over the same socket and
   * goes on inside it. Rejects with the TLS error when the handshake fails.
   */
  async startTls(options: tls.ConnectionOptions): Promise<void> {
    const [reply] = await this.option(OPT_STARTTLS_CODE);
    if (reply?.type !== REP_ACK_CODE) throw new Error(`STARTTLS answered with reply type 0x${reply?.type.toString(16)}`);
    const plain = this.socket;
    plain.removeAllListeners('data');
    const secure = tls.connect({ ...options, socket: plain });
    const failed = once(secure, 'error').then(([error]) => { throw error as Error; });
    await Promise.race([once(secure, 'secureConnect'), failed]);
    failed.catch(() => undefined);
    this.socket = secure;
    this.listen(secure);
  }

  static connect(target: string | { host: string; port: number }): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const socket = typeof target === 'string' ? net.connect({ path: target }) : net.connect(target);
      socket.once('connect', () => resolve(new RawNbd(socket)));
      socket.once('error', reject);
    });
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  /** Exactly n bytes, or an error when the connection ends first or the timeout passes. */
  async read(n: number, timeout_ms = this.read_timeout_ms): Promise<Buffer> {
    const deadline = Date.now() + timeout_ms;
    while (this.buffered < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered} of ${n} bytes read`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (${this.buffered} buffered)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => { clearTimeout(timer); resolve(); };
      });
    }
    if (n === 0) return Buffer.alloc(0);
    this.buffered -= n;
    // Copy only the n bytes asked for: concatenating all that is buffered
    // made a reply header cost as much as the replies queued behind it.
    const first = this.received[0]!;
    if (first.length >= n) {
      if (first.length === n) this.received.shift();
      else this.received[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const piece = this.received[0]!;
      const take = Math.min(piece.length, n - done);
      piece.copy(out, done, 0, take);
      done += take;
      if (take === piece.length) this.received.shift();
      else this.received[0] = piece.subarray(take);
    }
    return out;
  }

  /** True when the server closes the connection within timeout_ms (reading and dropping anything it sends). */
  async waitClosed(timeout_ms = RAW_READ_TIMEOUT_MS): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timed_out = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeout_ms); });
    const closed = await Promise.race([this.closed.then(() => true), timed_out]);
    clearTimeout(timer);
    return closed;
  }

  get is_closed(): boolean {
    return this.ended;
  }

  write(bytes: Buffer): Promise<void> {
    return new Promise((resolve) => this.socket.write(bytes, () => resolve()));
  }

  destroy(): void {
    this.socket.destroy();
  }

  // ── handshake ────────────────────────────────────────────────────────

  /** Reads the greeting; returns the handshake flags. */
  async greeting(): Promise<number> {
    const greeting = await this.read(18);
    if (greeting.subarray(0, 8).toString() !== 'NBDMAGIC' || greeting.subarray(8, 16).toString() !== 'IHAVEOPT') {
      throw new Error(`bad greeting ${greeting.toString('hex')}`);
    }
    return greeting.readUInt16BE(16);
  }

  async handshake(client_flags = 3): Promise<void> {
    await this.greeting();
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(client_flags, 0);
    await this.write(flags);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): Promise<void> {
    const header = Buffer.alloc(16);
    NBD.IHAVEOPT.copy(header, 0);
    header.writeUInt32BE(option >>> 0, 8);
    header.writeUInt32BE(data.length, 12);
    return this.write(Buffer.concat([header, data]));
  }

  async optionReply(): Promise<OptionReply> {
    const header = await this.read(20);
    if (header.readBigUInt64BE(0) !== NBD.OPTION_REPLY_MAGIC) throw new Error(`bad option reply magic ${header.toString('hex')}`);
    const length = header.readUInt32BE(16);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), payload: await this.read(length) };
  }

  /** Sends an option and collects replies up to the final ACK or error. */
  async option(option: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
    await this.sendOption(option, data);
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.optionReply();
      replies.push(reply);
      if (reply.type === 1 || (reply.type & 0x80000000) !== 0) return replies;
    }
  }

  /** STRUCTURED_REPLY (optional), SET_META_CONTEXT (optional), GO; throws when GO fails. */
  async go(name: string, options: GoOptions = {}): Promise<GoResult> {
    if (options.handshake_done !== true) await this.handshake(options.client_flags ?? 3);
    const context_ids = new Map<string, number>();
    if (options.structured ?? true) {
      const [ack] = await this.option(8);
      if (ack!.type !== 1) throw new Error(`STRUCTURED_REPLY refused: ${ack!.type}`);
    }
    if (options.contexts && options.contexts.length > 0) {
      for (const reply of await this.option(10, metaContextData(name, options.contexts))) {
        if (reply.type === 4) context_ids.set(reply.payload.subarray(4).toString(), reply.payload.readUInt32BE(0));
        else if (reply.type !== 1) throw new Error(`SET_META_CONTEXT failed: ${reply.type.toString(16)} ${reply.payload}`);
      }
    }
    const replies = await this.option(7, infoData(name, options.infos ?? [3]));
    const last = replies.at(-1)!;
    if (last.type !== 1) throw new Error(`GO failed: 0x${last.type.toString(16)} ${last.payload.toString()}`);
    let size = -1;
    let flags = 0;
    let block_sizes: [number, number, number] | null = null;
    for (const reply of replies) {
      if (reply.type !== 3) continue;
      const info = reply.payload.readUInt16BE(0);
      if (info === 0) {
        size = Number(reply.payload.readBigUInt64BE(2));
        flags = reply.payload.readUInt16BE(10);
      } else if (info === 3) {
        block_sizes = [reply.payload.readUInt32BE(2), reply.payload.readUInt32BE(6), reply.payload.readUInt32BE(10)];
      }
    }
    return { size, flags, block_sizes, context_ids };
  }

  // ── transmission ─────────────────────────────────────────────────────

  request(type: number, flags: number, handle: bigint, offset: bigint | number, length: number, payload?: Buffer): Promise<void> {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(NBD.REQUEST_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length >>> 0, 24);
    return this.write(payload ? Buffer.concat([header, payload]) : header);
  }

  /** The next reply message header (and a chunk's payload); a simple READ's data is read by the caller. */
  async reply(): Promise<Reply> {
    const magic = (await this.read(4)).readUInt32BE(0);
    if (magic === NBD.SIMPLE_MAGIC) {
      const rest = await this.read(12);
      return { kind: 'simple', error: rest.readUInt32BE(0), handle: rest.readBigUInt64BE(4) };
    }
    if (magic === NBD.STRUCTURED_MAGIC) {
      const rest = await this.read(16);
      const length = rest.readUInt32BE(12);
      return { kind: 'chunk', flags: rest.readUInt16BE(0), type: rest.readUInt16BE(2), handle: rest.readBigUInt64BE(4), payload: await this.read(length) };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  /** Chunks of one structured reply, up to the one flagged DONE (no other handle may interleave). */
  async chunks(handle: bigint): Promise<Chunk[]> {
    const found: Chunk[] = [];
    for (;;) {
      const reply = await this.reply();
      if (reply.kind !== 'chunk') throw new Error(`expected a chunk for ${handle}, got a simple reply`);
      if (reply.handle !== handle) throw new Error(`chunk for handle ${reply.handle}, expected ${handle}`);
      found.push(reply);
      if (reply.flags & 1) return found;
    }
  }

  /** Structured READ: reassembles the data; throws with the error chunk's errno and message. */
  async readStructured(handle: bigint, offset: number, length: number): Promise<Buffer> {
    const data = Buffer.alloc(length);
    for (const chunk of await this.chunks(handle)) {
      if (chunk.type === 1) {
        const at = Number(chunk.payload.readBigUInt64BE(0)) - offset;
        chunk.payload.copy(data, at, 8);
      } else if (chunk.type & 0x8000) {
        throw new ChunkError(chunk);
      }
    }
    return data;
  }

  disc(): Promise<void> {
    return this.request(2, 0, 0n, 0, 0);
  }
}

/** An error chunk, decoded. */
export class ChunkError extends Error {
  readonly errno: number;
  readonly text: string;
  constructor(readonly chunk: Chunk) {
    const errno = chunk.payload.readUInt32BE(0);
    const text = chunk.payload.subarray(6, 6 + chunk.payload.readUInt16BE(4)).toString();
    super(`error chunk type 0x${chunk.type.toString(16)}: errno ${errno}: ${text}`);
    this.errno = errno;
    this.text = text;
  }
}

export function infoData(name: string, infos: number[]): Buffer {
  const name_bytes = Buffer.from(name);
  const b = Buffer.alloc(4 + name_bytes.length + 2 + 2 * infos.length);
  b.writeUInt32BE(name_bytes.length, 0);
  name_bytes.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + name_bytes.length);
  infos.forEach((info, i) => b.writeUInt16BE(info, 6 + name_bytes.length + 2 * i));
  return b;
}

export function metaContextData(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (value: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(value, 0); return b; };
  parts.push(u32(Buffer.byteLength(name)), Buffer.from(name), u32(queries.length));
  for (const query of queries) parts.push(u32(Buffer.byteLength(query)), Buffer.from(query));
  return Buffer.concat(parts);
}

/** Decodes a BLOCK_STATUS chunk payload: context id and (length, flags) pairs. */
export function blockStatusOf(chunk: Chunk): { id: number; extents: [number, number][] } {
  const extents: [number, number][] = [];
  for (let at = 4; at < chunk.payload.length; at += 8) extents.push([chunk.payload.readUInt32BE(at), chunk.payload.readUInt32BE(at + 4)]);
  return { id: chunk.payload.readUInt32BE(0), extents };
}

// The NBD frontend through a real socket: the engine's NbdServer on a Unix
// socket (started as the NBD tests start it, test/lib/nbd-fixture.ts), and
// per opened target one connection of the protocol-level test client
// (test/lib/nbd-raw-client.ts): fixed newstyle handshake, structured
// replies, NBD_OPT_GO, then pipelined requests matched to their replies by
// handle. A request larger than the export's advertised maximum block is
// split, as real clients split it.
//
//   BlockTarget.read/write ──► requests (handle n) ──socket──► NbdServer ──► hosted session ──► engine
//   reply pump (one per connection, runs while requests are pending) ◄── chunks / simple replies by handle

import path from 'node:path';
import {
  CMD_FLUSH, CMD_READ, CMD_WRITE, REPLY_FLAG_DONE, REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE,
} from '../../../src/frontends/nbd/protocol';
import { BlockIoError, ERRNO, type BlockTarget } from '../../lib/block-target';
import { startNbdServer } from '../../lib/nbd-fixture';
import { RawNbd } from '../../lib/nbd-raw-client';
import type { DriverFactory, FrontendDriver } from './driver';

/** Requests one connection keeps in flight; more wait their turn in the client. */
const REQUESTS_IN_FLIGHT_MAX = 16;
/** Largest request when the server advertises no maximum block. */
const REQUEST_BYTES_DEFAULT_MAX = 1 << 20;
/** A reply may wait this long (a write held through a take, a destroy draining image I/O). */
const REPLY_TIMEOUT_MS = 60_000;
/** NBD_INFO_BLOCK_SIZE: asked for at GO so pieces respect the maximum block. */
const INFO_BLOCK_SIZE = 3;
/** The error bit of a structured reply chunk type. */
const REPLY_TYPE_ERROR_BIT = 0x8000;

interface Pending {
  /** READ: the bytes as chunks arrive; null for other commands. */
  data: Buffer | null;
  offset_bytes: number;
  errno: number;
  resolve: (data: Buffer | null) => void;
  reject: (error: Error) => void;
  what: string;
}

/** One NBD connection as a BlockTarget. */
class NbdTarget implements BlockTarget {
  private readonly pending = new Map<bigint, Pending>();
  private next_handle = 1n;
  private pumping = false;
  private in_flight = 0;
  private readonly waiting_for_slot: (() => void)[] = [];
  /** Set when the connection broke: every request from then on fails with it. */
  private broken: Error | null = null;

  constructor(private readonly raw: RawNbd, readonly export_name: string, readonly size_bytes: number,
    private readonly request_bytes_max: number) {
    raw.read_timeout_ms = REPLY_TIMEOUT_MS;
  }

  async read(offset_bytes: number, length_bytes: number): Promise<Buffer> {
    const out = Buffer.alloc(length_bytes);
    await this.pieces(length_bytes, async (done, piece) => {
      const data = await this.request(CMD_READ, offset_bytes + done, piece, undefined, `read of ${piece} bytes at ${offset_bytes + done}`);
      data!.copy(out, done);
    });
    return out;
  }

  async write(offset_bytes: number, data: Uint8Array): Promise<void> {
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    await this.pieces(bytes.length, async (done, piece) => {
      await this.request(CMD_WRITE, offset_bytes + done, piece, bytes.subarray(done, done + piece), `write of ${piece} bytes at ${offset_bytes + done}`);
    });
  }

  async flush(): Promise<void> {
    await this.request(CMD_FLUSH, 0, 0, undefined, 'flush');
  }

  async close(): Promise<void> {
    if (this.raw.is_closed) return;
    while (this.in_flight > 0) await new Promise<void>((resolve) => this.waiting_for_slot.push(resolve));
    await this.raw.disc();
    if (!(await this.raw.waitClosed())) this.raw.destroy();
  }

  private async pieces(length_bytes: number, each: (done: number, piece: number) => Promise<void>): Promise<void> {
    const jobs: Promise<void>[] = [];
    for (let done = 0; done < length_bytes; done += this.request_bytes_max) {
      jobs.push(each(done, Math.min(this.request_bytes_max, length_bytes - done)));
    }
    await Promise.all(jobs);
  }

  private async request(type: number, offset_bytes: number, length_bytes: number, payload: Buffer | undefined,
    what: string): Promise<Buffer | null> {
    while (this.in_flight >= REQUESTS_IN_FLIGHT_MAX) await new Promise<void>((resolve) => this.waiting_for_slot.push(resolve));
    if (this.broken !== null) throw new BlockIoError(ERRNO.ENOTCONN, `${this.export_name}: ${what} (${this.broken.message})`);
    this.in_flight += 1;
    const handle = this.next_handle++;
    try {
      return await new Promise<Buffer | null>((resolve, reject) => {
        this.pending.set(handle, {
          data: type === CMD_READ ? Buffer.alloc(length_bytes) : null, offset_bytes, errno: 0, resolve, reject, what,
        });
        void this.raw.request(type, 0, handle, offset_bytes, length_bytes, payload);
        if (!this.pumping) void this.pump();
      });
    } finally {
      this.in_flight -= 1;
      this.waiting_for_slot.shift()?.();
    }
  }

  /** Reads replies while requests are pending and settles each by its handle. */
  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.pending.size > 0) {
        const reply = await this.raw.reply();
        const entry = this.pending.get(reply.handle);
        if (entry === undefined) throw new Error(`a reply for handle ${reply.handle}, which no request has`);
        if (reply.kind === 'simple') {
          // Structured replies were negotiated, but a server may answer commands other than READ simply.
          if (entry.data !== null && reply.error === 0) throw new Error(`a simple reply to ${entry.what}`);
          this.settle(reply.handle, entry, reply.error);
          continue;
        }
        if (reply.type === REPLY_TYPE_OFFSET_DATA && entry.data !== null) {
          const at = Number(reply.payload.readBigUInt64BE(0)) - entry.offset_bytes;
          reply.payload.copy(entry.data, at, 8);
        } else if (reply.type === REPLY_TYPE_OFFSET_HOLE && entry.data !== null) {
          const at = Number(reply.payload.readBigUInt64BE(0)) - entry.offset_bytes;
          entry.data.fill(0, at, at + reply.payload.readUInt32BE(8));
        } else if ((reply.type & REPLY_TYPE_ERROR_BIT) !== 0) {
          entry.errno = reply.payload.readUInt32BE(0);
        } else if (reply.type !== REPLY_TYPE_NONE) {
          throw new Error(`unexpected reply chunk type ${reply.type} to ${entry.what}`);
        }
        if ((reply.flags & REPLY_FLAG_DONE) !== 0) this.settle(reply.handle, entry, entry.errno);
      }
    } catch (error) {
      // The connection broke (or the server broke the protocol): every pending request fails.
      this.broken = error as Error;
      for (const [handle, entry] of this.pending) {
        this.pending.delete(handle);
        entry.reject(new BlockIoError(ERRNO.ENOTCONN, `${this.export_name}: ${entry.what} (${this.broken.message})`));
      }
      this.raw.destroy();
    } finally {
      this.pumping = false;
    }
  }

  private settle(handle: bigint, entry: Pending, errno: number): void {
    this.pending.delete(handle);
    if (errno === 0) entry.resolve(entry.data);
    else entry.reject(new BlockIoError(errno, `${this.export_name}: ${entry.what}`));
  }
}

export const nbdDriver: DriverFactory = {
  name: 'nbd',
  unavailable: () => null,
  async start(engine, scratch_dir): Promise<FrontendDriver> {
    const socket_path = path.join(scratch_dir, 'contract-nbd.sock');
    const server = await startNbdServer(engine, { socket_path });
    const targets = new Set<NbdTarget>();
    return {
      name: 'nbd',
      async open(export_name: string): Promise<BlockTarget> {
        const raw = await RawNbd.connect(socket_path);
        let go;
        try {
          go = await raw.go(export_name, { structured: true, infos: [INFO_BLOCK_SIZE] });
        } catch (error) {
          raw.destroy();
          throw error;
        }
        const target = new NbdTarget(raw, export_name, go.size, go.block_sizes?.[2] ?? REQUEST_BYTES_DEFAULT_MAX);
        targets.add(target);
        const close = target.close.bind(target);
        target.close = async (): Promise<void> => {
          targets.delete(target);
          await close();
        };
        return target;
      },
      async close(): Promise<void> {
        for (const target of [...targets]) await target.close();
        await server.stop();
      },
    };
  },
};

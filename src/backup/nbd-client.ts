// A read-only NBD client for backups: fixed newstyle handshake, structured
// replies, GO for one export, then READ requests with several in flight.
// It reads an image at the speed the server serves it without an external
// tool (nbdcopy, nbdfuse) between the daemon and the backup files.
//
// Design notes
// - One connection, up to `depth` READs in flight (the caller bounds it).
//   Replies come back in any order, and a structured reply may arrive as
//   several chunks (OFFSET_DATA, OFFSET_HOLE, ERROR) before the chunk with
//   the DONE flag; the reply loop assembles each into the request's buffer.
// - Holes: `base:allocation` is not asked for. The daemon reports every
//   extent as data (docs/nbd.md), so the copier finds zeros itself by
//   looking at the bytes; an OFFSET_HOLE chunk, should a server send one,
//   is honoured as zeros.
// - Every failure is a UblksnapError: EIO for the transport and for a READ
//   the server answered with an error (its message kept), EINVAL for an
//   export the server does not have.
// - Wire constants come from the server's table (frontends/nbd/protocol.ts):
//   one truth for both ends; nbdinfo and nbdcopy tests hold the server to
//   the spec.

import net from 'node:net';
import { UblksnapError } from '../shared/errors';
import {
  CMD_DISC, CMD_READ, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, GREETING_BYTES, IHAVEOPT_HIGH,
  IHAVEOPT_LOW, INFO_BLOCK_SIZE, INFO_EXPORT, NBDMAGIC_HIGH, NBDMAGIC_LOW, OFFSET_DATA_PREFIX_BYTES, OPT_GO,
  OPT_STRUCTURED_REPLY, OPTION_HEADER_BYTES, OPTION_REPLY_HEADER_BYTES, OPTION_REPLY_MAGIC_HIGH, OPTION_REPLY_MAGIC_LOW,
  REPLY_FLAG_DONE, REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET, REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE, REP_ACK, REP_INFO, REQUEST_HEADER_BYTES, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_HEADER_BYTES, STRUCTURED_REPLY_MAGIC, isOptionReplyError, readU64, writeU64,
} from '../frontends/nbd/protocol';
import { ByteReader } from './byte-reader';
import type { NbdTarget } from './nbd-uri';

/** Connecting to a local server is immediate; one that does not accept in this long is stuck. */
export const NBD_CONNECT_TIMEOUT_MS = 10_000;
/** Option replies are small; a server that sends one larger than this is broken. */
const OPTION_REPLY_BYTES_MAX = 64 * 1024;
/** A structured chunk that is not data carries at most a message (4096) and a few fields. */
const CONTROL_CHUNK_BYTES_MAX = 8192;
/** The magic's four bytes, read before we know which reply it starts. */
const MAGIC_BYTES = 4;

interface PendingRead {
  readonly offset: number;
  readonly data: Buffer;
  error: UblksnapError | null;
  resolve: (data: Buffer) => void;
  reject: (error: UblksnapError) => void;
}

function connectSocket(target: NbdTarget): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = target.socket_path !== null
      ? net.createConnection({ path: target.socket_path })
      : net.createConnection({ host: target.host, port: target.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new UblksnapError('ETIMEDOUT', `${target.uri}: no connection within ${NBD_CONNECT_TIMEOUT_MS} ms`));
    }, NBD_CONNECT_TIMEOUT_MS);
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      // ENOENT / ECONNREFUSED: no server there (the daemon is not running or uses another socket).
      reject(new UblksnapError(error.code === 'ENOENT' || error.code === 'ECONNREFUSED' ? 'ENOENT' : 'EIO',
        `${target.uri}: cannot connect: ${error.message}`));
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}

export class NbdReadClient {
  private readonly pending = new Map<number, PendingRead>();
  private next_handle = 1;
  private loop_error: UblksnapError | null = null;

  private constructor(
    private readonly socket: net.Socket,
    private readonly reader: ByteReader,
    readonly target: NbdTarget,
    /** The export's size in bytes, from GO. */
    readonly size_bytes: number,
  ) {}

  /** Connects, negotiates structured replies and GO for the target's export. */
  static async open(target: NbdTarget): Promise<NbdReadClient> {
    const socket = await connectSocket(target);
    const reader = new ByteReader(socket, target.uri);
    try {
      const size_bytes = await negotiate(socket, reader, target);
      const client = new NbdReadClient(socket, reader, target, size_bytes);
      void client.replyLoop();
      return client;
    } catch (error) {
      socket.destroy();
      throw error;
    }
  }

  get in_flight_count(): number {
    return this.pending.size;
  }

  /**
   * Reads length_bytes at offset into `into` (reused by the caller: a fresh
   * 1 MiB buffer per read costs its page faults every time), or into a
   * fresh buffer; resolves with the buffer holding exactly the bytes read.
   */
  read(offset: number, length_bytes: number, into?: Buffer): Promise<Buffer> {
    if (this.loop_error) return Promise.reject(this.loop_error);
    if (offset < 0 || length_bytes <= 0 || offset + length_bytes > this.size_bytes) {
      return Promise.reject(new UblksnapError('ERANGE', `${this.target.uri}: read ${offset}+${length_bytes} outside the export (${this.size_bytes} bytes)`));
    }
    const handle = this.next_handle++;
    return new Promise<Buffer>((resolve, reject) => {
      const data = into !== undefined && into.length >= length_bytes ? into.subarray(0, length_bytes) : Buffer.allocUnsafe(length_bytes);
      this.pending.set(handle, { offset, data, error: null, resolve, reject });
      this.socket.write(requestHeader(CMD_READ, handle, offset, length_bytes));
    });
  }

  /** Sends DISC and closes; reads still in flight fail. */
  close(): void {
    if (!this.socket.destroyed && this.loop_error === null) this.socket.write(requestHeader(CMD_DISC, 0, 0, 0));
    this.fail(new UblksnapError('EIO', `${this.target.uri}: the client closed the connection`));
    this.socket.end();
    this.socket.destroy();
  }

  private fail(error: UblksnapError): void {
    this.loop_error ??= error;
    this.reader.end(error);
    for (const [handle, pending] of this.pending) {
      this.pending.delete(handle);
      pending.reject(error);
    }
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const magic = (await this.reader.read(MAGIC_BYTES)).readUInt32BE(0);
        if (magic === STRUCTURED_REPLY_MAGIC) await this.structuredChunk();
        else if (magic === SIMPLE_REPLY_MAGIC) await this.simpleReply();
        else throw new UblksnapError('EIO', `${this.target.uri}: bad reply magic 0x${magic.toString(16)}`);
      }
    } catch (error) {
      this.fail(error instanceof UblksnapError ? error : new UblksnapError('EIO', `${this.target.uri}: ${(error as Error).message}`));
    }
  }

  private take(handle: number): PendingRead {
    const pending = this.pending.get(handle);
    if (pending === undefined) throw new UblksnapError('EIO', `${this.target.uri}: a reply for unknown handle ${handle}`);
    return pending;
  }

  private finish(handle: number, pending: PendingRead): void {
    this.pending.delete(handle);
    if (pending.error) pending.reject(pending.error);
    else pending.resolve(pending.data);
  }

  private async simpleReply(): Promise<void> {
    const rest = await this.reader.read(SIMPLE_REPLY_HEADER_REST_BYTES);
    const error = rest.readUInt32BE(0);
    const handle = readU64(rest, 4);
    const pending = this.take(handle);
    if (error !== 0) pending.error = readError(this.target, pending, error, '');
    else await this.reader.readInto(pending.data, 0, pending.data.length);
    this.finish(handle, pending);
  }

  private async structuredChunk(): Promise<void> {
    const rest = await this.reader.read(STRUCTURED_REPLY_HEADER_BYTES - MAGIC_BYTES);
    const flags = rest.readUInt16BE(0);
    const type = rest.readUInt16BE(2);
    const handle = readU64(rest, 4);
    const length_bytes = rest.readUInt32BE(12);
    const pending = this.take(handle);
    if (type !== REPLY_TYPE_OFFSET_DATA && length_bytes > CONTROL_CHUNK_BYTES_MAX) {
      throw new UblksnapError('EIO', `${this.target.uri}: a reply chunk of type ${type} with ${length_bytes} bytes`);
    }
    if (type === REPLY_TYPE_OFFSET_DATA) {
      if (length_bytes < OFFSET_DATA_PREFIX_BYTES) throw new UblksnapError('EIO', `${this.target.uri}: a data chunk of ${length_bytes} bytes`);
      const at = readU64(await this.reader.read(OFFSET_DATA_PREFIX_BYTES), 0) - pending.offset;
      const data_bytes = length_bytes - OFFSET_DATA_PREFIX_BYTES;
      if (at < 0 || at + data_bytes > pending.data.length) throw new UblksnapError('EIO', `${this.target.uri}: data outside the request`);
      await this.reader.readInto(pending.data, at, data_bytes);
      if ((flags & REPLY_FLAG_DONE) !== 0) this.finish(handle, pending);
      return;
    }
    const payload = length_bytes > 0 ? await this.reader.read(length_bytes) : Buffer.alloc(0);
    switch (type) {
      case REPLY_TYPE_NONE:
        break;
      case REPLY_TYPE_OFFSET_HOLE: {
        const at = readU64(payload, 0) - pending.offset;
        const hole_bytes = payload.readUInt32BE(8);
        if (at < 0 || at + hole_bytes > pending.data.length) throw new UblksnapError('EIO', `${this.target.uri}: hole outside the request`);
        pending.data.fill(0, at, at + hole_bytes);
        break;
      }
      case REPLY_TYPE_ERROR:
      case REPLY_TYPE_ERROR_OFFSET: {
        const message_bytes = payload.readUInt16BE(4);
        pending.error ??= readError(this.target, pending, payload.readUInt32BE(0), payload.toString('utf8', 6, 6 + message_bytes));
        break;
      }
      default:
        // An unknown type: proto.md lets a client treat unknown error types as errors, others are a broken server.
        pending.error ??= new UblksnapError('EIO', `${this.target.uri}: reply chunk type ${type} not understood`);
    }
    if ((flags & REPLY_FLAG_DONE) !== 0) this.finish(handle, pending);
  }
}

const SIMPLE_REPLY_HEADER_REST_BYTES = 12;

function readError(target: NbdTarget, pending: PendingRead, errno: number, message: string): UblksnapError {
  return new UblksnapError('EIO', `${target.uri}: read at ${pending.offset}+${pending.data.length} failed (errno ${errno}${message ? `: ${message}` : ''})`);
}

function requestHeader(type: number, handle: number, offset: number, length_bytes: number): Buffer {
  const header = Buffer.alloc(REQUEST_HEADER_BYTES);
  header.writeUInt32BE(REQUEST_MAGIC, 0);
  header.writeUInt16BE(0, 4);
  header.writeUInt16BE(type, 6);
  writeU64(header, handle, 8);
  writeU64(header, offset, 16);
  header.writeUInt32BE(length_bytes, 24);
  return header;
}

function optionBytes(option: number, data: Buffer): Buffer {
  const header = Buffer.alloc(OPTION_HEADER_BYTES);
  header.writeUInt32BE(IHAVEOPT_HIGH, 0);
  header.writeUInt32BE(IHAVEOPT_LOW, 4);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

async function optionReply(reader: ByteReader, target: NbdTarget): Promise<{ type: number; payload: Buffer }> {
  const header = await reader.read(OPTION_REPLY_HEADER_BYTES);
  if (header.readUInt32BE(0) !== OPTION_REPLY_MAGIC_HIGH || header.readUInt32BE(4) !== OPTION_REPLY_MAGIC_LOW) {
    throw new UblksnapError('EIO', `${target.uri}: bad option reply magic`);
  }
  const length_bytes = header.readUInt32BE(16);
  if (length_bytes > OPTION_REPLY_BYTES_MAX) throw new UblksnapError('EIO', `${target.uri}: an option reply of ${length_bytes} bytes`);
  return { type: header.readUInt32BE(12), payload: await reader.read(length_bytes) };
}

/** The handshake up to GO; returns the export size. */
async function negotiate(socket: net.Socket, reader: ByteReader, target: NbdTarget): Promise<number> {
  const greeting = await reader.read(GREETING_BYTES);
  if (greeting.readUInt32BE(0) !== NBDMAGIC_HIGH || greeting.readUInt32BE(4) !== NBDMAGIC_LOW
    || greeting.readUInt32BE(8) !== IHAVEOPT_HIGH || greeting.readUInt32BE(12) !== IHAVEOPT_LOW) {
    throw new UblksnapError('EIO', `${target.uri}: not an NBD newstyle server`);
  }
  if ((greeting.readUInt16BE(16) & FLAG_FIXED_NEWSTYLE) === 0) throw new UblksnapError('EIO', `${target.uri}: the server is not fixed newstyle`);
  const client_flags = Buffer.alloc(4);
  client_flags.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES, 0);
  socket.write(client_flags);

  socket.write(optionBytes(OPT_STRUCTURED_REPLY, Buffer.alloc(0)));
  const structured = await optionReply(reader, target);
  if (structured.type !== REP_ACK) throw new UblksnapError('EIO', `${target.uri}: the server refused structured replies`);

  const name = Buffer.from(target.export_name, 'utf8');
  const go = Buffer.alloc(4 + name.length + 2 + 2);
  go.writeUInt32BE(name.length, 0);
  name.copy(go, 4);
  go.writeUInt16BE(1, 4 + name.length);
  go.writeUInt16BE(INFO_BLOCK_SIZE, 6 + name.length);
  socket.write(optionBytes(OPT_GO, go));
  let size_bytes = -1;
  for (;;) {
    const reply = await optionReply(reader, target);
    if (isOptionReplyError(reply.type)) {
      const message = reply.payload.toString('utf8');
      throw new UblksnapError('EINVAL', `${target.uri}: no export ${JSON.stringify(target.export_name)}${message ? ` (${message})` : ''}`);
    }
    if (reply.type === REP_INFO && reply.payload.length >= 2 && reply.payload.readUInt16BE(0) === INFO_EXPORT) {
      size_bytes = readU64(reply.payload, 2);
    }
    if (reply.type === REP_ACK) break;
  }
  if (size_bytes < 0 || !Number.isSafeInteger(size_bytes)) throw new UblksnapError('EIO', `${target.uri}: GO gave no export size`);
  return size_bytes;
}

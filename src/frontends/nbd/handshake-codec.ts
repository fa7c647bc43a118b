// Handshake-phase messages as pure functions over Buffers: the greeting,
// the client flags, option headers, the option payloads we parse (INFO/GO,
// LIST_META_CONTEXT/SET_META_CONTEXT) and every option reply we send.
// Parsers validate untrusted bytes and return a value or a reason string
// (the NBD parser is a boundary, docs/style.md habit 9); encoders only assert.
//
// The handshake is not the hot path: these allocate freely.

import { isUtf8 } from 'node:buffer';
import { assert } from '../../shared/assert';
import {
  CLIENT_FLAGS_BYTES, EXPORT_NAME_REPLY_BYTES, EXPORT_NAME_ZEROES_BYTES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES,
  GREETING_BYTES, IHAVEOPT_HIGH, IHAVEOPT_LOW, INFO_BLOCK_SIZE, INFO_BLOCK_SIZE_BYTES, INFO_DESCRIPTION,
  INFO_EXPORT, INFO_EXPORT_BYTES, INFO_NAME, NBDMAGIC_HIGH, NBDMAGIC_LOW, OPTION_HEADER_BYTES,
  OPTION_REPLY_HEADER_BYTES, OPTION_REPLY_MAGIC_HIGH, OPTION_REPLY_MAGIC_LOW, REP_INFO, REP_META_CONTEXT,
  REP_SERVER, STRING_BYTES_MAX, writeU64,
} from './protocol';

/** The handshake flags we offer: fixed newstyle, and leaving out EXPORT_NAME's zeroes. */
export const SERVER_HANDSHAKE_FLAGS = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;
/** INFO/GO data: name length u32, name, request count u16, requests u16 each. */
const INFO_REQUEST_FIXED_BYTES = 6;
/** Meta-context data: name length u32, name, query count u32, each query length u32 + query. */
const META_REQUEST_FIXED_BYTES = 8;
const U32_BYTES = 4;
const U16_BYTES = 2;

export function encodeGreeting(): Buffer {
  const buffer = Buffer.alloc(GREETING_BYTES);
  buffer.writeUInt32BE(NBDMAGIC_HIGH, 0);
  buffer.writeUInt32BE(NBDMAGIC_LOW, 4);
  buffer.writeUInt32BE(IHAVEOPT_HIGH, 8);
  buffer.writeUInt32BE(IHAVEOPT_LOW, 12);
  buffer.writeUInt16BE(SERVER_HANDSHAKE_FLAGS, 16);
  return buffer;
}

export function parseClientFlags(buffer: Buffer): number {
  assert(buffer.length >= CLIENT_FLAGS_BYTES, 'client flags need 4 bytes');
  return buffer.readUInt32BE(0);
}

export interface OptionHeader {
  magic_ok: boolean;
  option: number;
  length: number;
}

export function parseOptionHeader(buffer: Buffer): OptionHeader {
  assert(buffer.length >= OPTION_HEADER_BYTES, 'an option header needs 16 bytes');
  return {
    magic_ok: buffer.readUInt32BE(0) === IHAVEOPT_HIGH && buffer.readUInt32BE(4) === IHAVEOPT_LOW,
    option: buffer.readUInt32BE(8),
    length: buffer.readUInt32BE(12),
  };
}

/** A protocol string: valid UTF-8, no NUL, at most 4096 bytes; null otherwise. */
export function decodeString(bytes: Buffer): string | null {
  if (bytes.length > STRING_BYTES_MAX || bytes.includes(0) || !isUtf8(bytes)) return null;
  return bytes.toString('utf8');
}

export interface InfoRequest {
  name: string;
  /** The NBD_INFO_* types asked for, each once. */
  info_types: number[];
}

/** INFO and GO data; a string is the reason it is invalid (REP_ERR_INVALID). */
export function parseInfoRequest(data: Buffer): InfoRequest | string {
  if (data.length < INFO_REQUEST_FIXED_BYTES) return `${data.length} bytes are too few for an INFO/GO request`;
  const name_bytes = data.readUInt32BE(0);
  if (name_bytes > data.length - INFO_REQUEST_FIXED_BYTES) return `export name length ${name_bytes} overruns the option`;
  const name = decodeString(data.subarray(U32_BYTES, U32_BYTES + name_bytes));
  if (name === null) return 'export name is not a valid NBD string';
  const count = data.readUInt16BE(U32_BYTES + name_bytes);
  const list_start = U32_BYTES + name_bytes + U16_BYTES;
  if (data.length - list_start !== count * U16_BYTES) {
    return `${count} information requests do not fill the ${data.length - list_start} remaining bytes`;
  }
  const info_types: number[] = [];
  for (let index = 0; index < count; index += 1) {
    const type = data.readUInt16BE(list_start + index * U16_BYTES);
    // proto.md: a client MUST NOT repeat a request; we answer each once regardless.
    if (!info_types.includes(type)) info_types.push(type);
  }
  return { name, info_types };
}

export interface MetaContextRequest {
  export_name: string;
  queries: string[];
}

/** LIST_META_CONTEXT and SET_META_CONTEXT data; a string is why it is invalid. */
export function parseMetaContextRequest(data: Buffer, queries_max: number): MetaContextRequest | string {
  if (data.length < META_REQUEST_FIXED_BYTES) return `${data.length} bytes are too few for a meta context request`;
  const name_bytes = data.readUInt32BE(0);
  if (name_bytes > data.length - META_REQUEST_FIXED_BYTES) return `export name length ${name_bytes} overruns the option`;
  const export_name = decodeString(data.subarray(U32_BYTES, U32_BYTES + name_bytes));
  if (export_name === null) return 'export name is not a valid NBD string';
  let cursor = U32_BYTES + name_bytes;
  const count = data.readUInt32BE(cursor);
  cursor += U32_BYTES;
  if (count > queries_max) return `${count} queries are more than the ${queries_max} accepted`;
  const queries: string[] = [];
  for (let index = 0; index < count; index += 1) {
    if (data.length - cursor < U32_BYTES) return `query ${index} has no length`;
    const query_bytes = data.readUInt32BE(cursor);
    cursor += U32_BYTES;
    if (query_bytes > data.length - cursor) return `query ${index} length ${query_bytes} overruns the option`;
    const query = decodeString(data.subarray(cursor, cursor + query_bytes));
    if (query === null) return `query ${index} is not a valid NBD string`;
    queries.push(query);
    cursor += query_bytes;
  }
  if (cursor !== data.length) return `${data.length - cursor} bytes follow the last query`;
  return { export_name, queries };
}

/** Any option reply: header, then the payload if any. */
export function encodeOptionReply(option: number, reply_type: number, payload?: Buffer): Buffer {
  const payload_bytes = payload ? payload.length : 0;
  const buffer = Buffer.alloc(OPTION_REPLY_HEADER_BYTES + payload_bytes);
  buffer.writeUInt32BE(OPTION_REPLY_MAGIC_HIGH, 0);
  buffer.writeUInt32BE(OPTION_REPLY_MAGIC_LOW, 4);
  buffer.writeUInt32BE(option >>> 0, 8);
  buffer.writeUInt32BE(reply_type >>> 0, 12);
  buffer.writeUInt32BE(payload_bytes, 16);
  if (payload) payload.copy(buffer, OPTION_REPLY_HEADER_BYTES);
  return buffer;
}

/** An error reply carrying a message for humans (clipped to the string limit). */
export function encodeOptionError(option: number, reply_type: number, message: string): Buffer {
  return encodeOptionReply(option, reply_type, clippedString(message));
}

export function clippedString(text: string): Buffer {
  const bytes = Buffer.from(text.replace(/\0/g, ' '), 'utf8');
  if (bytes.length <= STRING_BYTES_MAX) return bytes;
  // Cut on a character boundary: drop trailing continuation bytes.
  let end = STRING_BYTES_MAX;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end -= 1;
  return bytes.subarray(0, end);
}

/** REP_SERVER for LIST: name length, name, then a description for humans. */
export function encodeServerReply(option: number, name: string, description: string): Buffer {
  const name_bytes = Buffer.from(name, 'utf8');
  const payload = Buffer.concat([Buffer.alloc(U32_BYTES), name_bytes, clippedString(description)]);
  payload.writeUInt32BE(name_bytes.length, 0);
  return encodeOptionReply(option, REP_SERVER, payload);
}

export function encodeInfoExport(option: number, size_bytes: number, transmission_flags: number): Buffer {
  const payload = Buffer.alloc(INFO_EXPORT_BYTES);
  payload.writeUInt16BE(INFO_EXPORT, 0);
  writeU64(payload, size_bytes, 2);
  payload.writeUInt16BE(transmission_flags, 10);
  return encodeOptionReply(option, REP_INFO, payload);
}

export interface BlockSizes {
  minimum_bytes: number;
  preferred_bytes: number;
  maximum_bytes: number;
}

export function encodeInfoBlockSize(option: number, sizes: BlockSizes): Buffer {
  const payload = Buffer.alloc(INFO_BLOCK_SIZE_BYTES);
  payload.writeUInt16BE(INFO_BLOCK_SIZE, 0);
  payload.writeUInt32BE(sizes.minimum_bytes, 2);
  payload.writeUInt32BE(sizes.preferred_bytes, 6);
  payload.writeUInt32BE(sizes.maximum_bytes, 10);
  return encodeOptionReply(option, REP_INFO, payload);
}

/** INFO_NAME or INFO_DESCRIPTION: the type, then the string. */
export function encodeInfoString(option: number, info_type: typeof INFO_NAME | typeof INFO_DESCRIPTION, text: string): Buffer {
  const type = Buffer.alloc(U16_BYTES);
  type.writeUInt16BE(info_type, 0);
  return encodeOptionReply(option, REP_INFO, Buffer.concat([type, clippedString(text)]));
}

export function encodeMetaContextReply(option: number, context_id: number, name: string): Buffer {
  const id = Buffer.alloc(U32_BYTES);
  id.writeUInt32BE(context_id, 0);
  return encodeOptionReply(option, REP_META_CONTEXT, Buffer.concat([id, Buffer.from(name, 'utf8')]));
}

/** EXPORT_NAME's answer: size, transmission flags, and 124 zeroes unless NO_ZEROES was agreed. */
export function encodeExportNameReply(size_bytes: number, transmission_flags: number, no_zeroes: boolean): Buffer {
  const buffer = Buffer.alloc(EXPORT_NAME_REPLY_BYTES + (no_zeroes ? 0 : EXPORT_NAME_ZEROES_BYTES));
  writeU64(buffer, size_bytes, 0);
  buffer.writeUInt16BE(transmission_flags, 8);
  return buffer;
}

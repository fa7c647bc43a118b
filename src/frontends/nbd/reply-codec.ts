// Transmission-phase replies written into caller-owned Buffers: simple
// replies, structured chunk headers (OFFSET_DATA, NONE, BLOCK_STATUS) and
// error chunks (ERROR, ERROR_OFFSET). Each function writes at a position
// and returns the bytes written; none allocates, so the request path can
// encode into per-tag header space and slab slots.
//
// The request's 8-byte handle is copied from where the request header put
// it (`handles` at handle_position), never decoded: it is opaque.

import { assert } from '../../shared/assert';
import { clippedString } from './handshake-codec';
import {
  BLOCK_DESCRIPTOR_BYTES, BLOCK_STATUS_PREFIX_BYTES, ERROR_OFFSET_SUFFIX_BYTES, ERROR_PREFIX_BYTES, OFFSET_DATA_PREFIX_BYTES,
  REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET, REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA,
  SIMPLE_REPLY_HEADER_BYTES, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_HEADER_BYTES, STRUCTURED_REPLY_MAGIC,
  U32_MAX, writeU64,
} from './protocol';

export const HANDLE_BYTES = 8;
/** Header bytes of an OFFSET_DATA chunk before its data: chunk header and offset. */
export const OFFSET_DATA_HEADER_BYTES = STRUCTURED_REPLY_HEADER_BYTES + OFFSET_DATA_PREFIX_BYTES;
/** Header bytes of a BLOCK_STATUS chunk before its descriptors: chunk header and context id. */
export const BLOCK_STATUS_HEADER_BYTES = STRUCTURED_REPLY_HEADER_BYTES + BLOCK_STATUS_PREFIX_BYTES;
/** The most any fixed reply header here takes: what per-tag header space must hold. */
export const REPLY_HEADER_BYTES_MAX = OFFSET_DATA_HEADER_BYTES;

/** Simple reply: magic, error, handle. A successful READ's data follows it. */
export function writeSimpleReply(out: Buffer, position: number, error: number,
  handles: Buffer, handle_position: number): number {
  out.writeUInt32BE(SIMPLE_REPLY_MAGIC, position);
  out.writeUInt32BE(error, position + 4);
  handles.copy(out, position + 8, handle_position, handle_position + HANDLE_BYTES);
  return SIMPLE_REPLY_HEADER_BYTES;
}

/** A structured chunk header: magic, flags, type, handle, payload length. */
export function writeChunkHeader(out: Buffer, position: number, flags: number, type: number,
  handles: Buffer, handle_position: number, payload_bytes: number): number {
  assert(payload_bytes >= 0 && payload_bytes <= U32_MAX, `chunk payload of ${payload_bytes} bytes`);
  out.writeUInt32BE(STRUCTURED_REPLY_MAGIC, position);
  out.writeUInt16BE(flags, position + 4);
  out.writeUInt16BE(type, position + 6);
  handles.copy(out, position + 8, handle_position, handle_position + HANDLE_BYTES);
  out.writeUInt32BE(payload_bytes, position + 16);
  return STRUCTURED_REPLY_HEADER_BYTES;
}

/** The header of an OFFSET_DATA chunk whose data_bytes of data the caller sends next. */
export function writeOffsetDataHeader(out: Buffer, position: number, flags: number,
  handles: Buffer, handle_position: number, offset: number, data_bytes: number): number {
  assert(data_bytes >= 1, 'an OFFSET_DATA chunk describes at least one byte');
  writeChunkHeader(out, position, flags, REPLY_TYPE_OFFSET_DATA, handles, handle_position, OFFSET_DATA_PREFIX_BYTES + data_bytes);
  writeU64(out, offset, position + STRUCTURED_REPLY_HEADER_BYTES);
  return OFFSET_DATA_HEADER_BYTES;
}

/** NONE: the final chunk of a reply with nothing more to say (flags must hold DONE). */
export function writeNoneChunk(out: Buffer, position: number, flags: number, handles: Buffer, handle_position: number): number {
  return writeChunkHeader(out, position, flags, REPLY_TYPE_NONE, handles, handle_position, 0);
}

/** The bytes an ERROR (offset null) or ERROR_OFFSET chunk with this message takes. */
export function errorChunkBytes(message: Buffer, with_offset: boolean): number {
  return STRUCTURED_REPLY_HEADER_BYTES + ERROR_PREFIX_BYTES + message.length + (with_offset ? ERROR_OFFSET_SUFFIX_BYTES : 0);
}

/**
 * An ERROR chunk, or ERROR_OFFSET when offset is not null: error, message
 * length, message, [offset]. The message must already be a valid string.
 */
export function writeErrorChunk(out: Buffer, position: number, flags: number, handles: Buffer, handle_position: number,
  error: number, message: Buffer, offset: number | null): number {
  assert(error !== 0, 'an error chunk carries a nonzero error');
  const with_offset = offset !== null;
  const payload_bytes = ERROR_PREFIX_BYTES + message.length + (with_offset ? ERROR_OFFSET_SUFFIX_BYTES : 0);
  writeChunkHeader(out, position, flags, with_offset ? REPLY_TYPE_ERROR_OFFSET : REPLY_TYPE_ERROR,
    handles, handle_position, payload_bytes);
  let cursor = position + STRUCTURED_REPLY_HEADER_BYTES;
  out.writeUInt32BE(error, cursor);
  out.writeUInt16BE(message.length, cursor + 4);
  cursor += ERROR_PREFIX_BYTES;
  message.copy(out, cursor);
  cursor += message.length;
  if (with_offset) writeU64(out, offset, cursor);
  return STRUCTURED_REPLY_HEADER_BYTES + payload_bytes;
}

/** The header of a BLOCK_STATUS chunk with descriptor_count descriptors (the caller writes them after it). */
export function writeBlockStatusHeader(out: Buffer, position: number, flags: number, handles: Buffer,
  handle_position: number, context_id: number, descriptor_count: number): number {
  assert(descriptor_count >= 1, 'a BLOCK_STATUS chunk has at least one descriptor');
  writeChunkHeader(out, position, flags, REPLY_TYPE_BLOCK_STATUS, handles, handle_position,
    BLOCK_STATUS_PREFIX_BYTES + descriptor_count * BLOCK_DESCRIPTOR_BYTES);
  out.writeUInt32BE(context_id, position + STRUCTURED_REPLY_HEADER_BYTES);
  return BLOCK_STATUS_HEADER_BYTES;
}

/**
 * A whole error reply, allocated (the error path may): a simple reply
 * carrying the error, or with structured replies an ERROR chunk (ERROR_OFFSET
 * when offset is not null) flagged DONE, carrying the message.
 */
export function encodeErrorReply(structured: boolean, error: number, message: string, offset: number | null,
  handles: Buffer, handle_position: number): Buffer {
  if (!structured) {
    const reply = Buffer.alloc(SIMPLE_REPLY_HEADER_BYTES);
    writeSimpleReply(reply, 0, error, handles, handle_position);
    return reply;
  }
  const text = clippedString(message);
  const reply = Buffer.alloc(errorChunkBytes(text, offset !== null));
  writeErrorChunk(reply, 0, REPLY_FLAG_DONE, handles, handle_position, error, text, offset);
  return reply;
}

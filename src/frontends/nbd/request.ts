// Transmission requests: the 28-byte header parsed into a reused record,
// and the checks every request passes before any of its payload is
// buffered or any engine I/O is started. This is the NBD boundary
// (docs/style.md habit 9): every field is untrusted.
//
// Verdicts, in the order they are checked (proto.md "Request types" and
// "Error values"):
//
//   wrong magic                                  hard disconnect (stream lost)
//   WRITE payload past discard_bytes_max         hard disconnect (a DoS; proto.md allows it)
//   DISC                                         no reply: finish in-flight, close
//   unknown command                              EINVAL
//   a flag not defined for the command           EINVAL
//   write, trim or zero on a read-only export    EPERM
//   past the end: WRITE, WRITE_ZEROES            ENOSPC
//                 READ, TRIM, BLOCK_STATUS       EINVAL
//   READ / WRITE longer than the maximum block   EINVAL
//   not aligned to the minimum block             EINVAL
//   BLOCK_STATUS with no context, or length 0    EINVAL
//   WRITE_ZEROES with FAST_ZERO                  ENOTSUP (we cannot promise fast)
//
// A rejected WRITE still has its payload on the wire: the connection reads
// and discards it, then answers. FUA is accepted on every command, as
// proto.md requires once SEND_FUA is offered (and harmless otherwise).

import {
  CMD_BLOCK_STATUS, CMD_DISC, CMD_FLAG_DF, CMD_FLAG_FAST_ZERO, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_REQ_ONE,
  CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, NBD_EINVAL, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM,
  REQUEST_HEADER_BYTES, REQUEST_MAGIC, commandName, readU64,
} from './protocol';

/** The decoded request header. One record per connection, overwritten per request. */
export interface RequestHeader {
  magic_ok: boolean;
  flags: number;
  type: number;
  /** Byte offset; Infinity when the u64 exceeds 2^53 (always out of range). */
  offset: number;
  length: number;
}

export function newRequestHeader(): RequestHeader {
  return { magic_ok: false, flags: 0, type: 0, offset: 0, length: 0 };
}

/** Where the handle sits in the request header (copied out raw, never decoded). */
export const REQUEST_HANDLE_POSITION = 8;

export function parseRequestHeader(buffer: Buffer, out: RequestHeader): void {
  out.magic_ok = buffer.readUInt32BE(0) === REQUEST_MAGIC;
  out.flags = buffer.readUInt16BE(4);
  out.type = buffer.readUInt16BE(6);
  out.offset = readU64(buffer, 16);
  out.length = buffer.readUInt32BE(24);
}

/** Everything about the bound export and the connection that the checks need. */
export interface RequestLimits {
  size_bytes: number;
  writable: boolean;
  structured: boolean;
  minimum_block_bytes: number;
  /** The maximum block size advertised: READ and WRITE lengths above it are refused. */
  maximum_payload_bytes: number;
  /** A WRITE whose payload is larger than this is a denial of service: disconnect. */
  discard_bytes_max: number;
  contexts_count: number;
}

export const enum Verdict {
  OK = 0,
  /** Answer with the error in `problem` (after discarding a WRITE's payload). */
  ERROR = 1,
  DISCONNECT = 2,
  DISC = 3,
}

export const enum Problem {
  NONE = 0,
  BAD_MAGIC,
  PAYLOAD_TOO_LARGE_TO_DISCARD,
  UNKNOWN_COMMAND,
  BAD_FLAGS,
  READ_ONLY,
  PAST_END,
  TOO_LONG,
  UNALIGNED,
  NO_CONTEXTS,
  ZERO_LENGTH_STATUS,
  FAST_ZERO,
}

/** Flags each command accepts; FUA everywhere (see the header comment). */
function allowedFlags(type: number, structured: boolean): number {
  switch (type) {
    case CMD_READ: return CMD_FLAG_FUA | (structured ? CMD_FLAG_DF : 0);
    case CMD_WRITE_ZEROES: return CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO;
    case CMD_BLOCK_STATUS: return CMD_FLAG_FUA | CMD_FLAG_REQ_ONE;
    default: return CMD_FLAG_FUA;
  }
}

function isKnownCommand(type: number): boolean {
  return type === CMD_READ || type === CMD_WRITE || type === CMD_DISC || type === CMD_FLUSH ||
    type === CMD_TRIM || type === CMD_WRITE_ZEROES || type === CMD_BLOCK_STATUS;
}

/** The first problem of a request, or Problem.NONE. */
export function checkRequest(header: RequestHeader, limits: RequestLimits): Problem {
  if (!header.magic_ok) return Problem.BAD_MAGIC;
  const type = header.type;
  if (type === CMD_WRITE && header.length > limits.discard_bytes_max) return Problem.PAYLOAD_TOO_LARGE_TO_DISCARD;
  if (type === CMD_DISC) return Problem.NONE;
  if (!isKnownCommand(type)) return Problem.UNKNOWN_COMMAND;
  if ((header.flags & ~allowedFlags(type, limits.structured)) !== 0) return Problem.BAD_FLAGS;
  const writes = type === CMD_WRITE || type === CMD_TRIM || type === CMD_WRITE_ZEROES;
  if (writes && !limits.writable) return Problem.READ_ONLY;
  if (type === CMD_FLUSH) return Problem.NONE;
  // offset may be Infinity (a u64 past 2^53): the comparison still holds.
  if (header.offset + header.length > limits.size_bytes) return Problem.PAST_END;
  if ((type === CMD_READ || type === CMD_WRITE) && header.length > limits.maximum_payload_bytes) return Problem.TOO_LONG;
  const minimum = limits.minimum_block_bytes;
  if (minimum > 1 && (header.offset % minimum !== 0 || header.length % minimum !== 0)) return Problem.UNALIGNED;
  if (type === CMD_BLOCK_STATUS) {
    if (limits.contexts_count === 0) return Problem.NO_CONTEXTS;
    if (header.length === 0) return Problem.ZERO_LENGTH_STATUS;
  }
  if (type === CMD_WRITE_ZEROES && (header.flags & CMD_FLAG_FAST_ZERO) !== 0) return Problem.FAST_ZERO;
  return Problem.NONE;
}

export function verdictOf(problem: Problem, type: number): Verdict {
  if (problem === Problem.BAD_MAGIC || problem === Problem.PAYLOAD_TOO_LARGE_TO_DISCARD) return Verdict.DISCONNECT;
  if (problem !== Problem.NONE) return Verdict.ERROR;
  return type === CMD_DISC ? Verdict.DISC : Verdict.OK;
}

export function errorOf(problem: Problem, type: number): number {
  switch (problem) {
    case Problem.READ_ONLY: return NBD_EPERM;
    case Problem.PAST_END: return type === CMD_WRITE || type === CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
    case Problem.FAST_ZERO: return NBD_ENOTSUP;
    default: return NBD_EINVAL;
  }
}

/** A sentence for the error chunk and the log: built only on the error path. */
export function describeProblem(problem: Problem, header: RequestHeader, limits: RequestLimits): string {
  const what = `${commandName(header.type)} of ${header.length} bytes at ${header.offset}`;
  switch (problem) {
    case Problem.NONE: return 'no problem';
    case Problem.BAD_MAGIC: return 'request magic is wrong: the stream is out of step';
    case Problem.PAYLOAD_TOO_LARGE_TO_DISCARD:
      return `${what}: payload above ${limits.discard_bytes_max} bytes is taken for a denial of service`;
    case Problem.UNKNOWN_COMMAND: return `unknown command ${header.type}`;
    case Problem.BAD_FLAGS: return `${what}: flags 0x${header.flags.toString(16)} are not valid for this command`;
    case Problem.READ_ONLY: return `${what}: the export is read-only`;
    case Problem.PAST_END: return `${what}: past the end of the ${limits.size_bytes}-byte export`;
    case Problem.TOO_LONG: return `${what}: longer than the maximum block of ${limits.maximum_payload_bytes} bytes`;
    case Problem.UNALIGNED: return `${what}: not aligned to the minimum block of ${limits.minimum_block_bytes} bytes`;
    case Problem.NO_CONTEXTS: return 'BLOCK_STATUS without a metadata context selected by SET_META_CONTEXT';
    case Problem.ZERO_LENGTH_STATUS: return 'BLOCK_STATUS of length 0';
    case Problem.FAST_ZERO: return 'WRITE_ZEROES with FAST_ZERO: zeroing is not known to be faster than writing here';
  }
}

export { REQUEST_HEADER_BYTES };

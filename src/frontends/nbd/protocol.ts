// NBD wire constants: magics, handshake and transmission flags, options,
// option replies, information types, commands, command flags, structured
// reply types, errors and the fixed header sizes. The values are the NBD
// project's doc/proto.md (fixed newstyle, INFO/GO, structured replies,
// metadata contexts, WRITE_ZEROES, FAST_ZERO). Everything on the wire is
// big-endian.
//
// Message shapes (bytes):
//
//   server greeting   NBDMAGIC u64 · IHAVEOPT u64 · handshake flags u16      18
//   client flags      u32                                                      4
//   option            IHAVEOPT u64 · option u32 · length u32 · data          16+
//   option reply      REPLY_MAGIC u64 · option u32 · type u32 · length u32 · data   20+
//   EXPORT_NAME reply size u64 · transmission flags u16 · [124 zero bytes]   10 / 134
//   request           REQUEST_MAGIC u32 · flags u16 · type u16 · handle u64
//                     · offset u64 · length u32 · [payload of WRITE]          28+
//   simple reply      SIMPLE_MAGIC u32 · error u32 · handle u64 · [data]      16+
//   structured chunk  STRUCTURED_MAGIC u32 · flags u16 · type u16 · handle u64
//                     · length u32 · payload                                  20+

/** 'NBDMAGIC' as two 32-bit halves, written without BigInt on the hot path. */
import { blockErrnoOf } from '../../shared/errors';

export const NBDMAGIC_HIGH = 0x4e42444d;
export const NBDMAGIC_LOW = 0x41474943;
/** 'IHAVEOPT': the greeting's second magic and every option's first field. */
export const IHAVEOPT_HIGH = 0x49484156;
export const IHAVEOPT_LOW = 0x454f5054;
/** The magic of every option reply: 0x0003e889045565a9. */
export const OPTION_REPLY_MAGIC_HIGH = 0x0003e889;
export const OPTION_REPLY_MAGIC_LOW = 0x045565a9;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const GREETING_BYTES = 18;
export const CLIENT_FLAGS_BYTES = 4;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
/** EXPORT_NAME's reply: size and flags, then the zeroes NO_ZEROES omits. */
export const EXPORT_NAME_REPLY_BYTES = 10;
export const EXPORT_NAME_ZEROES_BYTES = 124;
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
/** OFFSET_DATA's payload starts with the offset of its data. */
export const OFFSET_DATA_PREFIX_BYTES = 8;
/** An ERROR chunk's payload before its message: error u32, message length u16. */
export const ERROR_PREFIX_BYTES = 6;
/** ERROR_OFFSET carries the offset after the message. */
export const ERROR_OFFSET_SUFFIX_BYTES = 8;
/** BLOCK_STATUS payload: context id u32, then descriptors of length u32 · flags u32. */
export const BLOCK_STATUS_PREFIX_BYTES = 4;
export const BLOCK_DESCRIPTOR_BYTES = 8;

/** proto.md: strings (export names, messages, context names) are at most 4096 bytes. */
export const STRING_BYTES_MAX = 4096;
/** The largest value of a u32 length field, and the 'no limit' maximum block size. */
export const U32_MAX = 0xffffffff;

// Handshake flags (server, 16 bits).
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;

// Client flags (32 bits). Any other bit: the server must drop the connection.
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;
export const CLIENT_FLAGS_KNOWN = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;

// Transmission flags (16 bits).
export const FLAG_HAS_FLAGS = 1 << 0;
export const FLAG_READ_ONLY = 1 << 1;
export const FLAG_SEND_FLUSH = 1 << 2;
export const FLAG_SEND_FUA = 1 << 3;
export const FLAG_ROTATIONAL = 1 << 4;
export const FLAG_SEND_TRIM = 1 << 5;
export const FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const FLAG_SEND_DF = 1 << 7;
export const FLAG_CAN_MULTI_CONN = 1 << 8;
export const FLAG_SEND_RESIZE = 1 << 9;
export const FLAG_SEND_CACHE = 1 << 10;
export const FLAG_SEND_FAST_ZERO = 1 << 11;

// Options.
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_PEEK_EXPORT = 4;
export const OPT_STARTTLS = 5;
export const OPT_INFO = 6;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_LIST_META_CONTEXT = 9;
export const OPT_SET_META_CONTEXT = 10;
export const OPT_EXTENDED_HEADERS = 11;

// Option reply types. Errors have bit 31 set; `>>> 0` keeps them unsigned.
export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const REP_META_CONTEXT = 4;
const REP_ERROR_BIT = 0x80000000;
export const REP_ERR_UNSUP = (REP_ERROR_BIT | 1) >>> 0;
export const REP_ERR_POLICY = (REP_ERROR_BIT | 2) >>> 0;
export const REP_ERR_INVALID = (REP_ERROR_BIT | 3) >>> 0;
export const REP_ERR_PLATFORM = (REP_ERROR_BIT | 4) >>> 0;
export const REP_ERR_TLS_REQD = (REP_ERROR_BIT | 5) >>> 0;
export const REP_ERR_UNKNOWN = (REP_ERROR_BIT | 6) >>> 0;
export const REP_ERR_SHUTDOWN = (REP_ERROR_BIT | 7) >>> 0;
export const REP_ERR_BLOCK_SIZE_REQD = (REP_ERROR_BIT | 8) >>> 0;
export const REP_ERR_TOO_BIG = (REP_ERROR_BIT | 9) >>> 0;

export function isOptionReplyError(reply_type: number): boolean {
  return (reply_type & REP_ERROR_BIT) !== 0;
}

// Information types of REP_INFO (answers to INFO and GO).
export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_DESCRIPTION = 2;
export const INFO_BLOCK_SIZE = 3;
/** REP_INFO lengths, the 2-byte type included. */
export const INFO_EXPORT_BYTES = 12;
export const INFO_BLOCK_SIZE_BYTES = 14;

// Commands.
export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_CACHE = 5;
export const CMD_WRITE_ZEROES = 6;
export const CMD_BLOCK_STATUS = 7;

// Command flags.
export const CMD_FLAG_FUA = 1 << 0;
export const CMD_FLAG_NO_HOLE = 1 << 1;
export const CMD_FLAG_DF = 1 << 2;
export const CMD_FLAG_REQ_ONE = 1 << 3;
export const CMD_FLAG_FAST_ZERO = 1 << 4;

// Structured reply flags and types.
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE_NONE = 0;
export const REPLY_TYPE_OFFSET_DATA = 1;
export const REPLY_TYPE_OFFSET_HOLE = 2;
export const REPLY_TYPE_BLOCK_STATUS = 5;
export const REPLY_TYPE_ERROR = (1 << 15) | 1;
export const REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2;

// Errors on the wire: a restricted set with Linux errno values (shared/errors.ts maps every errno onto it).
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/**
 * The NBD error for an engine errno: the shared table's block answer
 * (shared/errors.ts), whose values are exactly the errors NBD carries.
 */
export function nbdErrorOf(errno: number): number {
  return blockErrnoOf(errno);
}

/** Names for logs and test messages. */
export function commandName(type: number): string {
  switch (type) {
    case CMD_READ: return 'READ';
    case CMD_WRITE: return 'WRITE';
    case CMD_DISC: return 'DISC';
    case CMD_FLUSH: return 'FLUSH';
    case CMD_TRIM: return 'TRIM';
    case CMD_CACHE: return 'CACHE';
    case CMD_WRITE_ZEROES: return 'WRITE_ZEROES';
    case CMD_BLOCK_STATUS: return 'BLOCK_STATUS';
    default: return `command ${type}`;
  }
}

export function optionName(option: number): string {
  switch (option) {
    case OPT_EXPORT_NAME: return 'EXPORT_NAME';
    case OPT_ABORT: return 'ABORT';
    case OPT_LIST: return 'LIST';
    case OPT_PEEK_EXPORT: return 'PEEK_EXPORT';
    case OPT_STARTTLS: return 'STARTTLS';
    case OPT_INFO: return 'INFO';
    case OPT_GO: return 'GO';
    case OPT_STRUCTURED_REPLY: return 'STRUCTURED_REPLY';
    case OPT_LIST_META_CONTEXT: return 'LIST_META_CONTEXT';
    case OPT_SET_META_CONTEXT: return 'SET_META_CONTEXT';
    case OPT_EXTENDED_HEADERS: return 'EXTENDED_HEADERS';
    default: return `option ${option}`;
  }
}

/** A u64 read as a number; values past 2^53 become Infinity (past every export end). */
export function readU64(buffer: Buffer, offset: number): number {
  const high = buffer.readUInt32BE(offset);
  const low = buffer.readUInt32BE(offset + 4);
  // 2^21 × 2^32 = 2^53: at or past it a double loses integers.
  if (high >= 0x200000) return Infinity;
  return high * 0x100000000 + low;
}

/** Writes a u64 from a safe integer, without BigInt. */
export function writeU64(buffer: Buffer, value: number, offset: number): void {
  const high = Math.floor(value / 0x100000000);
  buffer.writeUInt32BE(high, offset);
  buffer.writeUInt32BE(value - high * 0x100000000, offset + 4);
}

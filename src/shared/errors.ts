// Operating errors: values with a code, never bugs. One table says, for
// each code, what every boundary answers with:
//
//   errno       the Linux number (x86_64/arm64 values)
//   block       what a block-device client is told: the small set every
//               block protocol carries (EPERM EIO ENOMEM EINVAL ENOSPC
//               EOVERFLOW ENOTSUP ESHUTDOWN). Frontends reply with it as is.
//   rpc         the JSON-RPC error code: RPC_CODE_BASE − errno
//
// Codes are errno names because the upstream blksnap interface speaks
// errno and backup scripts test for them. A system error whose code is in
// the table keeps it (a full filesystem under a volume stays ENOSPC all the
// way to the client); any other becomes EIO, the answer a block device
// gives for every unexpected failure.

export type ErrorCode =
  | 'EPERM'      // not allowed in the current state
  | 'ENOENT'     // a path that does not exist
  | 'ESRCH'      // an unknown snapshot or volume
  | 'EIO'        // a device failed, or the snapshot is corrupted
  | 'E2BIG'      // a request larger than the configured maximum
  | 'ENOMEM'     // out of memory
  | 'EACCES'     // a permission the daemon lacks
  | 'EBUSY'      // the volume belongs to another snapshot, or is open elsewhere
  | 'EEXIST'     // a name already in use
  | 'ENODEV'     // a frontend or device that is not available
  | 'EINVAL'     // a request or an argument that makes no sense
  | 'EFBIG'      // a file would pass its filesystem's size limit
  | 'ENOSPC'     // no space: the difference storage's limit, or a full filesystem
  | 'EROFS'      // a read-only filesystem or device
  | 'ERANGE'     // an offset or length outside the device
  | 'EOVERFLOW'  // a value too large for its field
  | 'ENOTSUP'    // a feature this storage or kernel lacks
  | 'ESHUTDOWN'  // the engine or daemon is stopping
  | 'ETIMEDOUT'  // a bounded wait ran out
  | 'EALREADY'   // added twice, taken twice
  | 'ECANCELED'  // the user interrupted a long command (Ctrl-C)
  | 'EDQUOT';    // a disk quota ran out

interface ErrorRow {
  errno: number;
  /** The code a block client is answered with. */
  block: ErrorCode;
}

export const ERROR_TABLE: Readonly<Record<ErrorCode, ErrorRow>> = {
  EPERM: { errno: 1, block: 'EPERM' },
  ENOENT: { errno: 2, block: 'EIO' },
  ESRCH: { errno: 3, block: 'EIO' },
  EIO: { errno: 5, block: 'EIO' },
  E2BIG: { errno: 7, block: 'EINVAL' },           // larger than the maximum request
  ENOMEM: { errno: 12, block: 'ENOMEM' },
  EACCES: { errno: 13, block: 'EPERM' },          // a permission, reported as not permitted
  EBUSY: { errno: 16, block: 'EIO' },
  EEXIST: { errno: 17, block: 'EIO' },
  ENODEV: { errno: 19, block: 'EIO' },
  EINVAL: { errno: 22, block: 'EINVAL' },
  EFBIG: { errno: 27, block: 'ENOSPC' },          // a full disk, whatever the cause
  ENOSPC: { errno: 28, block: 'ENOSPC' },
  EROFS: { errno: 30, block: 'EPERM' },           // a read-only target
  ERANGE: { errno: 34, block: 'EINVAL' },         // an offset outside the device
  EOVERFLOW: { errno: 75, block: 'EOVERFLOW' },
  ENOTSUP: { errno: 95, block: 'ENOTSUP' },
  ESHUTDOWN: { errno: 108, block: 'ESHUTDOWN' },
  ETIMEDOUT: { errno: 110, block: 'EIO' },
  EALREADY: { errno: 114, block: 'EIO' },
  ECANCELED: { errno: 125, block: 'EIO' },
  EDQUOT: { errno: 122, block: 'ENOSPC' },        // a full disk, whatever the cause
};

export const ALL_ERROR_CODES = Object.keys(ERROR_TABLE) as ErrorCode[];

/** errno numbers by code, for the hot path (a plain property read). */
export const ERRNO_BY_CODE: Readonly<Record<ErrorCode, number>> = Object.fromEntries(
  ALL_ERROR_CODES.map((code) => [code, ERROR_TABLE[code].errno]),
) as Record<ErrorCode, number>;

/** System codes that are another name of one of ours. */
const ALIASES: Readonly<Record<string, ErrorCode>> = {
  EOPNOTSUPP: 'ENOTSUP',        // the same number on Linux
  EWOULDBLOCK: 'EBUSY',         // a non-blocking lock held by someone else
  EAGAIN: 'EBUSY',
  ENOTBLK: 'EINVAL',            // a path of the wrong kind
  EISDIR: 'EINVAL',
  ENOTDIR: 'EINVAL',
};

/**
 * JSON-RPC error codes. -32000..-32099 is the range JSON-RPC 2.0 leaves to
 * the server; we put the errno underneath so a client can recover it.
 */
export const RPC_CODE_BASE = -32000;
export function rpcCodeOf(code: ErrorCode): number {
  return RPC_CODE_BASE - ERRNO_BY_CODE[code];
}

export function codeOfErrno(errno: number): ErrorCode | undefined {
  for (const code of ALL_ERROR_CODES) if (ERROR_TABLE[code].errno === errno) return code;
  return undefined;
}

/** What a block client is answered for this errno: unknown ones are EIO. */
export function blockErrnoOf(errno: number): number {
  if (errno === 0) return 0;
  const code = codeOfErrno(errno);
  return code === undefined ? ERRNO_BY_CODE.EIO : ERRNO_BY_CODE[ERROR_TABLE[code].block];
}

export class UblksnapError extends Error {
  override name = 'UblksnapError';
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

export function isUblksnapError(error: unknown): error is UblksnapError {
  return error instanceof UblksnapError;
}

/** The table's code for a Node or addon error's `code` string, or undefined. */
function codeOfSystemError(error: unknown): ErrorCode | undefined {
  const system_code = (error as { code?: unknown } | null)?.code;
  if (typeof system_code !== 'string') return undefined;
  if (system_code in ERROR_TABLE) return system_code as ErrorCode;
  return ALIASES[system_code];
}

/**
 * Turns a Node or addon error (with a string `code` such as 'ENOENT') into
 * one of ours, keeping its message. Codes the table lacks become EIO.
 */
export function fromSystemError(error: unknown, context: string): UblksnapError {
  if (error instanceof UblksnapError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new UblksnapError(codeOfSystemError(error) ?? 'EIO', `${context}: ${message}`);
}

/** The errno of any error: ours, a system error, or EIO for anything else. Never allocates. */
export function errnoOf(error: unknown): number {
  if (error instanceof UblksnapError) return ERRNO_BY_CODE[error.code];
  const code = codeOfSystemError(error);
  return code === undefined ? ERRNO_BY_CODE.EIO : ERRNO_BY_CODE[code];
}

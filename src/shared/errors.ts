// Operating errors: values with a code, never bugs. One table maps each code
// to what every boundary answers with: an errno for NBD and ublk replies, a
// JSON-RPC error code for IPC. Codes are errno names because the upstream
// blksnap interface speaks errno and backup scripts test for them.

export type ErrorCode =
  | 'EINVAL'     // a request or an argument that makes no sense
  | 'ENOENT'     // a path that does not exist
  | 'ESRCH'      // an unknown snapshot or volume
  | 'EALREADY'   // added twice, taken twice
  | 'EBUSY'      // the volume belongs to another snapshot, or is open elsewhere
  | 'EEXIST'     // a name already in use
  | 'ENOSPC'     // the difference storage is full (limit reached)
  | 'EIO'        // a device failed, or the snapshot is corrupted
  | 'EPERM'      // not allowed in the current state
  | 'ENODEV'     // a frontend or device that is not available
  | 'ENOTSUP'    // a feature this storage or kernel lacks
  | 'ETIMEDOUT'  // a bounded wait ran out
  | 'ESHUTDOWN'  // the engine or daemon is stopping
  | 'ERANGE'     // an offset or length outside the device
  | 'E2BIG';     // a request larger than the configured maximum

/** errno numbers (Linux x86_64/arm64 values) for NBD and ublk replies. */
export const ERRNO_BY_CODE: Readonly<Record<ErrorCode, number>> = {
  EINVAL: 22, ENOENT: 2, ESRCH: 3, EALREADY: 114, EBUSY: 16, EEXIST: 17,
  ENOSPC: 28, EIO: 5, EPERM: 1, ENODEV: 19, ENOTSUP: 95, ETIMEDOUT: 110,
  ESHUTDOWN: 108, ERANGE: 34, E2BIG: 7,
};

/**
 * JSON-RPC error codes. -32000..-32099 is the range JSON-RPC 2.0 leaves to
 * the server; we put the errno underneath so a client can recover it.
 */
export const RPC_CODE_BASE = -32000;
export function rpcCodeOf(code: ErrorCode): number {
  return RPC_CODE_BASE - ERRNO_BY_CODE[code];
}

export const ALL_ERROR_CODES = Object.keys(ERRNO_BY_CODE) as ErrorCode[];

export function codeOfErrno(errno: number): ErrorCode | undefined {
  for (const code of ALL_ERROR_CODES) if (ERRNO_BY_CODE[code] === errno) return code;
  return undefined;
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

/**
 * Turns a Node or addon error (with a string `code` such as 'ENOENT') into
 * one of ours, keeping its message. Codes we do not model become EIO: to a
 * block device user every unexpected failure is an I/O error.
 */
export function fromSystemError(error: unknown, context: string): UblksnapError {
  if (error instanceof UblksnapError) return error;
  const sysCode = (error as { code?: unknown })?.code;
  const message = error instanceof Error ? error.message : String(error);
  const known: ErrorCode | undefined =
    typeof sysCode === 'string' && (ALL_ERROR_CODES as string[]).includes(sysCode) ? (sysCode as ErrorCode) :
      sysCode === 'EOPNOTSUPP' ? 'ENOTSUP' :
        sysCode === 'EACCES' ? 'EPERM' :
          sysCode === 'EWOULDBLOCK' || sysCode === 'EAGAIN' ? 'EBUSY' :
            sysCode === 'ENOTBLK' || sysCode === 'EISDIR' || sysCode === 'ENOTDIR' ? 'EINVAL' : undefined;
  return new UblksnapError(known ?? 'EIO', `${context}: ${message}`);
}

// A block target as a test sees it: an export (a volume or a snapshot image)
// opened through some frontend, with promise-per-request I/O at byte
// offsets. The frontend contract suite (test/contract) runs every scenario
// through each frontend's driver against this one interface; the load
// machinery (load.ts) writes and checks stamped sectors through it.
//
// Errors: every failed request rejects with a BlockIoError carrying the
// errno the frontend reported (EIO 5, EINVAL 22, ENOSPC 28, ENODEV 19 …),
// whatever the frontend's own error type was.

import { IoError, type IoClient } from '../../src/frontends/in-process/io-client';

export interface BlockTarget {
  /** 'NAME' (a volume) or 'NAME@ID' (an image). */
  readonly export_name: string;
  readonly size_bytes: number;
  read(offset_bytes: number, length_bytes: number): Promise<Buffer>;
  write(offset_bytes: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  /** Ends this target's connection (or queue); requests still in flight are answered first. */
  close(): Promise<void>;
}

export class BlockIoError extends Error {
  constructor(readonly errno: number, what: string) {
    super(`${what} failed with errno ${errno}`);
  }
}

/** The errno of a failed request, or -1 when the error was not an I/O error (a bug in the test or the client). */
export function errnoOf(error: unknown): number {
  return error instanceof BlockIoError ? error.errno : -1;
}

/** Errno values the scenarios expect (Linux; NBD uses the same numbers). */
export const ERRNO = { EIO: 5, ENODEV: 19, EINVAL: 22, ENOSPC: 28, ESHUTDOWN: 108, ENOTCONN: 107 } as const;

/**
 * An export of an in-process engine through an IoClient (the client's
 * queue is shared, the handle resolved once by the caller). close() leaves
 * the client open: whoever made it closes it.
 */
export function clientTarget(client: IoClient, handle: number, export_name: string, size_bytes: number): BlockTarget {
  const rethrow = (error: unknown): never => {
    if (error instanceof IoError) throw new BlockIoError(error.errno, `${export_name}: ${error.message}`);
    throw error;
  };
  return {
    export_name,
    size_bytes,
    read: (offset_bytes, length_bytes) => client.read(handle, offset_bytes, length_bytes).catch(rethrow),
    write: (offset_bytes, data) => client.write(handle, offset_bytes, data).catch(rethrow),
    flush: () => client.flush(handle).catch(rethrow),
    close: () => Promise.resolve(),
  };
}

/**
 * One target over several connections (or queues) to the same export: each
 * call goes to the one with the fewest requests in flight, as a multi-conn
 * client spreads its requests. close() closes them all.
 */
export function spreadTarget(targets: BlockTarget[]): BlockTarget {
  const first = targets[0];
  if (first === undefined) throw new Error('spreadTarget needs at least one target');
  const in_flight = targets.map(() => 0);
  const use = async <T>(run: (target: BlockTarget) => Promise<T>): Promise<T> => {
    let pick = 0;
    for (let i = 1; i < targets.length; i += 1) if (in_flight[i]! < in_flight[pick]!) pick = i;
    in_flight[pick]! += 1;
    try {
      return await run(targets[pick]!);
    } finally {
      in_flight[pick]! -= 1;
    }
  };
  return {
    export_name: first.export_name,
    size_bytes: first.size_bytes,
    read: (offset_bytes, length_bytes) => use((t) => t.read(offset_bytes, length_bytes)),
    write: (offset_bytes, data) => use((t) => t.write(offset_bytes, data)),
    flush: async () => { await Promise.all(targets.map((t) => t.flush())); },
    close: async () => { for (const t of targets) await t.close(); },
  };
}

// nbdcopy as the read load (the whole export to null:, what a backup tool
// does) and as the verifier (the whole export to stdout, hashed here).
//
// nbdcopy runs with its defaults: it opens several connections when the
// server advertises CAN_MULTI_CONN (all three servers here do) and keeps
// many requests in flight on each — what a user of libnbd gets.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { CHECKSUM_ALGORITHM } from './image';

/** A whole-export copy takes seconds; a stuck server must not hang the harness. */
export const NBDCOPY_TIMEOUT_MS = 300_000;

export interface ReadResult {
  bytes: number;
  seconds: number;
  bytes_per_second: number;
}

function nbdcopy(args: string[], onData?: (chunk: Buffer) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('nbdcopy', args, { stdio: ['ignore', onData !== undefined ? 'pipe' : 'ignore', 'pipe'] });
    let errors = '';
    child.stderr!.on('data', (chunk: Buffer) => { errors += chunk.toString(); });
    if (onData !== undefined) child.stdout!.on('data', onData);
    const timer = setTimeout(() => child.kill('SIGKILL'), NBDCOPY_TIMEOUT_MS);
    child.on('error', (error) => { clearTimeout(timer); reject(error); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`nbdcopy ${args.join(' ')} exited with ${signal ?? code}: ${errors.trim().slice(-500)}`));
      else resolve(Number(process.hrtime.bigint() - started) / 1e9);
    });
  });
}

/** Reads the whole export and throws the data away; the wall time includes connecting (milliseconds). */
export async function readExport(uri: string, size_bytes: number): Promise<ReadResult> {
  const seconds = await nbdcopy([uri, 'null:']);
  return { bytes: size_bytes, seconds, bytes_per_second: size_bytes / seconds };
}

/** The checksum of the whole export, read through NBD. */
export async function exportChecksum(uri: string): Promise<{ checksum: string; bytes: number }> {
  const hash = createHash(CHECKSUM_ALGORITHM);
  let bytes = 0;
  await nbdcopy([uri, '-'], (chunk) => { hash.update(chunk); bytes += chunk.length; });
  return { checksum: hash.digest('hex'), bytes };
}

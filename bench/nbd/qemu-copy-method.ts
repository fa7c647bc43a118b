// How QEMU's copy-before-write saves a cluster on the -xfs systems' XFS:
// by reading and writing its bytes, or by copy_file_range, which XFS turns
// into a clone (issue 15: "QEMU's block copy may offload: measure, don't
// assume"). The answer decides what the QEMU -xfs column's write
// amplification means: the blocks its fresh target holds were copied only
// if QEMU wrote them.
//
// Method: a small image and a sparse target on the XFS, the fleecing graph
// of commands.ts, strace attached (-f -c: a count per system call, not a
// trace) while fio writes the image once sequentially; then the counts of
// copy_file_range and of the pwrite family, and the target's blocks.
// Outside the timed rounds: strace slows the daemon many times over.

import { spawn } from 'node:child_process';
import { readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { QSD_VOLUME_EXPORT, qsdFleecingArgs, unixUri } from './commands';
import { runFio } from './fio';
import { fillRandom } from './image';
import { ServerProcess } from './servers';

const MiB = 1024 * 1024;
/** Small: strace makes every system call cost tens of microseconds. */
const PROBE_IMAGE_BYTES = 32 * MiB;
const PROBE_BLOCK_BYTES = MiB;
const PROBE_IODEPTH = 4;
/** strace prints "Process N attached" per thread; this bounds the wait for the first. */
const STRACE_ATTACH_TIMEOUT_MS = 10_000;
/** strace writes its summary and exits on SIGINT; this bounds that. */
const STRACE_EXIT_TIMEOUT_MS = 10_000;
const STAT_BLOCK_BYTES = 512;
const WRITE_CALLS = ['pwrite64', 'pwritev', 'pwritev2', 'write', 'writev'];
const TRACED_CALLS = ['copy_file_range', ...WRITE_CALLS];

export interface QemuCopyMethod {
  copy_file_range_calls: number;
  /** pwrite64, pwritev, pwritev2, write, writev: to the volume, the target and the socket. */
  write_calls: number;
  written_bytes: number;
  target_allocated_bytes: number;
  /** 'read+write' when QEMU never called copy_file_range. */
  method: 'read+write' | 'copy_file_range';
}

/** Call counts from strace -c's summary table ("% time seconds usecs/call calls errors syscall"). */
export function parseStraceCounts(summary: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const line of summary.split('\n')) {
    const fields = line.trim().split(/\s+/);
    const name = fields[fields.length - 1];
    if (fields.length < 5 || name === undefined || !/^[a-z_0-9]+$/.test(name) || name === 'syscall' || name === 'total') continue;
    const calls = Number(fields[3]);
    if (Number.isInteger(calls)) counts[name] = calls;
  }
  return counts;
}

export async function probeQemuCopyMethod(xfs_dir: string, socket_dir: string): Promise<QemuCopyMethod> {
  const image = path.join(xfs_dir, 'qemu-probe-image.raw');
  const target = path.join(xfs_dir, 'qemu-probe-target.raw');
  const summary = path.join(socket_dir, 'qemu-probe-strace.txt');
  const socket_path = path.join(socket_dir, 'qemu-probe.sock');
  fillRandom(image, PROBE_IMAGE_BYTES);
  writeFileSync(target, '');
  truncateSync(target, PROBE_IMAGE_BYTES);
  const server = await ServerProcess.start('qsd-probe', 'qemu-storage-daemon', qsdFleecingArgs(image, target, socket_path), socket_path);
  try {
    const strace = spawn('strace', ['-f', '-c', '-o', summary, '-e', `trace=${TRACED_CALLS.join(',')}`, '-p', String(server.pid)],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => strace.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`strace did not attach to qemu-storage-daemon within ${STRACE_ATTACH_TIMEOUT_MS} ms`)), STRACE_ATTACH_TIMEOUT_MS);
      strace.stderr.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('attached')) { clearTimeout(timer); resolve(); }
      });
      strace.once('error', (error) => { clearTimeout(timer); reject(error); });
    });
    const fio = await runFio(unixUri(socket_path, QSD_VOLUME_EXPORT),
      { pattern: 'write', block_bytes: PROBE_BLOCK_BYTES, iodepth: PROBE_IODEPTH, size_bytes: PROBE_IMAGE_BYTES },
      path.join(socket_dir, 'fio-qemu-probe.json'));
    strace.kill('SIGINT');
    const timer = setTimeout(() => strace.kill('SIGKILL'), STRACE_EXIT_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
    const counts = parseStraceCounts(readFileSync(summary, 'utf8'));
    const copy_file_range_calls = counts.copy_file_range ?? 0;
    return {
      copy_file_range_calls,
      write_calls: WRITE_CALLS.reduce((sum, name) => sum + (counts[name] ?? 0), 0),
      written_bytes: fio.io_bytes,
      target_allocated_bytes: statSync(target).blocks * STAT_BLOCK_BYTES,
      method: copy_file_range_calls === 0 ? 'read+write' : 'copy_file_range',
    };
  } finally {
    await server.kill();
    for (const file of [image, target, summary]) rmSync(file, { force: true });
  }
}

// A kernel block device on an NBD export without the kernel's nbd module:
// nbdfuse exposes the export as a file on a FUSE mount, losetup turns the
// file into /dev/loopN, and a filesystem goes on top. For tests whose NBD
// server runs in this process, so every step is asynchronous (a blocking
// mkfs or mount would wait for a server that cannot run: a deadlock).
//
//   NBD export ──nbdfuse──► DIR/nbd ──losetup──► /dev/loopN ──mount──► MOUNT_DIR
//
// Teardown is in reverse, asynchronous, by the test. If the test file dies
// before that, an exit handler releases what is left with the lazy,
// non-blocking variants (umount -l, losetup -d, fusermount3 -uz): the
// server is gone by then, and a normal umount could wait forever for it.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { eventually, runOk, startTracked, stopTracked } from './nbd-tools';
import { findTool } from './system';

/** nbdfuse has this long to write its pid file (it is ready then). */
export const FUSE_READY_TIMEOUT_MS = 15_000;
/** One synchronous emergency release at exit may take this long. */
const EXIT_RELEASE_TIMEOUT_MS = 10_000;

const exit_releases: { label: string; command: string; args: string[] }[] = [];

process.once('exit', () => {
  while (exit_releases.length > 0) {
    const release = exit_releases.pop()!;
    try {
      execFileSync(findTool(release.command) ?? release.command, release.args, { stdio: 'ignore', timeout: EXIT_RELEASE_TIMEOUT_MS });
    } catch (error) {
      console.error(`test/lib/nbd-block: could not release ${release.label}: ${(error as Error).message}`);
    }
  }
});

function registerExitRelease(label: string, command: string, args: string[]): () => void {
  const entry = { label, command, args };
  exit_releases.push(entry);
  return () => {
    const index = exit_releases.indexOf(entry);
    if (index >= 0) exit_releases.splice(index, 1);
  };
}

export interface FuseExport {
  /** The file that is the export. */
  file: string;
  stop(): Promise<void>;
}

/** Serves uri as a file through nbdfuse (read-only with `readonly`). */
export async function fuseExport(uri: string, parent_dir: string, options: { readonly?: boolean } = {}): Promise<FuseExport> {
  const dir = mkdtempSync(path.join(parent_dir, 'fuse-'));
  const pid_file = path.join(dir, '..', `${path.basename(dir)}.pid`);
  const child = startTracked('nbdfuse', ['-P', pid_file, ...(options.readonly ? ['-r'] : []), dir, uri]);
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const forget = registerExitRelease(`fuse mount ${dir}`, 'fusermount3', ['-uz', dir]);
  const ready = await eventually(() => existsSync(pid_file) && readFileSync(pid_file, 'utf8').trim() !== '' || child.exitCode !== null, FUSE_READY_TIMEOUT_MS);
  if (!ready || child.exitCode !== null) {
    await stopTracked(child, 'SIGKILL');
    forget();
    throw new Error(`nbdfuse ${uri} did not start: ${stderr.trim() || 'no pid file'}`);
  }
  return {
    file: path.join(dir, 'nbd'),
    async stop(): Promise<void> {
      await runOk('fusermount3', ['-u', dir]);
      await stopTracked(child);
      forget();
      rmSync(dir, { recursive: true, force: true });
      rmSync(pid_file, { force: true });
    },
  };
}

export interface Loop {
  device: string;
  detach(): Promise<void>;
}

export async function loopAttach(file: string, options: { readonly?: boolean } = {}): Promise<Loop> {
  const device = (await runOk('losetup', ['--find', '--show', ...(options.readonly ? ['--read-only'] : []), file])).trim();
  if (!device.startsWith('/dev/loop')) throw new Error(`losetup printed ${JSON.stringify(device)}`);
  const forget = registerExitRelease(`loop ${device}`, 'losetup', ['-d', device]);
  return {
    device,
    async detach(): Promise<void> {
      await runOk('losetup', ['-d', device]);
      forget();
    },
  };
}

export interface Mounted {
  path: string;
  unmount(): Promise<void>;
}

export async function mount(device: string, parent_dir: string, options: string[] = []): Promise<Mounted> {
  const dir = path.join(parent_dir, `mnt-${path.basename(device)}-${Date.now()}`);
  mkdirSync(dir);
  await runOk('mount', [...(options.length > 0 ? ['-o', options.join(',')] : []), device, dir]);
  const forget = registerExitRelease(`mount ${dir}`, 'umount', ['-l', dir]);
  return {
    path: dir,
    async unmount(): Promise<void> {
      await runOk('umount', [dir]);
      forget();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// An XFS with shared extents (mkfs.xfs -m reflink=1) for the benchmarks'
// reflink rows: made on a loop device over a sparse file in /dev/shm, so
// that its rows compare with the tmpfs rows (memory under both), mounted,
// and undone by release() (umount, losetup -d, rm), also after a set-up
// that failed half-way. Root only: anything else gets the reason why not.
//
// Without online discard the loop file keeps every block XFS ever wrote
// (freed extents are not punched): size it for the peak, it stays sparse
// until written.

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const SHM_DIR = '/dev/shm';
const XFS_IMAGE_NAME = 'xfs.img';
const MOUNT_DIR_NAME = 'mnt';

export interface XfsMount {
  /** The mounted filesystem's root. */
  dir: string;
  release(): void;
}

/** An XFS of image_bytes with reflink=1, mounted; or why there is none. */
export function mountXfsReflink(prefix: string, image_bytes: number): XfsMount | string {
  if (process.getuid?.() !== 0) return 'not root (mount needs it)';
  const holder = mkdtempSync(path.join(SHM_DIR, prefix));
  const image = path.join(holder, XFS_IMAGE_NAME);
  const mount_point = path.join(holder, MOUNT_DIR_NAME);
  let loop = '';
  let mounted = false;
  const release = (): void => {
    if (mounted) spawnSync('umount', [mount_point]);
    if (loop !== '') spawnSync('losetup', ['--detach', loop]);
    rmSync(holder, { recursive: true, force: true });
  };
  try {
    writeFileSync(image, '');
    truncateSync(image, image_bytes);
    loop = run('losetup', ['--find', '--show', image]).trim();
    run('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', loop]);
    mkdirSync(mount_point);
    run('mount', ['-t', 'xfs', loop, mount_point]);
    mounted = true;
    return { dir: mount_point, release };
  } catch (error) {
    release();
    return (error as Error).message;
  }
}

/**
 * syncfs on the XFS mounted at dir: its dirty pages written back and, on
 * XFS, its background inode work (the freeing of unlinked files' extents)
 * flushed. Throws when sync fails.
 */
export function syncFilesystem(dir: string): void {
  run('sync', ['--file-system', dir]);
}

function run(tool: string, args: string[]): string {
  const result = spawnSync(tool, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${tool} ${args.join(' ')}: ${result.error?.message ?? result.stderr.trim()}`);
  return result.stdout;
}

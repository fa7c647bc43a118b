// Goal: a real filesystem lives on an NBD export and its snapshot image is
// a mountable, consistent, isolated copy: ext4 (and xfs) made and filled on
// the volume (nbdfuse + losetup, four connections with multi-conn), frozen
// and taken; the image mounted read-only shows exactly the pre-take files
// (md5) and none of the later ones; the image written through its own
// mount keeps the new file across a remount and never shows it on the
// volume; after destroy the volume passes e2fsck -fn (xfs_repair -n) and
// its files check.
// Method: files of seeded random bytes with md5 recorded at write time;
// fsfreeze around the take (what a backup tool does); every tool runs
// asynchronously because the NBD server is in this process.

import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes, seededRandom } from '../lib/engine-fixture';
import { FuseExport, Loop, Mounted, fuseExport, loopAttach, mount } from '../lib/nbd-block';
import { nbdFixtureHooks } from '../lib/nbd-fixture';
import { run, runOk } from '../lib/nbd-tools';
import { gate } from '../lib/system';
import { testSeed } from '../lib/workers';

const suite = gate(test, 'nbd/filesystem', {
  root: true,
  tools: ['nbdfuse', 'fusermount3', 'losetup', 'mkfs.ext4', 'e2fsck', 'mkfs.xfs', 'xfs_repair', 'mount', 'umount', 'fsfreeze', 'sync'],
  paths: ['/dev/fuse'],
});
/** xfs needs 300 MiB at least; the files are sparse in /dev/shm. */
const VOLUME_BYTES = 320 * 1024 * 1024;

interface Filesystem {
  name: string;
  mkfs: [string, string[]];
  /** Mount options of the image: read-only without journal replay (it was frozen at take); xfs also needs nouuid beside the volume. */
  image_ro: string[];
  image_rw: string[];
  /** A read-only check of the unmounted volume. */
  check: [string, string[]];
}

const FILESYSTEMS: Filesystem[] = [
  { name: 'ext4', mkfs: ['mkfs.ext4', ['-q', '-F']], image_ro: ['ro', 'noload'], image_rw: [], check: ['e2fsck', ['-fn']] },
  { name: 'xfs', mkfs: ['mkfs.xfs', ['-q', '-f']], image_ro: ['ro', 'norecovery', 'nouuid'], image_rw: ['nouuid'], check: ['xfs_repair', ['-n']] },
];

/** Stacks still up, newest last: the after hook takes down whatever a failed test left. */
const stacks: Stack[] = [];
const fixture = nbdFixtureHooks(suite, {
  volumes: Object.fromEntries(FILESYSTEMS.map((filesystem) => [`vol-${filesystem.name}`, VOLUME_BYTES])),
  async beforeClose() {
    while (stacks.length > 0) await popStack(stacks.at(-1)!).catch((error: unknown) => console.error('teardown:', error));
  },
});

interface Stack { fuse: FuseExport; loop: Loop; mounted: Mounted }

async function stackUp(uri: string, options: { readonly?: boolean; mkfs?: Filesystem; mount_options?: string[] }): Promise<Stack> {
  const fuse = await fuseExport(uri, fixture.dir, { readonly: options.readonly });
  const loop = await loopAttach(fuse.file, { readonly: options.readonly });
  if (options.mkfs) await runOk(options.mkfs.mkfs[0], [...options.mkfs.mkfs[1], loop.device]);
  const mounted = await mount(loop.device, fixture.dir, options.mount_options ?? []);
  const stack = { fuse, loop, mounted };
  stacks.push(stack);
  return stack;
}

async function popStack(stack: Stack): Promise<void> {
  stacks.splice(stacks.indexOf(stack), 1);
  await stack.mounted.unmount();
  await stack.loop.detach();
  await stack.fuse.stop();
}

function md5(data: Buffer): string {
  return createHash('md5').update(data).digest('hex');
}

async function writeFiles(root: string, prefix: string, random: () => number, count: number): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  await mkdir(path.join(root, prefix), { recursive: true });
  for (let i = 0; i < count; i += 1) {
    const data = randomBytes(random, 1 + Math.floor(random() * 3 * 1024 * 1024));
    const name = path.join(prefix, `file-${i}.bin`);
    await writeFile(path.join(root, name), data);
    sums.set(name, md5(data));
  }
  return sums;
}

async function checkFiles(root: string, sums: Map<string, string>, label: string): Promise<void> {
  for (const [name, sum] of sums) assert.is(md5(await readFile(path.join(root, name))), sum, `${label}: ${name}`);
}

for (const filesystem of FILESYSTEMS) {
  suite.test(`${filesystem.name} on the volume; the image mounts with exactly the pre-take files; image writes stay in the image`, async () => {
    const seed = testSeed(`${filesystem.name} files`);
    const name = `vol-${filesystem.name}`;
    const random = seededRandom(seed);
    const volume = await stackUp(fixture.uri(name), { mkfs: filesystem });
    const before = await writeFiles(volume.mounted.path, 'before', random, 12);
    const changed_name = [...before.keys()][0]!;
    const changed_before = before.get(changed_name)!;

    await runOk('sync', []);
    await runOk('fsfreeze', ['-f', volume.mounted.path]);
    let id: string;
    try {
      id = await fixture.snapshot([name]);
    } finally {
      await runOk('fsfreeze', ['-u', volume.mounted.path]);
    }
    const after = await writeFiles(volume.mounted.path, 'after', random, 6);
    const rewritten = randomBytes(random, 100_000);
    await writeFile(path.join(volume.mounted.path, changed_name), rewritten);
    before.set(changed_name, md5(rewritten));
    await runOk('sync', []);

    const image_uri = fixture.uri(`${name}@${id}`);
    const image = await stackUp(image_uri, { readonly: true, mount_options: filesystem.image_ro });
    const pre_take = new Map(before);
    pre_take.set(changed_name, changed_before);
    await checkFiles(image.mounted.path, pre_take, 'read-only image');
    assert.equal(await readdir(image.mounted.path).then((names) => names.filter((n) => n === 'after')), [], 'post-take files are absent');
    await popStack(image);

    // Write into the image through its own mount, remount, check.
    const writable = await stackUp(image_uri, { mount_options: filesystem.image_rw });
    const into_image = await writeFiles(writable.mounted.path, 'image-only', random, 3);
    await popStack(writable);
    const remounted = await stackUp(image_uri, { readonly: true, mount_options: filesystem.image_ro });
    await checkFiles(remounted.mounted.path, into_image, 'image after remount');
    await checkFiles(remounted.mounted.path, pre_take, 'pre-take files after image writes');
    await popStack(remounted);
    assert.equal((await readdir(volume.mounted.path)).filter((n) => n === 'image-only'), [], 'image writes never reach the volume');

    await fixture.engine.snapshotDestroy(id);

    await volume.mounted.unmount();
    const fsck = await run(filesystem.check[0], [...filesystem.check[1], volume.loop.device]);
    assert.is(fsck.code, 0, `${filesystem.check[0]}: ${fsck.stdout}${fsck.stderr}`);
    const again = await mount(volume.loop.device, fixture.dir);
    await checkFiles(again.path, before, 'volume after destroy');
    await checkFiles(again.path, after, 'volume post-take files');
    volume.mounted = again;
  });
}

test.run();

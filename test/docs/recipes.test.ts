// Goal: the docs' shell recipes work exactly as written, so docs and tests
// cannot drift: every block marked `<!-- recipe: NAME -->` in README.md and
// docs/*.md runs under `bash -euo pipefail` against a real daemon, exits 0,
// and leaves the result it promises; every fenced shell block in docs/ is
// such a recipe; a recipe marked `guest` is run by a guest program.
// Method: extract the blocks (test/lib/recipes.ts), write each to a file
// byte for byte, and run it in one scratch directory per doc file (the
// recipes of a file run in order there, as docs/backup.md "Recipes"
// says) with only `ublksnap` on PATH (the checkout's CLI) and
// UBLKSNAP_SOCKET set; then check each recipe's files (CHECKS below).

import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sha256File } from '../lib/backup-fixture';
import { CLI_PATH, REPO_ROOT, disposeDaemon, hardTimeout, startDaemon, type TestDaemon } from '../lib/daemon';
import { run } from '../lib/nbd-tools';
import { recipeFiles, recipesOf, unmarkedShellBlocks, type Recipe } from '../lib/recipes';
import { gate } from '../lib/system';

const suite = gate(test, 'docs/recipes', {
  root: true,
  tools: ['bash', 'openssl', 'qemu-io', 'qemu-img', 'nbdinfo', 'nbdcopy', 'nbdfuse', 'fusermount3', 'dd', 'jq', 'mkfs.ext4', 'mount', 'losetup', 'cmp'],
  paths: ['/dev/fuse'],
});
hardTimeout(290_000, 'docs/recipes');

/** One recipe's run; the slowest (a 256 MiB full backup, many CLI starts) takes ~20 s on a loaded machine. */
const RECIPE_TIMEOUT_MS = 120_000;

type Check = (dir: string) => Promise<void>;

async function sameFile(a: string, b: string): Promise<void> {
  assert.is(await sha256File(a), await sha256File(b), `${path.basename(a)} equals ${path.basename(b)}`);
}

function manifest(dir: string, volume: string, seq: number): { kind: string; base_seq: number | null; copied_bytes: number } {
  return JSON.parse(readFileSync(path.join(dir, 'backups', volume, `${String(seq).padStart(6, '0')}.json`), 'utf8'));
}

/** What each host recipe must leave behind, beyond exiting 0. */
const CHECKS: Record<string, Check> = {
  'back-up-a-volume': async (dir) => {
    await sameFile(path.join(dir, 'disk-now.img'), path.join(dir, 'disk.img'));
    assert.is.not(await sha256File(path.join(dir, 'disk-1.img')), await sha256File(path.join(dir, 'disk-now.img')), 'point 1 predates the change');
    const second = manifest(dir, 'disk', 2);
    assert.is(second.kind, 'incremental');
    assert.is(second.copied_bytes, 1 << 20, 'the incremental copied the 1 MiB written, no more');
  },
  'nbd-full-then-incremental': async (dir) => {
    await sameFile(path.join(dir, 'backup.img'), path.join(dir, 'vol.img'));
    assert.match(readFileSync(path.join(dir, 'backup.cbt'), 'utf8'), /^changes_number=1$/m, 'backup.cbt moved on to the second take');
  },
  'two-volumes': async (dir) => {
    const second = JSON.parse(readFileSync(path.join(dir, 'second.json'), 'utf8')) as { volumes: Array<{ volume: string; kind: string; copied_bytes: number }> };
    assert.equal(second.volumes.map((volume) => [volume.volume, volume.kind]), [['data', 'incremental'], ['logs', 'incremental']]);
    assert.is(second.volumes[1]!.copied_bytes, 128 * 1024);
  },
  'network-backup': async (dir) => {
    await sameFile(path.join(dir, 'vm1-backup.img'), path.join(dir, 'vm1.img'));
    assert.match(readFileSync(path.join(dir, 'host.log'), 'utf8'), /nbd TLS session started/, 'the copies went over TLS');
  },
  'plain-files': async (dir) => {
    await sameFile(path.join(dir, 'logs-by-hand.img'), path.join(dir, 'logs.img'));
    await sameFile(path.join(dir, 'logs-restored.img'), path.join(dir, 'logs.img'));
  },
};

let daemon: TestDaemon;
let bin: string;

suite.before(async () => {
  daemon = await startDaemon('recipes');
  bin = daemon.file('bin');
  mkdirSync(bin);
  // `ublksnap` as an installed binary would be: the checkout's CLI.
  writeFileSync(path.join(bin, 'ublksnap'), `#!/bin/sh\nexec ${process.execPath} ${CLI_PATH} "$@"\n`, { mode: 0o755 });
});

suite.after(async () => {
  await disposeDaemon(daemon);
});

async function runRecipe(recipe: Recipe, dir: string): Promise<void> {
  const script = path.join(dir, `${recipe.name}.recipe.sh`);
  writeFileSync(script, recipe.script);
  const result = await run('bash', ['-euo', 'pipefail', script], {
    cwd: dir, timeout_ms: RECIPE_TIMEOUT_MS,
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, UBLKSNAP_SOCKET: daemon.socket },
  });
  assert.is(result.code, 0, `${recipe.file} recipe ${recipe.name} exited ${result.code} (signal ${result.signal}):\n${result.stderr}\n${result.stdout.slice(-2000)}`);
}

suite.test('every fenced shell block in docs/ is a marked recipe, every recipe has a check or a guest program', () => {
  for (const file of recipeFiles(REPO_ROOT).filter((name) => name.startsWith('docs'))) {
    assert.is(unmarkedShellBlocks(REPO_ROOT, file), 0, `${file}: a shell block without <!-- recipe: NAME --> would never be tested`);
  }
  const install_sources = readdirSync(path.join(REPO_ROOT, 'test', 'install')).filter((name) => name.endsWith('.ts'))
    .map((name) => readFileSync(path.join(REPO_ROOT, 'test', 'install', name), 'utf8')).join('\n');
  const guest_sources = readdirSync(path.join(REPO_ROOT, 'test', 'guest')).filter((name) => name.endsWith('.ts'))
    .map((name) => readFileSync(path.join(REPO_ROOT, 'test', 'guest', name), 'utf8')).join('\n');
  const names = new Set<string>();
  for (const file of recipeFiles(REPO_ROOT)) {
    for (const recipe of recipesOf(REPO_ROOT, file)) {
      assert.not.ok(names.has(recipe.name), `recipe ${recipe.name} is named twice`);
      names.add(recipe.name);
      if (recipe.guest) assert.ok(guest_sources.includes(`'${recipe.name}'`), `guest recipe ${recipe.name}: no test/guest program runs it`);
      else if (recipe.install) assert.ok(install_sources.includes(`'${recipe.name}'`), `install recipe ${recipe.name}: no test/install file runs it`);
      else assert.ok(recipe.name in CHECKS, `recipe ${recipe.name} (${file}) has no check in test/docs/recipes.test.ts`);
    }
  }
  for (const name of Object.keys(CHECKS)) assert.ok(names.has(name), `CHECKS has ${name}, which no doc marks`);
});

for (const file of recipeFiles(REPO_ROOT)) {
  const recipes = recipesOf(REPO_ROOT, file).filter((recipe) => !recipe.guest && !recipe.install);
  if (recipes.length === 0) continue;
  suite.test(`${file}: ${recipes.map((recipe) => recipe.name).join(', ')} run as written`, async () => {
    const dir = daemon.file(file.replace(/[/.]/g, '-'));
    mkdirSync(dir);
    for (const recipe of recipes) {
      await runRecipe(recipe, dir);
      await CHECKS[recipe.name]!(dir);
    }
  });
}

test.run();

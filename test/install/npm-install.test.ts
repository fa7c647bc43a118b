// Goal: a new user can install ublksnap and find its commands on PATH, as
// the README's "Install" section says: its recipe, run as written in the
// checkout — `npm pack` (prepare compiles the TypeScript), `npm install -g`
// of the tarball (the install script builds the addon) — then the
// installed `ublksnap` alone, outside the checkout and found by name on
// PATH, prints help, runs a daemon on a temporary socket and state dir,
// answers a command, attaches a file and stops cleanly; the manual page
// and the systemd unit are installed too.
// Method: real npm; NPM_CONFIG_PREFIX points `npm install -g` at a
// temporary prefix without changing the recipe's text (npm's cache serves
// the dependencies when it has them: npm_config_prefer_offline); the
// tarball the recipe writes into the checkout is removed afterwards.
// Slow (a TypeScript build and an addon build): about 3-4 minutes.

import { spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO_ROOT, hardTimeout, keyValues, removeScratchDir, scratchDir, sparseFile } from '../lib/daemon';
import { recipe } from '../lib/recipes';
import { gate } from '../lib/system';

/** npm pack (tsc) plus npm install (the addon build) on a loaded 2-core machine. */
hardTimeout(900_000, 'install/npm-install');
/** One npm step; the addon build alone took 80-110 s here. */
const NPM_STEP_TIMEOUT_MS = 400_000;
const COMMAND_TIMEOUT_MS = 30_000;
const DAEMON_START_TIMEOUT_MS = 30_000;

const suite = gate(test, 'install/npm-install', { tools: ['npm', 'make', 'g++'] });

interface Result { code: number | null; stdout: string; stderr: string }

function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeout_ms?: number }): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeout_ms ?? COMMAND_TIMEOUT_MS);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

let dir = '';

suite.before(() => {
  dir = scratchDir('npm-install');
});

suite.after(() => {
  if (dir) removeScratchDir(dir);
});

suite.test('pack, install -g into a prefix, and run the installed ublksnap from PATH', async () => {
  const prefix = path.join(dir, 'prefix');
  // A user's shell, not npm's: under `npm test` the outer npm exports its
  // whole config as npm_config_* (prefix=/usr, an empty allow_scripts…), and
  // the lower-case names win over NPM_CONFIG_PREFIX — seen installing into
  // /usr without building the addon.
  const shell_env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name)));
  const env = {
    ...shell_env, NPM_CONFIG_PREFIX: prefix, npm_config_prefer_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false',
    PATH: `${path.join(prefix, 'bin')}:${process.env.PATH ?? ''}`, UBLKSNAP_SOCKET: path.join(dir, 'ctl.sock'),
  };
  const tarballs = (): string[] => readdirSync(REPO_ROOT).filter((name) => /^ublksnap-\d+\.\d+\.\d+\.tgz$/.test(name));
  assert.equal(tarballs(), [], 'no tarball in the checkout before the recipe (the recipe installs ./ublksnap-*.tgz)');
  const started = Date.now();
  let installed: Result;
  try {
    const script = recipe(REPO_ROOT, 'install-from-checkout').script;
    installed = await run('bash', ['-euo', 'pipefail', '-c', script], { cwd: REPO_ROOT, env, timeout_ms: 2 * NPM_STEP_TIMEOUT_MS });
  } finally {
    for (const name of tarballs()) rmSync(path.join(REPO_ROOT, name));
  }
  assert.is(installed.code, 0, `${installed.stdout}\n${installed.stderr}`);
  assert.match(installed.stdout, /^Usage: ublksnap COMMAND \[options\]$/m, 'the recipe\'s last line ran the installed ublksnap');
  console.log(`  the install recipe (npm pack, npm install -g) took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  const package_dir = path.join(prefix, 'lib', 'node_modules', 'ublksnap');
  assert.ok(existsSync(path.join(package_dir, 'native', 'build', 'Release', 'ublksnap.node')), 'the install script built the addon');
  assert.ok(existsSync(path.join(prefix, 'share', 'man', 'man8', 'ublksnap.8')), 'the manual page is installed');
  assert.ok(existsSync(path.join(package_dir, 'packaging', 'ublksnap.service')), 'the systemd unit ships');

  // From a directory that is not the checkout, by name: PATH finds the installed one.
  const ublksnap = (args: string[]): Promise<Result> => run('ublksnap', args, { cwd: dir, env });
  const help = await ublksnap(['--help']);
  assert.is(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Usage: ublksnap COMMAND/);
  const which = await run('sh', ['-c', 'command -v ublksnap'], { cwd: dir, env });
  assert.is(which.stdout.trim(), path.join(prefix, 'bin', 'ublksnap'));

  const daemon = spawn('ublksnap', ['daemon', '--state-dir', path.join(dir, 'state'), '--nbd-socket', path.join(dir, 'nbd.sock'), '--log-level', 'warn'],
    { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let daemon_log = '';
  daemon.stdout.on('data', (chunk: Buffer) => { daemon_log += chunk.toString(); });
  daemon.stderr.on('data', (chunk: Buffer) => { daemon_log += chunk.toString(); });
  const exited = new Promise<number | null>((resolve) => daemon.on('exit', (code) => resolve(code)));
  try {
    const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
    let version = await ublksnap(['version']);
    while (version.code !== 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      version = await ublksnap(['version']);
    }
    assert.is(version.code, 0, `the installed daemon never answered: ${version.stderr}\n${daemon_log}`);
    assert.match(version.stdout, /^\d+\.\d+\.\d+\.\d+$/m, 'version prints M.m.r.b, as upstream');
    sparseFile(path.join(dir, 'disk.img'), 4 << 20);
    const attached = await ublksnap(['attach', '-d', path.join(dir, 'disk.img'), '--nbd']);
    assert.is(attached.code, 0, attached.stderr);
    assert.is(keyValues(attached.stdout).name, 'disk.img');
    const stopped = await ublksnap(['shutdown']);
    assert.is(stopped.code, 0, stopped.stderr);
    assert.is(await exited, 0, `a clean stop: ${daemon_log}`);
  } finally {
    daemon.kill('SIGKILL');
  }
});

test.run();

// Goal: `npm start` runs the daemon on its embedded default: a state dir,
// a sparse 1 GiB demo volume attached as `demo`, a printed list of next
// commands that work as printed, and a CLI that finds the daemon with no
// flag and no UBLKSNAP_SOCKET (through `npx ublksnap` too), from another
// process with the same user environment; Ctrl-C stops it cleanly.
// Method: start-default.js spawned with XDG_RUNTIME_DIR and
// UBLKSNAP_STATE_DIR pointing into a scratch dir (so the test touches
// neither the checkout's ./state nor a real daemon's socket); the printed
// commands are run with `npx ublksnap` replaced by the CLI path.

import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CLI_PATH, DAEMON_START_TIMEOUT_MS, HAS_NBD, DAEMON_STOP_TIMEOUT_MS, REPO_ROOT, exists, hardTimeout, keyValues, removeScratchDir, runNode, scratchDir,
} from '../lib/daemon';
import { gate } from '../lib/system';

hardTimeout(180_000, 'daemon/start-default');

const GiB = 2 ** 30;
const with_npx = gate(test, 'daemon/start-default through npx', { tools: ['npx'] });
let dir: string;
let env: NodeJS.ProcessEnv;
let child: ReturnType<typeof spawn>;
let banner = '';
let exit: Promise<number | null>;

test.before(async () => {
  dir = scratchDir('start-default');
  // A user environment of its own: the default socket lands in dir/run/ublksnap.
  env = { ...process.env, XDG_RUNTIME_DIR: path.join(dir, 'run'), UBLKSNAP_STATE_DIR: path.join(dir, 'state'), NO_COLOR: '1' };
  delete env.UBLKSNAP_SOCKET;
  child = spawn(process.execPath, [path.join(REPO_ROOT, 'dist/src/daemon/start-default.js')], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  child.stdout?.resume();
  exit = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner within ${DAEMON_START_TIMEOUT_MS} ms: ${banner}`)), DAEMON_START_TIMEOUT_MS);
    child.stderr?.on('data', (chunk: Buffer) => {
      banner += chunk.toString();
      if (banner.includes('Stop with Ctrl-C.')) { clearTimeout(timer); resolve(); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`start-default exited with ${code}: ${banner}`)); });
  });
});

test.after(async () => {
  if (child.exitCode === null) {
    try { process.kill(-(child.pid as number), 'SIGKILL'); } catch { /* ESRCH: gone already */ }
  }
  removeScratchDir(dir);
});

test('the banner names the demo volume, the socket and the next commands', () => {
  const socket = path.join(dir, 'run', 'ublksnap', 'ublksnap.sock');
  assert.match(banner, new RegExp(`volume 'demo' is ${path.join(dir, 'state', 'demo.img')} \\(1 GiB, sparse\\)`));
  assert.match(banner, new RegExp(`Control socket: ${socket}`));
  for (const command of ['version', 'status', 'cbtinfo -d demo', 'snapshot_take -i $id', 'snapshot_destroy -i $id']) {
    assert.ok(banner.includes(`npx ublksnap ${command}`), command);
  }
  // When the NBD frontend is built in, the demo volume is exported next to the control socket.
  if (HAS_NBD) assert.match(banner, new RegExp(`NBD export: +nbd\\+unix:///demo\\?socket=${path.join(dir, 'run', 'ublksnap', 'nbd.sock')}`));
  else assert.not.match(banner, /NBD export/);
  const demo = statSync(path.join(dir, 'state', 'demo.img'));
  assert.is(demo.size, GiB);
  assert.ok(demo.blocks * 512 < 1024 * 1024, 'sparse');
});

test('the CLI finds the daemon with no flag and no UBLKSNAP_SOCKET', async () => {
  const result = await runNode(CLI_PATH, ['version'], { env });
  assert.is(result.code, 0, result.stderr);
  assert.match(result.stdout, /^\d+\.\d+\.\d+\.\d+\n$/);
  const status = JSON.parse((await runNode(CLI_PATH, ['status', '-j'], { env })).stdout);
  assert.equal(status.volumes.map((v: { name: string; capacity_sectors: number }) => [v.name, v.capacity_sectors]), [['demo', 2 * 1024 * 1024]]);
});

test('the printed commands work as printed', async () => {
  const lines = banner.split('\n').map((line) => line.trim()).filter((line) => line.includes('npx ublksnap'));
  let id = '';
  for (const line of lines) {
    if (line.includes('--help')) continue;
    // `id=$(npx ublksnap …)` assigns; `$id` uses it.
    const assign = /^id=\$\((.*)\)$/.exec(line);
    const words = (assign ? assign[1] as string : line).replace('$id', id).split(' ').slice(2);
    const result = await runNode(CLI_PATH, words, { env });
    assert.is(result.code, 0, `${line}: ${result.stderr}`);
    if (assign) id = result.stdout.trim();
  }
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.is(statSync(path.join(dir, 'state', 'demo.cbt')).size, Number(keyValues((await runNode(CLI_PATH, ['cbtinfo', '-d', 'demo'], { env })).stdout).block_count));
});

with_npx.test('npx ublksnap version, run in the checkout, reaches it too', async () => {
  const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    // --no: never download a package named ublksnap; the checkout's own bin is the one wanted.
    // --ignore-scripts: the first `npx ublksnap` in a checkout installs the checkout into npx's
    // cache (~/.npm/_npx/<hash of the path>), and that runs its install and prepare scripts in
    // the checkout itself: `node-gyp rebuild` deletes native/build and rebuilds the addon, and
    // tsc rewrites dist/, in the middle of the suite. That took most of this test's 60 s on a
    // quiet machine and more under load; killed half-way, it left no addon for the files after
    // it. The CLI is built already; this test only needs npx to find its bin.
    const npx = spawn('npx', ['--ignore-scripts', '--no', 'ublksnap', 'version'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    npx.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    npx.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const timer = setTimeout(() => npx.kill('SIGKILL'), 60_000);
    npx.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
  assert.is(result.code, 0, result.stderr);
  assert.match(result.stdout, /^\d+\.\d+\.\d+\.\d+\n$/);
});

test('Ctrl-C (SIGINT): exit 0, the socket and pid file gone, the demo volume kept', async () => {
  process.kill(child.pid as number, 'SIGINT');
  const timer = setTimeout(() => process.kill(child.pid as number, 'SIGKILL'), DAEMON_STOP_TIMEOUT_MS);
  assert.is(await exit, 0);
  clearTimeout(timer);
  assert.not.ok(exists(path.join(dir, 'run', 'ublksnap', 'ublksnap.sock')));
  assert.not.ok(exists(path.join(dir, 'state', 'ublksnap.pid')));
  assert.ok(exists(path.join(dir, 'state', 'demo.img')));
});

test.run();

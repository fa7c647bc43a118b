// Goal: the ublk guest is what the ublk tests will assume — a kernel of 6.0 or
// later whose ublk_drv is NOT loaded at boot (so a test can check the error a
// missing driver gives) and loads with modprobe; the host's node, with this
// checkout's native addon, runs in it; TMPDIR takes AF_UNIX sockets (9p does not).
// Method: a standalone program run inside the guest by test/vm/guest-driver.sh
// (one boot for all guest programs, test/vm/guest-suite.test.ts). Each check
// prints one "ok"/"FAIL" line; the exit status is 0 only when all passed. It
// leaves the driver unloaded again, as it found it, so programs stay independent
// of their order.
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/kernel.guest.js

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** ublk appeared in 6.0. */
const MIN_KERNEL = [6, 0] as const;
const CONTROL_DEVICE = '/dev/ublk-control';
const DRIVER_MODULE = 'ublk_drv';
const DRIVER_SYSFS = `/sys/module/${DRIVER_MODULE}`;
/** modprobe and rmmod of one module; TCG makes them slower than on a host. */
const MODPROBE_TIMEOUT_MS = 30_000;
/** devtmpfs creates the node when the misc device registers; allow some slack. */
const DEVICE_NODE_WAIT_MS = 5_000;
const POLL_INTERVAL_MS = 50;
const ADDON_PATH = path.join(__dirname, '../../../native/build/Release/ublksnap.node');
const ENOENT_NUMBER = os.constants.errno.ENOENT;
const EXPECTED_TMPDIR = '/dev/shm';

let failures = 0;

function check(name: string, body: () => void): void {
  try {
    body();
    console.log(`ok - ${name}`);
  } catch (error) {
    failures += 1;
    console.log(`FAIL - ${name}: ${(error as Error).message}`);
  }
}

function expect(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

function modprobe(args: string[]): void {
  execFileSync('modprobe', args, { timeout: MODPROBE_TIMEOUT_MS, stdio: ['ignore', 'inherit', 'inherit'] });
}

/** Waits, bounded, until exists(path) is wanted. */
function waitForPath(file: string, wanted: boolean): boolean {
  const deadline = Date.now() + DEVICE_NODE_WAIT_MS;
  while (existsSync(file) !== wanted) {
    if (Date.now() > deadline) return false;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, POLL_INTERVAL_MS);
  }
  return true;
}

async function canListenOnUnixSocket(dir: string): Promise<void> {
  const socket_path = path.join(dir, 'probe.sock');
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket_path, resolve);
  });
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

async function main(): Promise<void> {
  console.log(`kernel ${os.release()}, node ${process.version}`);

  check(`kernel is ${MIN_KERNEL.join('.')} or later`, () => {
    const [major = 0, minor = 0] = os.release().split(/[.-]/).map(Number);
    expect(major > MIN_KERNEL[0] || (major === MIN_KERNEL[0] && minor >= MIN_KERNEL[1]), `uname -r is ${os.release()}`);
  });

  check(`${DRIVER_MODULE} is not loaded at boot, so ${CONTROL_DEVICE} is absent`, () => {
    expect(!existsSync(DRIVER_SYSFS), `${DRIVER_SYSFS} exists: something loaded the driver`);
    expect(!existsSync(CONTROL_DEVICE), `${CONTROL_DEVICE} exists before modprobe`);
  });

  check(`modprobe ${DRIVER_MODULE} makes ${CONTROL_DEVICE}, a character device`, () => {
    modprobe([DRIVER_MODULE]);
    expect(waitForPath(CONTROL_DEVICE, true), `${CONTROL_DEVICE} did not appear within ${DEVICE_NODE_WAIT_MS} ms`);
    expect(statSync(CONTROL_DEVICE).isCharacterDevice(), `${CONTROL_DEVICE} is not a character device`);
  });

  check(`modprobe -r ${DRIVER_MODULE} leaves the guest as it was`, () => {
    modprobe(['-r', DRIVER_MODULE]);
    expect(waitForPath(CONTROL_DEVICE, false), `${CONTROL_DEVICE} still there ${DEVICE_NODE_WAIT_MS} ms after modprobe -r`);
    expect(!existsSync(DRIVER_SYSFS), `${DRIVER_SYSFS} still there`);
  });

  check('the native addon of this checkout loads and answers', () => {
    const addon = require(ADDON_PATH) as { errnoName(errno: number): string };
    expect(addon.errnoName(ENOENT_NUMBER) === 'ENOENT', `errnoName(${ENOENT_NUMBER}) is ${addon.errnoName(ENOENT_NUMBER)}`);
  });

  const tmpdir = os.tmpdir();
  const probe_dir = mkdtempSync(path.join(tmpdir, 'ublksnap-guest-'));
  try {
    const name = `TMPDIR is ${EXPECTED_TMPDIR} and takes an AF_UNIX socket`;
    try {
      expect(tmpdir === EXPECTED_TMPDIR, `os.tmpdir() is ${tmpdir}`);
      await canListenOnUnixSocket(probe_dir);
      console.log(`ok - ${name}`);
    } catch (error) {
      failures += 1;
      console.log(`FAIL - ${name}: ${(error as Error).message}`);
    }
  } finally {
    rmSync(probe_dir, { recursive: true, force: true });
  }

  console.log(failures === 0 ? 'all checks passed' : `${failures} check(s) failed`);
  process.exitCode = failures === 0 ? 0 : 1;
}

main().catch((error: unknown) => {
  console.log(`FAIL - unexpected: ${(error as Error).stack ?? String(error)}`);
  process.exitCode = 1;
});

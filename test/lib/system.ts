// Helpers for tests that drive the real system: temporary directories, loop
// block devices, tmpfs and ext4 mounts, and the gate that skips a suite
// loudly when it lacks root or a tool.
//
// Design notes
// - Every resource made here registers its release in one list, and an
//   'exit' handler releases whatever is left, newest first (umount before
//   losetup -d before rm). So a test file that throws, or whose before hook
//   fails half-way, still leaves no loop device, mount or file behind. Tests
//   should still release in test.after; releasing twice is harmless.
//   SIGINT, SIGTERM and SIGHUP exit through the same handler. (A SIGKILL —
//   the runner's timeout — runs no handler; nothing can help.)
// - Tools run through execFileSync under a named timeout, never a shell.
// - In CI (process.env.CI set) nothing may be skipped for lack of a package:
//   a missing prerequisite there is a failing test, not a skip.

import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Callback, Test } from 'uvu';

/** The longest any one tool call (losetup, mkfs.ext4, mount) may take. */
const TOOL_TIMEOUT_MS = 60_000;
/** Where root's tools live when a non-root PATH leaves them out. */
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];
const ROOT_UID = 0;

// ── releases ────────────────────────────────────────────────────────────

interface Release {
  label: string;
  run: () => void;
}

/** Releases not yet run, oldest first. */
const pending_releases: Release[] = [];

/** Registers run, and returns a function that runs it once and unregisters it. */
function registerRelease(label: string, run: () => void): () => void {
  const release: Release = { label, run };
  pending_releases.push(release);
  return () => {
    const index = pending_releases.indexOf(release);
    if (index < 0) return;
    pending_releases.splice(index, 1);
    release.run();
  };
}

/** Signals that end a test file early; exiting through them still releases. */
const RELEASING_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
/** The shell's convention for "killed by signal N". */
const SIGNAL_EXIT_CODE_BASE = 128;

for (const signal of RELEASING_SIGNALS) {
  process.once(signal, () => process.exit(SIGNAL_EXIT_CODE_BASE + os.constants.signals[signal]));
}

process.once('exit', () => {
  while (pending_releases.length > 0) {
    const release = pending_releases.pop()!;
    try {
      release.run();
    } catch (error) {
      // Too late to fail a test: say what is left behind.
      console.error(`test/lib/system: could not release ${release.label}: ${(error as Error).message}`);
    }
  }
});

// ── tools ───────────────────────────────────────────────────────────────

export function isRoot(): boolean {
  return process.getuid?.() === ROOT_UID;
}

/** The absolute path of an executable on PATH or in an sbin directory, or undefined. */
export function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...SBIN_DIRS];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory: try the next one.
    }
  }
  return undefined;
}

/** Runs a tool and returns its stdout; throws with its stderr on failure. */
export function runTool(name: string, args: string[]): string {
  const tool = findTool(name);
  if (tool === undefined) throw new Error(`${name}: not found on PATH or in ${SBIN_DIRS.join(', ')}`);
  try {
    return execFileSync(tool, args, { encoding: 'utf8', timeout: TOOL_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`${name} ${args.join(' ')} failed: ${stderr || (error as Error).message}`);
  }
}

// ── the gate ────────────────────────────────────────────────────────────

export interface Prerequisites {
  /** The suite needs root (loop devices, mounts). */
  root?: boolean;
  /** Executables the suite runs. */
  tools?: string[];
  /** Paths the suite needs to exist (e.g. /dev/shm). */
  paths?: string[];
}

/** What is missing, one phrase per prerequisite; empty when all are present. */
export function missingPrerequisites(needs: Prerequisites): string[] {
  const missing: string[] = [];
  if (needs.root && !isRoot()) missing.push('needs root');
  for (const tool of needs.tools ?? []) {
    if (findTool(tool) === undefined) missing.push(`needs ${tool}`);
  }
  for (const needed of needs.paths ?? []) {
    if (!existsSync(needed)) missing.push(`needs ${needed}`);
  }
  return missing;
}

/** A suite's registration, guarded by its prerequisites. */
export interface Gate {
  /** True when the suite runs; false when it is skipped (or failed, in CI). */
  ready: boolean;
  test(name: string, fn: Callback): void;
  before(fn: Callback): void;
  after(fn: Callback): void;
}

/**
 * Guards a suite by its prerequisites. When all are present, the gate
 * registers tests and hooks as usual. When one is missing, it prints the
 * reason once and registers every test as skipped, and no hook; but in CI
 * it registers one failing test that states the reason instead.
 */
export function gate(suite: Test, suite_name: string, needs: Prerequisites): Gate {
  return gateOn(suite, suite_name, missingPrerequisites(needs));
}

/**
 * gate, for prerequisites found otherwise than by missingPrerequisites (e.g.
 * a setup step that can fail): missing holds one phrase per missing one.
 */
export function gateOn(suite: Test, suite_name: string, missing: string[]): Gate {
  if (missing.length === 0) {
    return { ready: true, test: (name, fn) => suite(name, fn), before: (fn) => suite.before(fn), after: (fn) => suite.after(fn) };
  }
  const reason = `${suite_name}: ${missing.join(', ')}`;
  const ignore = (): void => undefined;
  if (process.env.CI) {
    suite(`prerequisites (${reason})`, () => {
      throw new Error(`CI must not skip: ${reason} (CI runs as root, with every tool of .ci/run's PACKAGES)`);
    });
    return { ready: false, test: ignore, before: ignore, after: ignore };
  }
  console.log(`SKIP ${reason}`);
  return { ready: false, test: (name) => suite.skip(name), before: ignore, after: ignore };
}

// ── resources ───────────────────────────────────────────────────────────

export interface TempDir {
  path: string;
  remove(): void;
}

/** A fresh directory under the system temp dir, removed with everything in it. */
export function tempDir(prefix: string): TempDir {
  const dir = mkdtempSync(path.join(os.tmpdir(), `ublksnap-${prefix}-`));
  const remove = registerRelease(`directory ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return { path: dir, remove };
}

export interface LoopDevice {
  /** The device node, e.g. /dev/loop3. */
  device: string;
  detach(): void;
}

export interface LoopOptions {
  /** The logical sector size (losetup --sector-size); the default is 512. */
  sector_bytes?: number;
}

/** Attaches file to the first free loop device. Needs root and losetup. */
export function makeLoopDevice(file: string, options: LoopOptions = {}): LoopDevice {
  const args = ['--find', '--show'];
  if (options.sector_bytes !== undefined) args.push('--sector-size', String(options.sector_bytes));
  const device = runTool('losetup', [...args, file]).trim();
  if (!device.startsWith('/dev/')) throw new Error(`losetup printed ${JSON.stringify(device)}, not a device`);
  // A device still open elsewhere detaches when its last fd closes.
  const detach = registerRelease(`loop device ${device}`, () => runTool('losetup', ['--detach', device]));
  return { device, detach };
}

export interface Mount {
  /** The mount point, a fresh temp directory. */
  path: string;
  /** Unmounts and removes the mount point. */
  unmount(): void;
}

/** Mounts source on a fresh temp dir with mount's args; registers the unmount. */
function mountOnTempDir(prefix: string, mount_args: string[]): Mount {
  const dir = tempDir(prefix);
  runTool('mount', [...mount_args, dir.path]);
  const unmount = registerRelease(`mount ${dir.path}`, () => {
    runTool('umount', [dir.path]);
    dir.remove();
  });
  return { path: dir.path, unmount };
}

/** A tmpfs of size_bytes on a fresh temp dir. Needs root. */
export function mountTmpfs(size_bytes: number): Mount {
  return mountOnTempDir('tmpfs', ['-t', 'tmpfs', '-o', `size=${size_bytes},mode=0700`, 'tmpfs']);
}

/** Makes an ext4 on device and mounts it on a fresh temp dir. Needs root, mkfs.ext4. */
export function mkfsExt4AndMount(device: string): Mount {
  // -F: the device is a loop over a plain file, which mkfs would question.
  runTool('mkfs.ext4', ['-q', '-F', device]);
  return mountOnTempDir('ext4', ['-t', 'ext4', device]);
}

/**
 * Makes an XFS with shared extents (reflink=1) on device and mounts it on a
 * fresh temp dir. Needs root, mkfs.xfs.
 */
export function mkfsXfsReflinkAndMount(device: string): Mount {
  runTool('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', device]);
  return mountOnTempDir('xfs', ['-t', 'xfs', device]);
}

// ── errors ──────────────────────────────────────────────────────────────

/** What call threw, or undefined when it returned. */
export function thrownBy(call: () => unknown): unknown {
  try {
    call();
  } catch (error) {
    return error;
  }
  return undefined;
}

/**
 * Asserts that call fails as a system call does in this project: an Error
 * with code (the errno name), a positive errno, and syscall, whose message
 * starts with the syscall. Returns the error for further checks.
 */
export function expectSystemError(call: () => unknown, code: string, syscall: string): SystemError {
  const thrown = thrownBy(call);
  if (!(thrown instanceof Error)) throw new Error(`expected a ${code} error from ${syscall}, got ${String(thrown)}`);
  const error = thrown as Error & Partial<SystemError>;
  const seen = `${error.name} ${String(error.code)} from ${String(error.syscall)}: ${error.message}`;
  if (error.code !== code || error.syscall !== syscall) throw new Error(`expected a ${code} error from ${syscall}, got ${seen}`);
  if (typeof error.errno !== 'number' || error.errno <= 0) throw new Error(`expected a positive errno, got ${seen}`);
  if (!error.message.startsWith(syscall)) throw new Error(`expected the message to start with ${syscall}, got ${seen}`);
  return error as SystemError;
}

/** The shape of a failed system call's error (src/native's NativeError). */
export interface SystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
}

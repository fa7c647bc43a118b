// Daemons and CLI runs for the end-to-end tests: a daemon process in a
// scratch directory of its own, the `ublksnap` CLI run as a real process
// against it, and a cleanup that always runs (every daemon killed, every
// scratch directory removed), also when a test fails or the file times out.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { BUILTIN_FRONTENDS } from '../../src/daemon/frontends';
import { IpcClient } from '../../src/ipc/client';

/** Scratch space on tmpfs: fast, and O_TMPFILE diff storage works there. */
export const SCRATCH_ROOT = '/dev/shm';
export const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
export const CLI_PATH = path.join(REPO_ROOT, 'bin', 'ublksnap.js');
/** A daemon that does not answer within this long after spawn has failed. */
export const DAEMON_START_TIMEOUT_MS = 20_000;
/** One CLI run; the CLI's own call timeout is longer, so this is the hang detector. */
export const CLI_TIMEOUT_MS = 30_000;
/** SIGTERM to exit: the daemon's shutdown must fit in this. */
export const DAEMON_STOP_TIMEOUT_MS = 20_000;
/** Small chunks and tracking blocks so tests cross many boundaries quickly. */
export const SMALL_PARAMS = ['chunk_minimum_shift=16', 'tracking_block_minimum_shift=16', 'diff_storage_minimum=2048'];

/** True once the NBD frontend is built in (src/daemon/frontends.ts): tests expect its URIs then. */
export const HAS_NBD = BUILTIN_FRONTENDS.some((factory) => factory.kind === 'nbd');

const live_children = new Set<ChildProcess>();
const scratch_dirs = new Set<string>();

function cleanupNow(): void {
  for (const child of live_children) {
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      // ESRCH: it exited between the check and the kill.
      child.kill('SIGKILL');
    }
  }
  live_children.clear();
  for (const dir of scratch_dirs) rmSync(dir, { recursive: true, force: true });
  scratch_dirs.clear();
}
process.on('exit', cleanupNow);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    cleanupNow();
    process.exit(1);
  });
}

/**
 * Fails the whole file after ms: an integration test that hangs must end
 * with a message and a clean machine, not at the runner's kill.
 */
export function hardTimeout(ms: number, what: string): void {
  const timer = setTimeout(() => {
    console.error(`\n✘ ${what}: hard timeout of ${ms} ms reached; killing daemons and failing`);
    cleanupNow();
    process.exit(1);
  }, ms);
  timer.unref();
}

export function scratchDir(label: string): string {
  const dir = mkdtempSync(path.join(SCRATCH_ROOT, `ublksnap-${label}-`));
  scratch_dirs.add(dir);
  return dir;
}

export function removeScratchDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  scratch_dirs.delete(dir);
}

/** A sparse file of size_bytes. */
export function sparseFile(file: string, size_bytes: number): string {
  writeFileSync(file, '');
  truncateSync(file, size_bytes);
  return file;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeout_ms?: number;
  input?: string;
  /** Called with the child right after spawn (to signal it by pid). */
  onSpawn?: (child: ChildProcess) => void;
}

/** Runs a node script with args as a child process (never spawnSync: the test may host a daemon). */
export function runNode(script: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: options.cwd ?? REPO_ROOT,
      env: { ...process.env, NO_COLOR: '1', ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    options.onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const timeout_ms = options.timeout_ms ?? CLI_TIMEOUT_MS;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${path.basename(script)} ${args.join(' ')}: no exit within ${timeout_ms} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeout_ms);
    child.on('error', (error) => { clearTimeout(timer); reject(error); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

export interface DaemonOptions {
  /** Extra daemon flags. */
  args?: string[];
  /** --param NAME=VALUE, default SMALL_PARAMS. */
  params?: string[];
  env?: NodeJS.ProcessEnv;
  /** Default 'debug', so a failing test shows what the daemon did. */
  log_level?: string;
  /** Default DAEMON_START_TIMEOUT_MS; a guest under emulation starts Node 6-8× slower. */
  start_timeout_ms?: number;
}

export class TestDaemon {
  readonly socket: string;
  readonly state_dir: string;
  /** Given to every daemon, so an NBD frontend (when built in) listens in the scratch dir. */
  readonly nbd_socket: string;
  private child: ChildProcess | null = null;
  private exit_promise: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | null = null;
  logs = '';

  constructor(readonly dir: string) {
    this.socket = path.join(dir, 'ctl.sock');
    this.state_dir = path.join(dir, 'state');
    this.nbd_socket = path.join(dir, 'nbd.sock');
  }

  get pid(): number {
    return this.child?.pid as number;
  }

  get pid_file(): string {
    return path.join(this.state_dir, 'ublksnap.pid');
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  /** Spawns `ublksnap daemon` and waits until it answers `version`. */
  async start(options: DaemonOptions = {}): Promise<void> {
    const args = [
      'daemon', '--socket', this.socket, '--state-dir', this.state_dir, '--nbd-socket', this.nbd_socket,
      '--log-level', options.log_level ?? 'debug',
      ...(options.params ?? SMALL_PARAMS).flatMap((param) => ['--param', param]),
      ...(options.args ?? []),
    ];
    const child = spawn(process.execPath, [CLI_PATH, ...args], {
      cwd: this.dir,
      env: { ...process.env, NO_COLOR: '1', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.child = child;
    live_children.add(child);
    child.stdout?.on('data', (chunk: Buffer) => { this.logs += chunk.toString(); });
    child.stderr?.on('data', (chunk: Buffer) => { this.logs += chunk.toString(); });
    this.exit_promise = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        live_children.delete(child);
        resolve({ code, signal });
      });
    });
    const start_timeout_ms = options.start_timeout_ms ?? DAEMON_START_TIMEOUT_MS;
    const deadline = Date.now() + start_timeout_ms;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`daemon exited during start (code ${child.exitCode}, signal ${child.signalCode}):\n${this.logs}`);
      }
      try {
        const client = await IpcClient.connect(this.socket);
        try {
          await client.call('version', {});
          return;
        } finally {
          client.close();
        }
      } catch (error) {
        // ENOENT until the socket exists: keep polling until the deadline.
        if (Date.now() > deadline) throw new Error(`daemon did not answer within ${start_timeout_ms} ms: ${(error as Error).message}\n${this.logs}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  /** Runs the CLI against this daemon. */
  cli(args: string[], options: RunOptions = {}): Promise<RunResult> {
    return runNode(CLI_PATH, ['--socket', this.socket, ...args], { cwd: this.dir, ...options });
  }

  /** Runs the CLI and expects exit 0; returns stdout. */
  async ok(args: string[], options: RunOptions = {}): Promise<string> {
    const result = await this.cli(args, options);
    if (result.code !== 0) throw new Error(`ublksnap ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
    return result.stdout;
  }

  client(): Promise<IpcClient> {
    return IpcClient.connect(this.socket);
  }

  /** Sends signal and waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.child || !this.exit_promise) throw new Error('daemon not started');
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited(signal);
  }

  /** Waits for the exit the daemon is making by itself (`ublksnap shutdown`), or after `cause`. */
  async exited(cause = 'shutdown'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.exit_promise) throw new Error('daemon not started');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`daemon did not exit within ${DAEMON_STOP_TIMEOUT_MS} ms after ${cause}\n${this.logs}`)), DAEMON_STOP_TIMEOUT_MS);
    });
    try {
      return await Promise.race([this.exit_promise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }
}

/** A daemon in a fresh scratch dir, started. */
export async function startDaemon(label: string, options: DaemonOptions = {}): Promise<TestDaemon> {
  const daemon = new TestDaemon(scratchDir(label));
  await daemon.start(options);
  return daemon;
}

/** Stops the daemon (SIGKILL if it does not exit) and removes its scratch dir. */
export async function disposeDaemon(daemon: TestDaemon | undefined): Promise<void> {
  if (!daemon) return;
  if (daemon.running) {
    try {
      await daemon.stop('SIGTERM');
    } catch (error) {
      console.error((error as Error).message);
      await daemon.stop('SIGKILL');
    }
  }
  removeScratchDir(daemon.dir);
}

/** Parses key=value lines into an object (values as strings). */
export function keyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const at = line.indexOf('=');
    if (at <= 0) throw new Error(`not a key=value line: ${JSON.stringify(line)}`);
    out[line.slice(0, at)] = line.slice(at + 1);
  }
  return out;
}

export function exists(file: string): boolean {
  return existsSync(file);
}

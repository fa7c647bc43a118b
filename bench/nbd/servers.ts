// The server processes the harness starts, measures and stops: ublksnap's
// (bench/servers/ublksnap-server.ts, driven over its stdin), nbdkit and
// qemu-storage-daemon. Each is one process whose pid is the server itself,
// so /proc/PID charges it — and only it — with CPU and memory.
//
// Design notes
// - Ready means the Unix socket accepts a connection (nbdkit, QEMU) or the
//   ublksnap server printed its ready line (it listens before it says so).
// - Usage (CPU seconds, VmHWM) is read just before the stop signal: after
//   exit /proc has nothing left to read.
// - Every process started here is killed when the harness exits, however
//   it exits, so a failed run leaves no daemon behind. Only these pids.

import { ChildProcess, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { cpuSeconds, peakRssBytes, processCpu, threadCpu, type NamedCpu, type ThreadCpu } from './proc';

/** A server that is not listening after this is broken (QEMU and nbdkit take ~50 ms, ours ~1 s with its workers). */
export const SERVER_READY_TIMEOUT_MS = 30_000;
/** stop() waits this long for a clean exit before SIGKILL. */
export const SERVER_STOP_TIMEOUT_MS = 15_000;
/** A control command (take, destroy) answers in milliseconds; this bounds a stuck one. */
export const COMMAND_TIMEOUT_MS = 60_000;
const READY_POLL_MS = 20;
const STDERR_TAIL_BYTES = 2000;

export interface ServerUsage {
  cpu_seconds: number;
  peak_rss_bytes: number;
  threads: ThreadCpu[];
}

const live_children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live_children) child.kill('SIGKILL');
});

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A Unix socket path or a loopback TCP port that accepts a connection now. */
function socketAccepts(address: string | number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = typeof address === 'string' ? net.connect({ path: address }) : net.connect({ host: '127.0.0.1', port: address });
    probe.once('connect', () => { probe.destroy(); resolve(true); });
    probe.once('error', () => resolve(false));
  });
}

export class ServerProcess {
  private stderr_tail = '';
  protected readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private has_exited = false;

  protected constructor(readonly label: string, protected readonly child: ChildProcess, readonly socket_path: string) {
    live_children.add(child);
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr_tail = (this.stderr_tail + chunk.toString()).slice(-STDERR_TAIL_BYTES);
    });
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      this.has_exited = true;
      live_children.delete(child);
      resolve({ code, signal });
    }));
  }

  /** Starts command and waits until its socket (or, given tcp_port, that loopback port) accepts a connection. */
  static async start(label: string, command: string, args: string[], socket_path: string, tcp_port?: number): Promise<ServerProcess> {
    rmSync(socket_path, { force: true });
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const server = new ServerProcess(label, child, socket_path);
    await server.waitListening(tcp_port);
    return server;
  }

  get pid(): number {
    return this.child.pid!;
  }

  get stderr(): string {
    return this.stderr_tail;
  }

  cpu(): NamedCpu {
    return processCpu(this.pid);
  }

  threads(): ThreadCpu[] {
    return threadCpu(this.pid);
  }

  usage(): ServerUsage {
    return { cpu_seconds: cpuSeconds(this.pid), peak_rss_bytes: peakRssBytes(this.pid), threads: threadCpu(this.pid) };
  }

  /** Reads the usage, asks the server to end (SIGTERM unless overridden), SIGKILL after the timeout. */
  async stop(): Promise<ServerUsage> {
    if (this.has_exited) throw this.died('before stop');
    const usage = this.usage();
    this.requestExit();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), SERVER_STOP_TIMEOUT_MS);
    const { code, signal } = await this.exited;
    clearTimeout(timer);
    rmSync(this.socket_path, { force: true });
    if (signal === 'SIGKILL') throw new Error(`${this.label} did not stop within ${SERVER_STOP_TIMEOUT_MS} ms`);
    if (code !== 0 && signal !== 'SIGTERM') throw new Error(`${this.label} exited with ${signal ?? code} at stop: ${this.stderr_tail.trim()}`);
    return usage;
  }

  /** Kills without measuring: for clean-up after an error. */
  async kill(): Promise<void> {
    if (this.has_exited) return;
    this.child.kill('SIGKILL');
    await this.exited;
    rmSync(this.socket_path, { force: true });
  }

  protected requestExit(): void {
    this.child.kill('SIGTERM');
  }

  protected died(when: string): Error {
    return new Error(`${this.label} (pid ${this.pid}) exited ${when}: ${this.stderr_tail.trim() || 'no message'}`);
  }

  private async waitListening(tcp_port?: number): Promise<void> {
    const deadline = Date.now() + SERVER_READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.has_exited) throw this.died('while starting');
      if (await socketAccepts(tcp_port === undefined ? this.socket_path : tcp_port)) return;
      await delay(READY_POLL_MS);
    }
    await this.kill();
    throw new Error(`${this.label} did not listen on ${this.socket_path} within ${SERVER_READY_TIMEOUT_MS} ms: ${this.stderr_tail.trim()}`);
  }
}

export interface UblksnapServerOptions {
  socket_path: string;
  storage_dir: string;
  volumes: { name: string; file: string }[];
  params?: Record<string, number>;
  /** Engine worker counts; the engine's defaults when absent. */
  cow_workers?: number;
  image_workers?: number;
  /** Extra node flags, e.g. --cpu-prof --cpu-prof-dir=DIR. */
  node_flags?: string[];
  /** Also listen on TCP loopback at this port (the TLS rows). */
  tcp_port?: number;
  /** Require TLS with this PSK file (user:hexkey). */
  tls_psk_file?: string;
}

export interface TakeReply {
  id: string;
  images: Record<string, string>;
  take_ms: number;
  /** The diff-storage file: the engine removes it at destroy; the caller makes sure. */
  storage: string;
  chunk_bytes: number;
}

type Reply = Record<string, unknown> & { ok: boolean; error?: string };

/** bench/servers/ublksnap-server.js, driven by one-line commands on its stdin. */
export class UblksnapServer extends ServerProcess {
  private readonly waiting: ((reply: Reply) => void)[] = [];

  static async launch(label: string, options: UblksnapServerOptions): Promise<UblksnapServer> {
    rmSync(options.socket_path, { force: true });
    const script = path.join(__dirname, '..', 'servers', 'ublksnap-server.js');
    const args = [...(options.node_flags ?? []), script, '--socket', options.socket_path, '--storage-dir', options.storage_dir,
      ...options.volumes.flatMap((v) => ['--volume', `${v.name}=${v.file}`]),
      ...Object.entries(options.params ?? {}).flatMap(([name, value]) => ['--param', `${name}=${value}`]),
      ...(options.cow_workers === undefined ? [] : ['--cow-workers', String(options.cow_workers)]),
      ...(options.image_workers === undefined ? [] : ['--image-workers', String(options.image_workers)]),
      ...(options.tcp_port === undefined ? [] : ['--tcp', String(options.tcp_port)]),
      ...(options.tls_psk_file === undefined ? [] : ['--tls-psk', options.tls_psk_file])];
    const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const server = new UblksnapServer(label, child, options.socket_path);
    const ready = await server.nextReply(SERVER_READY_TIMEOUT_MS);
    if (ready.event !== 'ready') throw new Error(`${label} did not start: ${JSON.stringify(ready)}`);
    return server;
  }

  private constructor(label: string, child: ChildProcess, socket_path: string) {
    super(label, child, socket_path);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let reply: Reply;
      try {
        reply = JSON.parse(line) as Reply;
      } catch {
        // Not protocol (a stray console.log in the engine): keep it with the errors.
        reply = { ok: false, error: `not JSON: ${line}` };
      }
      this.waiting.shift()?.(reply);
    });
  }

  async take(volumes: string[] = []): Promise<TakeReply> {
    return (await this.command(`take ${volumes.join(',')}`)) as unknown as TakeReply;
  }

  async destroy(id: string): Promise<number> {
    return (await this.command(`destroy ${id}`)).destroy_ms as number;
  }

  async gcCount(): Promise<number> {
    return (await this.command('stats')).gc_count as number;
  }

  async command(line: string): Promise<Reply> {
    if (line.includes('\n')) throw new Error('a server command is one line');
    const reply = this.nextReply(COMMAND_TIMEOUT_MS);
    this.child.stdin!.write(`${line}\n`);
    const answer = await reply;
    if (!answer.ok) throw new Error(`${this.label}: ${line}: ${answer.error ?? 'failed'}`);
    return answer;
  }

  protected override requestExit(): void {
    this.child.stdin!.end('quit\n');
  }

  private nextReply(timeout_ms: number): Promise<Reply> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (action: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        action();
      };
      const timer = setTimeout(() => settle(() => reject(new Error(`${this.label}: no reply within ${timeout_ms} ms: ${this.stderr.trim()}`))), timeout_ms);
      void this.exited.then(() => settle(() => reject(this.died('while a command was waiting'))));
      this.waiting.push((reply) => settle(() => resolve(reply)));
    });
  }
}

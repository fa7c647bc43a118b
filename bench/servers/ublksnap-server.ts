// The benchmark's ublksnap server: an Engine and an NbdServer on a Unix
// socket, in a process of its own so that the harness can charge its CPU
// seconds and peak RSS to it alone, as it does for nbdkit and QEMU.
//
//   node dist/bench/servers/ublksnap-server.js --socket PATH --storage-dir DIR
//        --volume NAME=PATH [--volume NAME=PATH …] [--param NAME=VALUE …]
//        [--cow-workers N] [--image-workers N]   (the engine's defaults otherwise)
//        [--log-level warn]                      (the engine's pino log, on stderr)
//
// Design notes
// - The protocol is one line each way: a command on stdin, one JSON object
//   on stdout with `ok` true or false. The first stdout line is
//   {"ok":true,"event":"ready",…} once every volume is attached and the
//   socket listens. stderr carries the engine's warnings, never protocol.
// - Commands:
//     take [NAME,NAME…]  create a snapshot of the named volumes (all when
//                        omitted) with a fresh diff-storage file in the
//                        storage dir, take it; prints id, image export
//                        names, the storage path, the chunk size and the
//                        take time in ms
//     destroy ID         destroy the snapshot; prints the time in ms (the
//                        engine removes a diff-storage file it created;
//                        the harness removes whatever is left)
//     info ID            the engine's snapshot info
//     stats              GCs on the main thread since start, process memory
//     alloc-start        start V8's sampling heap profiler on the main
//                        thread, keeping objects that GC collected: where
//                        the garbage comes from, not what stays alive
//     alloc-stop FILE    stop it and write the .heapprofile to FILE
//     quit               stop the NBD server and the engine, exit 0
// - A bad command is answered {"ok":false,"error":…}; the server goes on.
// - End of stdin (the harness died) is a quit, so no server outlives it.

import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { PerformanceObserver } from 'node:perf_hooks';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { Engine } from '../../src/engine/engine';
import { NbdServer } from '../../src/frontends/nbd/server';

/** One allocation sample per this many bytes: fine enough to see a 16-byte-per-request habit over 65 536 requests. */
const ALLOCATION_SAMPLING_BYTES = 1024;
const inspector = new Session();
const STDERR_FD = 2;

/** The diff storage may grow to this many times the snapshot's volume bytes: never the limit in a benchmark. */
const STORAGE_LIMIT_FACTOR = 2;

interface Volume { name: string; file: string; }

function parseVolumes(values: string[]): Volume[] {
  if (values.length === 0) throw new Error('at least one --volume NAME=PATH is needed');
  return values.map((value) => {
    const at = value.indexOf('=');
    if (at <= 0 || at === value.length - 1) throw new Error(`--volume wants NAME=PATH, got ${value}`);
    return { name: value.slice(0, at), file: value.slice(at + 1) };
  });
}

function parseParams(values: string[]): Record<string, number> {
  const params: Record<string, number> = {};
  for (const value of values) {
    const match = /^([a-z_]+)=(\d+)$/.exec(value);
    if (match === null) throw new Error(`--param wants NAME=INTEGER, got ${value}`);
    params[match[1]!] = Number(match[2]);
  }
  return params;
}

function reply(fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(fields)}\n`);
}

function elapsedMs(since: bigint): number {
  return Number(process.hrtime.bigint() - since) / 1e6;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      socket: { type: 'string' },
      'storage-dir': { type: 'string' },
      volume: { type: 'string', multiple: true, default: [] },
      param: { type: 'string', multiple: true, default: [] },
      'cow-workers': { type: 'string' },
      'image-workers': { type: 'string' },
      'log-level': { type: 'string', default: 'warn' },
      // The TLS rows (bench/nbd/tls-systems.ts): TCP on loopback, TLS required with this PSK file.
      tcp: { type: 'string' },
      'tls-psk': { type: 'string' },
    },
  });
  if (values.socket === undefined || values['storage-dir'] === undefined) throw new Error('--socket and --storage-dir are required');
  const volumes = parseVolumes(values.volume ?? []);
  const storage_dir = values['storage-dir'];
  let gc_count = 0;
  new PerformanceObserver((list) => { gc_count += list.getEntries().length; }).observe({ entryTypes: ['gc'] });

  const workers = (value: string | undefined): number | undefined => (value === undefined ? undefined : Number(value));
  const engine = await Engine.start({
    params: parseParams(values.param ?? []),
    cow_workers: workers(values['cow-workers']),
    image_workers: workers(values['image-workers']),
    // Warnings (a corrupted snapshot and why) go to stderr, where the harness keeps the tail for its error messages.
    logger: pino({ level: values['log-level'] }, pino.destination(STDERR_FD)),
  });
  for (const volume of volumes) await engine.attach(volume.file, { name: volume.name });
  const tls_psk = values['tls-psk'];
  const server = new NbdServer(engine, {
    socket_path: values.socket,
    ...(values.tcp !== undefined ? { listen: { host: '127.0.0.1', port: Number(values.tcp) } } : {}),
    ...(tls_psk !== undefined ? {
      security: { tls: { mode: 'require' as const, certificates_dir: null, psk_file: tls_psk, verify_peer: false }, access: [], insecure: false },
    } : {}),
  });
  await server.start();
  let next_storage_index = 0;

  const commands: Record<string, (args: string[]) => Promise<Record<string, unknown>>> = {
    async take(args) {
      const names = args.length > 0 ? args.join(',').split(',') : volumes.map((v) => v.name);
      const volume_bytes = names.reduce((sum, name) => sum + engine.volume(name).capacity_sectors * 512, 0);
      const storage = path.join(storage_dir, `diff-${process.pid}-${next_storage_index++}`);
      const id = await engine.snapshotCreate({ volumes: names, storage, limit_bytes: STORAGE_LIMIT_FACTOR * volume_bytes });
      const started = process.hrtime.bigint();
      await engine.snapshotTake(id);
      const take_ms = elapsedMs(started);
      const images: Record<string, string> = {};
      for (const name of names) images[name] = `${name}@${id}`;
      return { id, images, take_ms, storage, chunk_bytes: engine.snapshotInfo(id).chunks[0]?.chunk_bytes };
    },
    async destroy(args) {
      const started = process.hrtime.bigint();
      const id = args[0] ?? '';
      await engine.snapshotDestroy(id);
      return { destroy_ms: elapsedMs(started) };
    },
    async info(args) {
      return { info: engine.snapshotInfo(args[0] ?? '') };
    },
    async stats() {
      return { gc_count, memory: process.memoryUsage() };
    },
    async 'alloc-start'() {
      inspector.connect();
      await inspector.post('HeapProfiler.startSampling', {
        samplingInterval: ALLOCATION_SAMPLING_BYTES, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true,
      });
      return {};
    },
    async 'alloc-stop'(args) {
      const { profile } = await inspector.post('HeapProfiler.stopSampling') as { profile: unknown };
      inspector.disconnect();
      writeFileSync(args[0] ?? 'allocations.heapprofile', JSON.stringify(profile));
      return {};
    },
  };

  const lines = createInterface({ input: process.stdin });
  let quitting = false;
  const quit = async (): Promise<void> => {
    if (quitting) return;
    quitting = true;
    lines.close();
    await server.stop();
    await engine.stop();
    reply({ ok: true, event: 'quit', gc_count });
    process.exit(0);
  };
  reply({ ok: true, event: 'ready', pid: process.pid, exports: volumes.map((v) => v.name), uri: server.uri(volumes[0]!.name) });
  // Commands run one at a time, in order: the harness waits for each reply.
  let queue = Promise.resolve();
  lines.on('line', (line) => {
    queue = queue.then(async () => {
      const [command, ...args] = line.trim().split(/\s+/);
      if (command === 'quit') return quit();
      const handler = command !== undefined ? commands[command] : undefined;
      if (handler === undefined) { reply({ ok: false, error: `unknown command ${JSON.stringify(line)}` }); return; }
      try {
        reply({ ok: true, ...(await handler(args)) });
      } catch (error) {
        reply({ ok: false, error: (error as Error).message });
      }
    });
  });
  lines.on('close', () => { queue = queue.then(quit); });
}

main().catch((error: unknown) => {
  console.error(`ublksnap-server: ${(error as Error).stack ?? String(error)}`);
  process.exit(1);
});

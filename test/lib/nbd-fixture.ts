// An engine and an NBD server for the tests of test/nbd: scratch files in
// /dev/shm, 64 KiB chunks and tracking blocks so a few MiB cross many chunk
// boundaries, the server on a Unix socket (and TCP loopback on request),
// and a close() that stops both and removes every file (also run at exit).
// nbdFixtureHooks does the usual set-up of a test file in one call: start
// before the suite, attach its volumes, close after it.

import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import type { Callback } from 'uvu';
import type { EngineOptions, VolumeInfo } from '../../src/engine/api';
import { assert } from '../../src/shared/assert';
import { Engine } from '../../src/engine/engine';
import { NbdServer, NbdServerOptions } from '../../src/frontends/nbd/server';
import { SCRATCH_ROOT, SMALL_CHUNK_PARAMS } from './engine-fixture';

/** Diff storage limit of fixture snapshots: room for every chunk of the test volumes. */
export const SNAPSHOT_LIMIT_BYTES_DEFAULT = 1024 * 1024 * 1024;

export interface NbdFixture {
  engine: Engine;
  server: NbdServer;
  dir: string;
  socket_path: string;
  /** A sparse file of size_bytes in the scratch dir. */
  file(name: string, size_bytes: number): string;
  /** Creates a sparse file and attaches it as volume `name`. */
  attach(name: string, size_bytes: number): Promise<VolumeInfo>;
  /** Creates and takes a snapshot of volumes, diff storage a file in the scratch dir; returns its id. */
  snapshot(volumes: string[], limit_bytes?: number): Promise<string>;
  uri(export_name: string, transport?: 'unix' | 'tcp'): string;
  close(): Promise<void>;
}

export interface NbdFixtureOptions {
  engine?: EngineOptions;
  server?: Partial<NbdServerOptions>;
  /** Also listen on TCP loopback (an ephemeral port). */
  tcp?: boolean;
}

const live_dirs = new Set<string>();
process.once('exit', () => {
  for (const dir of live_dirs) rmSync(dir, { recursive: true, force: true });
});

/** The tests' logger: silent unless NBD_TEST_LOG names a level. */
function testLogger(): pino.Logger {
  return pino({ level: process.env.NBD_TEST_LOG ?? 'silent' });
}

/** An NbdServer on an engine a test started itself (the contract suite's NBD driver), started. */
export async function startNbdServer(engine: Engine, options: Partial<NbdServerOptions>): Promise<NbdServer> {
  const server = new NbdServer(engine, { logger: testLogger(), ...options });
  await server.start();
  return server;
}

export async function startNbdFixture(options: NbdFixtureOptions = {}): Promise<NbdFixture> {
  const dir = mkdtempSync(path.join(SCRATCH_ROOT, 'ublksnap-nbd-'));
  live_dirs.add(dir);
  const socket_path = path.join(dir, 'nbd.sock');
  const logger = testLogger();
  const engine = await Engine.start({ logger, ...options.engine, params: { ...SMALL_CHUNK_PARAMS, ...options.engine?.params } });
  const server = await startNbdServer(engine, {
    socket_path,
    ...(options.tcp ? { listen: { host: '127.0.0.1', port: 0 } } : {}),
    ...options.server,
  });
  let snapshots = 0;
  let closed = false;
  const file = (name: string, size_bytes: number): string => {
    const file_path = path.join(dir, name);
    writeFileSync(file_path, '');
    truncateSync(file_path, size_bytes);
    return file_path;
  };
  return {
    engine,
    server,
    dir,
    socket_path,
    file,
    attach: (name, size_bytes) => engine.attach(file(`${name}.img`, size_bytes), { name }),
    async snapshot(volumes: string[], limit_bytes = SNAPSHOT_LIMIT_BYTES_DEFAULT): Promise<string> {
      snapshots += 1;
      const id = await engine.snapshotCreate({ volumes, storage: path.join(dir, `diff-${snapshots}`), limit_bytes });
      await engine.snapshotTake(id);
      return id;
    },
    uri: (export_name, transport) => server.uri(export_name, transport),
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      try {
        await server.stop();
        await engine.stop();
      } finally {
        rmSync(dir, { recursive: true, force: true });
        live_dirs.delete(dir);
      }
    },
  };
}

export interface NbdFixtureHookOptions extends NbdFixtureOptions {
  /** Volumes to attach once started: name → size in bytes. */
  volumes?: Record<string, number>;
  /** More set-up once the volumes are attached. */
  ready?: (fixture: NbdFixture) => Promise<void>;
  /** Tear-down that must run before the fixture closes (unmounts, tools still using an export). */
  beforeClose?: () => Promise<void>;
}

/** What the hooks need of a suite: a uvu suite, or a gated one (system.ts gate). */
export interface SuiteHooks {
  before(fn: Callback): void;
  after(fn: Callback): void;
}

/**
 * Starts a fixture in the suite's before hook (attaching options.volumes,
 * then options.ready) and closes it in its after hook. Returns the fixture
 * as a stand-in that forwards to the started one, so the file holds it in a
 * const; using it outside the suite's tests is a bug and asserts.
 */
export function nbdFixtureHooks(suite: SuiteHooks, options: NbdFixtureHookOptions = {}): NbdFixture {
  let started: NbdFixture | undefined;
  const live = (): NbdFixture => {
    assert(started !== undefined, 'the NBD fixture is used outside its suite (before its before hook ran)');
    return started;
  };
  suite.before(async () => {
    started = await startNbdFixture(options);
    for (const [name, size_bytes] of Object.entries(options.volumes ?? {})) await started.attach(name, size_bytes);
    await options.ready?.(started);
  });
  suite.after(async () => {
    try {
      await options.beforeClose?.();
    } finally {
      await started?.close();
    }
  });
  return {
    get engine() { return live().engine; },
    get server() { return live().server; },
    get dir() { return live().dir; },
    get socket_path() { return live().socket_path; },
    file: (name, size_bytes) => live().file(name, size_bytes),
    attach: (name, size_bytes) => live().attach(name, size_bytes),
    snapshot: (volumes, limit_bytes) => live().snapshot(volumes, limit_bytes),
    uri: (export_name, transport) => live().uri(export_name, transport),
    close: () => live().close(),
  };
}

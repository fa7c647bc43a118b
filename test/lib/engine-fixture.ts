// An engine on scratch files in /dev/shm, with small chunks so tests cross
// many chunk boundaries quickly, and a cleanup that always runs.

import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { EngineOptions } from '../../src/engine/api';
import { Engine } from '../../src/engine/engine';
import { IoClient } from '../../src/frontends/in-process/io-client';

export const SCRATCH_ROOT = '/dev/shm';
/** 64 KiB chunks (the engine never goes below a page). */
export const SMALL_CHUNK_PARAMS = { chunk_minimum_shift: 16, tracking_block_minimum_shift: 16, diff_storage_minimum: 2048 };

export interface Fixture {
  engine: Engine;
  client: IoClient;
  dir: string;
  /** Creates a sparse file of size_bytes in the scratch dir and returns its path. */
  file(name: string, size_bytes: number): string;
  close(): Promise<void>;
}

export async function startFixture(options: EngineOptions = {}): Promise<Fixture> {
  const dir = mkdtempSync(path.join(SCRATCH_ROOT, 'ublksnap-test-'));
  const engine = await Engine.start({ ...options, params: { ...SMALL_CHUNK_PARAMS, ...options.params } });
  const client = await IoClient.open(engine, 64, 1 << 20);
  let closed = false;
  return {
    engine,
    client,
    dir,
    file(name: string, size_bytes: number): string {
      const file = path.join(dir, name);
      writeFileSync(file, '');
      truncateSync(file, size_bytes);
      return file;
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      try {
        await client.close();
        await engine.stop();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

export { randomBytes, seededRandom } from './random';

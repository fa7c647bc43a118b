// The reflink tests' fixture: an in-process engine beside a fresh XFS made
// with reflink=1, loop-mounted from an image file in a temporary directory
// (root and losetup, mkfs.xfs, mount: gate the suite on them). dispose()
// undoes it all, also after a start that failed half-way.

import { closeSync, openSync, truncateSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { Engine } from '../../src/engine/engine';
import { IoClient } from '../../src/frontends/in-process/io-client';
import { SMALL_CHUNK_PARAMS } from './engine-fixture';
import { makeLoopDevice, mkfsXfsReflinkAndMount, tempDir, type LoopDevice, type Mount, type TempDir } from './system';

const MiB = 1024 * 1024;

export interface XfsEngine {
  /** The temporary directory that holds the XFS image: room for files on another filesystem. */
  work: TempDir;
  /** The XFS. */
  mount: Mount;
  engine: Engine;
  client: IoClient;
  dispose(): Promise<void>;
}

export async function startXfsEngine(label: string, image_bytes: number): Promise<XfsEngine> {
  const work = tempDir(label);
  let loop: LoopDevice | undefined;
  let mount: Mount | undefined;
  let engine: Engine | undefined;
  let client: IoClient | undefined;
  const dispose = async (): Promise<void> => {
    try {
      await client?.close();
      await engine?.stop();
    } finally {
      mount?.unmount();
      loop?.detach();
      work.remove();
    }
  };
  try {
    const image = path.join(work.path, 'xfs.img');
    closeSync(openSync(image, 'w'));
    truncateSync(image, image_bytes);
    loop = makeLoopDevice(image);
    mount = mkfsXfsReflinkAndMount(loop.device);
    engine = await Engine.start({ logger: pino({ level: 'silent' }), params: SMALL_CHUNK_PARAMS });
    client = await IoClient.open(engine, 64, MiB);
  } catch (error) {
    await dispose();
    throw error;
  }
  return { work, mount, engine, client, dispose };
}

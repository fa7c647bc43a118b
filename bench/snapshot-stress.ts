// Snapshot verification under load, again and again: the check the NBD
// benchmark makes once per workload, in a loop, several loops at once so
// the two cores are oversubscribed (threads preempted mid-operation is what
// shakes out races between the actors).
//
//   node dist/bench/snapshot-stress.js [--iterations=20] [--parallel=3]
//        [--chunk-shift=16] [--image-mib=1024] [--workload=rand|seq|stride]
//
// Each loop: its own image of random data on /dev/shm and its own ublksnap
// server (bench/servers/ublksnap-server.ts); per iteration: checksum the
// volume, take, write through NBD with fio, checksum the image through NBD
// (it must equal the volume at take), destroy. A failed iteration prints
// the snapshot's state and the server's stderr (the engine's warnings).
// Exit status 1 if any iteration failed.

import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { unixUri } from './nbd/commands';
import { runFio, type FioJob } from './nbd/fio';
import { fileChecksum, fillRandom } from './nbd/image';
import { exportChecksum } from './nbd/nbdcopy';
import { UblksnapServer } from './nbd/servers';
import { randWriteJob, seqWriteJob, strideJob } from './nbd/systems';

const MiB = 1024 * 1024;
const RANDOM_IOS_PER_GIB = 65_536;
const RANDOM_BLOCK_BYTES = 4096;
const VOLUME = 'stress';

function job(workload: string, image_bytes: number, chunk_bytes: number): FioJob {
  if (workload === 'seq') return seqWriteJob(image_bytes);
  if (workload === 'stride') return strideJob(image_bytes, chunk_bytes);
  if (workload === 'rand') return randWriteJob(image_bytes, Math.round(RANDOM_IOS_PER_GIB * image_bytes / (1024 * MiB)) * RANDOM_BLOCK_BYTES);
  throw new Error(`--workload must be rand, seq or stride, got ${workload}`);
}

async function loop(index: number, options: { iterations: number; chunk_shift: number; image_bytes: number; workload: string }): Promise<number> {
  const dir = mkdtempSync(`/dev/shm/ublksnap-stress-${index}-`);
  let failures = 0;
  try {
    const image = path.join(dir, 'image.raw');
    fillRandom(image, options.image_bytes);
    const server = await UblksnapServer.launch(`ublksnap-stress-${index}`, {
      socket_path: path.join(dir, 'server.sock'), storage_dir: dir, volumes: [{ name: VOLUME, file: image }],
      params: { chunk_minimum_shift: options.chunk_shift },
    });
    try {
      for (let iteration = 0; iteration < options.iterations; iteration += 1) {
        const before = fileChecksum(image);
        const taken = await server.take();
        const write = await runFio(unixUri(server.socket_path, VOLUME), job(options.workload, options.image_bytes, taken.chunk_bytes), path.join(dir, 'fio.json'));
        let verdict: string;
        try {
          verdict = (await exportChecksum(unixUri(server.socket_path, taken.images[VOLUME]!))).checksum === before ? 'equal' : 'IMAGE DIFFERS';
        } catch (error) {
          verdict = `IMAGE READ FAILED: ${(error as Error).message.slice(-120)}`;
        }
        if (verdict !== 'equal') {
          failures += 1;
          const info = (await server.command(`info ${taken.id}`)).info as { state: string; error_code: number; chunks: unknown };
          console.log(`loop ${index} iteration ${iteration}: ${verdict}\n  snapshot ${info.state}, error ${info.error_code}, chunks ${JSON.stringify(info.chunks)}\n  server stderr: ${server.stderr.trim().slice(-1500)}`);
        } else {
          console.log(`loop ${index} iteration ${iteration}: ${write.iops.toFixed(0)} IOPS, image equal`);
        }
        await server.destroy(taken.id);
        rmSync(taken.storage, { force: true });
      }
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return failures;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      iterations: { type: 'string', default: '20' },
      parallel: { type: 'string', default: '3' },
      'chunk-shift': { type: 'string', default: '16' },
      'image-mib': { type: 'string', default: '1024' },
      workload: { type: 'string', default: 'rand' },
    },
  });
  const number = (name: keyof typeof values): number => {
    const value = Number(values[name]);
    if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer, got ${values[name]}`);
    return value;
  };
  const options = { iterations: number('iterations'), chunk_shift: number('chunk-shift'), image_bytes: number('image-mib') * MiB, workload: values.workload! };
  job(options.workload, options.image_bytes, 2 ** options.chunk_shift);
  const failures = await Promise.all(Array.from({ length: number('parallel') }, (_, index) => loop(index, options)));
  const total = failures.reduce((sum, n) => sum + n, 0);
  console.log(`${total === 0 ? 'PASS' : 'FAIL'} ${total} of ${options.iterations * failures.length} snapshots broke or differed`);
  process.exitCode = total === 0 ? 0 : 1;
}

main().catch((error: unknown) => {
  console.error(`snapshot-stress: ${(error as Error).message}`);
  process.exit(1);
});

// In-process engine benchmark (issue 3): the same file on /dev/shm written
// and read by a plain writeSync/readSync loop (the line we cannot beat) and
// through the engine — without a snapshot, with a fresh snapshot (every
// write a first touch), after every chunk was copied (the fast path) — and
// image reads. Sequential 1 MiB requests; the engine gets QUEUE_DEPTH of
// them in flight, as a frontend would. Figures are medians over rounds;
// ratios are what we compare, because these machines are noisy.

import { closeSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { Engine } from '../src/engine/engine';
import { IoFlags, IoOp, type IoQueue } from '../src/engine/api';
import { GcCounter, median, table } from './lib';

const MiB = 1 << 20;
const IO_BYTES = MiB;
const QUEUE_DEPTH = 8;

export interface EngineBenchResult {
  rows: Record<string, number>;
  gc_count: number;
  text: string;
  goals: { name: string; ratio: number; target: number; pass: boolean }[];
}

function plainLoop(file: string, volume_bytes: number, write: boolean): number {
  const fd = openSync(file, 'r+');
  const buffer = Buffer.alloc(IO_BYTES, 0x5a);
  const started = process.hrtime.bigint();
  for (let offset = 0; offset < volume_bytes; offset += IO_BYTES) {
    if (write) writeSync(fd, buffer, 0, IO_BYTES, offset);
    else readSync(fd, buffer, 0, IO_BYTES, offset);
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  closeSync(fd);
  return volume_bytes / MiB / seconds;
}

/**
 * Sequential 1 MiB requests over the whole target, QUEUE_DEPTH in flight,
 * driven on the IoQueue itself as a frontend drives it: a write's payload
 * sits in its tag's slot (filled once), a read's data stays there.
 */
function sweep(queue: IoQueue, handle: number, volume_bytes: number, op: IoOp): Promise<number> {
  return new Promise((resolve, reject) => {
    let next_offset = 0;
    let in_flight = 0;
    const started = process.hrtime.bigint();
    const submitNext = (tag: number): void => {
      if (next_offset >= volume_bytes) return;
      queue.submit(tag, op, handle, next_offset, IO_BYTES, IoFlags.NONE);
      next_offset += IO_BYTES;
      in_flight += 1;
    };
    queue.onComplete((tag, errno) => {
      in_flight -= 1;
      if (errno !== 0) {
        reject(new Error(`bench request failed with errno ${errno}`));
        return;
      }
      submitNext(tag);
      if (in_flight === 0) resolve(volume_bytes / MiB / (Number(process.hrtime.bigint() - started) / 1e9));
    });
    for (let tag = 0; tag < queue.depth; tag += 1) submitNext(tag);
  });
}

export async function runEngineBench(quick: boolean): Promise<EngineBenchResult> {
  const volume_bytes = (quick ? 128 : 512) * MiB;
  const rounds = quick ? 3 : 5;
  const dir = mkdtempSync('/dev/shm/ublksnap-bench-');
  const file = path.join(dir, 'volume.img');
  writeFileSync(file, '');
  truncateSync(file, volume_bytes);
  plainLoop(file, volume_bytes, true); // allocate every page once, for every row alike
  const engine = await Engine.start({});
  const samples: Record<string, number[]> = {
    'plain writeSync loop': [], 'plain readSync loop': [], 'engine write, no snapshot': [],
    'engine write, first touch': [], 'engine write, chunks copied (fast path)': [],
    'image read, nothing copied': [], 'image read, all from diff storage': [],
  };
  const gc = new GcCounter();
  let actor_gc_count = 0;
  let actor_requests = 0;
  try {
    await engine.attach(file, { name: 'bench' });
    const queue = await engine.openQueue({ depth: QUEUE_DEPTH, max_io_bytes: IO_BYTES });
    for (let tag = 0; tag < QUEUE_DEPTH; tag += 1) queue.buffer(tag).fill(0xa5);
    const volume = engine.resolveExport('bench').handle;
    for (let round = 0; round < rounds; round += 1) {
      samples['plain writeSync loop']!.push(plainLoop(file, volume_bytes, true));
      samples['plain readSync loop']!.push(plainLoop(file, volume_bytes, false));
      samples['engine write, no snapshot']!.push(await sweep(queue, volume, volume_bytes, IoOp.WRITE));
      const id = await engine.snapshotCreate({ volumes: ['bench'], storage: path.join(dir, `diff-${round}`), limit_bytes: volume_bytes });
      await engine.snapshotTake(id);
      const image = engine.resolveExport(`bench@${id}`).handle;
      samples['image read, nothing copied']!.push(await sweep(queue, image, volume_bytes, IoOp.READ));
      samples['engine write, first touch']!.push(await sweep(queue, volume, volume_bytes, IoOp.WRITE));
      samples['engine write, chunks copied (fast path)']!.push(await sweep(queue, volume, volume_bytes, IoOp.WRITE));
      samples['image read, all from diff storage']!.push(await sweep(queue, image, volume_bytes, IoOp.READ));
      await engine.snapshotDestroy(id);
    }
    await queue.close();
    for (const stats of await engine.actorStats()) {
      actor_gc_count += stats.gc_count;
      actor_requests += stats.served;
    }
  } finally {
    await engine.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const gc_count = gc.stop();
  const rows: Record<string, number> = {};
  for (const [name, values] of Object.entries(samples)) rows[name] = median(values);
  const plain_write = rows['plain writeSync loop']!;
  const plain_read = rows['plain readSync loop']!;
  const text = table(['engine, in process (1 MiB sequential)', 'MiB/s (median)', 'ratio to plain loop'],
    Object.entries(rows).map(([name, value]) => [name, value.toFixed(0),
      (value / (name.includes('read') ? plain_read : plain_write)).toFixed(2)]));
  const goal = (name: string, ratio: number, target: number) => ({ name, ratio, target, pass: ratio >= target });
  const goals = [
    goal('fast path write ≥ 0.9× plain writeSync loop', rows['engine write, chunks copied (fast path)']! / plain_write, 0.9),
    goal('first-touch write ≥ 0.45× plain writeSync loop', rows['engine write, first touch']! / plain_write, 0.45),
  ];
  return { rows, gc_count, text: `${text}\n\n${volume_bytes / MiB} MiB volume on /dev/shm, ${rounds} rounds. Garbage collections: ${actor_gc_count} in the I/O actors over ${actor_requests} requests (the I/O path allocates nothing); ${gc_count} on the main thread `, goals };
}

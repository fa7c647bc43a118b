// Goal: unaligned reads and writes (odd offsets and lengths, 1 byte to
// 3 chunks, straddling 64 KiB chunk boundaries) through qemu's NBD client
// land exactly, on the volume and on the image, before and after the take,
// with copy-on-write splitting chunks that only part of a write covers.
// Method: qemu-io sees minimum block 1, so it sends the requests unaligned
// as given; a model buffer per export follows every write; each qemu-io
// write is checked with `read -P`, and the whole export is compared with
// its model through nbdcopy at the end of each phase.

import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { seededRandom } from '../lib/engine-fixture';
import { gate } from '../lib/system';
import { NbdFixture, startNbdFixture } from '../lib/nbd-fixture';
import { runOk } from '../lib/nbd-tools';
import { testSeed } from '../lib/workers';

const suite = gate(test, 'nbd/qemu-io', { tools: ['qemu-io', 'nbdcopy'] });
const VOLUME_BYTES = 4 * 1024 * 1024;
const CHUNK = 64 * 1024;
const WRITES_PER_PHASE = 40;

let fixture: NbdFixture;

suite.before(async () => {
  fixture = await startNbdFixture();
  await fixture.attach('vol', VOLUME_BYTES);
});

suite.after(async () => {
  await fixture?.close();
});

interface Write { offset: number; length: number; pattern: number }

/** Writes that straddle chunk boundaries at odd offsets, plus a few tiny and a few long ones. */
function unalignedWrites(random: () => number, count: number, first_pattern: number): Write[] {
  const writes: Write[] = [];
  for (let i = 0; i < count; i += 1) {
    const boundary = CHUNK * (1 + Math.floor(random() * (VOLUME_BYTES / CHUNK - 4)));
    const shape = i % 4;
    const length = shape === 0 ? 1 : shape === 1 ? 1 + Math.floor(random() * 4096) : shape === 2 ? CHUNK + 1 + Math.floor(random() * 999) : 3 * CHUNK - 3;
    const offset = Math.max(0, boundary - Math.floor(random() * Math.min(length, CHUNK)) - (shape === 0 ? 0 : 1));
    writes.push({ offset, length, pattern: (first_pattern + i) % 255 + 1 });
  }
  return writes;
}

async function applyWrites(uri: string, writes: Write[], model: Buffer): Promise<void> {
  const commands: string[] = [];
  for (const w of writes) {
    commands.push('-c', `write -P ${w.pattern} ${w.offset} ${w.length}`, '-c', `read -P ${w.pattern} ${w.offset} ${w.length}`);
    model.fill(w.pattern, w.offset, w.offset + w.length);
  }
  const out = await runOk('qemu-io', ['-f', 'raw', ...commands, uri]);
  assert.not.match(out, /Pattern verification failed|error/i, 'qemu-io read back each write');
}

/** Unaligned reads spot-checked against the model with qemu-io's pattern check. */
async function spotReads(uri: string, model: Buffer, random: () => number): Promise<void> {
  const commands: string[] = [];
  for (let i = 0; i < 30; i += 1) {
    const offset = Math.floor(random() * (VOLUME_BYTES - 2 * CHUNK));
    // Extend to a run of one byte value so `read -P` can check it.
    let end = offset + 1;
    while (end < VOLUME_BYTES && end - offset < 2 * CHUNK && model[end] === model[offset]) end += 1;
    commands.push('-c', `read -P ${model[offset]} ${offset} ${end - offset}`);
  }
  const out = await runOk('qemu-io', ['-f', 'raw', ...commands, uri]);
  assert.not.match(out, /Pattern verification failed/);
}

async function compareWhole(uri: string, model: Buffer, label: string): Promise<void> {
  const copy = fixture.file(`${label}.copy`, 0);
  await runOk('nbdcopy', [uri, copy]);
  const data = readFileSync(copy);
  assert.is(data.length, model.length);
  if (!data.equals(model)) {
    let first = 0;
    while (data[first] === model[first]) first += 1;
    assert.unreachable(`${label}: first difference at byte ${first} (chunk ${Math.floor(first / CHUNK)}): got ${data[first]}, want ${model[first]}`);
  }
}

suite.test('unaligned writes and reads across chunk boundaries: volume, then image and volume after the take', async () => {
  const seed = testSeed('qemu-io unaligned');
  const random = seededRandom(seed);
  const volume_uri = fixture.uri('vol');
  const volume_model = Buffer.alloc(VOLUME_BYTES);
  await applyWrites(volume_uri, unalignedWrites(random, WRITES_PER_PHASE, 1), volume_model);
  await spotReads(volume_uri, volume_model, random);
  await compareWhole(volume_uri, volume_model, 'volume-before');

  const id = await fixture.snapshot(['vol']);
  const image_uri = fixture.uri(`vol@${id}`);
  const image_model = Buffer.from(volume_model);
  // Interleave: volume writes (copy-on-write of partly covered chunks) and image writes.
  await applyWrites(volume_uri, unalignedWrites(random, WRITES_PER_PHASE, 60), volume_model);
  await applyWrites(image_uri, unalignedWrites(random, WRITES_PER_PHASE, 120), image_model);
  await applyWrites(volume_uri, unalignedWrites(random, WRITES_PER_PHASE / 2, 180), volume_model);
  await spotReads(image_uri, image_model, random);
  await spotReads(volume_uri, volume_model, random);
  await compareWhole(image_uri, image_model, 'image');
  await compareWhole(volume_uri, volume_model, 'volume-after');
  await fixture.engine.snapshotDestroy(id);
  await compareWhole(volume_uri, volume_model, 'volume-destroyed');
});

test.run();

// Goal: the engine behaves exactly like a plain reference model under
// random mixes of volume writes (aligned and unaligned, crossing chunk
// boundaries), discards and write-zeroes, image reads and writes, flushes,
// takes and destroys, on two volumes in one snapshot with small chunks.
// Method: a seeded sequence of operations runs against the engine and
// against in-memory copies (volume bytes; image bytes frozen at take, then
// modified by image writes). Every read is compared with the model; at the
// end every byte of every volume and image is compared. A divergence
// prints the seed and the operation number. Replay with SEED=….

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IoFlags } from '../../src/engine/api';
import { randomBytes, seededRandom, startFixture, type Fixture } from '../lib/engine-fixture';
import { testSeed } from '../lib/workers';

const VOLUME_BYTES = [3 * 1024 * 1024 + 4096, 2 * 1024 * 1024]; // the first has a short last chunk
const OPERATIONS = Number(process.env.MODEL_OPERATIONS ?? 3000);
const IO_BYTES_MAX = 300 * 1024;

interface ModelVolume {
  name: string;
  data: Buffer;
  image: Buffer | null;
}

function pickRange(random: () => number, size: number): [number, number] {
  const aligned = random() < 0.5;
  const unit = aligned ? 4096 : 512;
  const length = Math.max(unit, Math.floor((random() * IO_BYTES_MAX) / unit) * unit);
  const offset = Math.floor((random() * (size - length)) / unit) * unit;
  return [offset, Math.min(length, size - offset)];
}

test('random operations match the reference model', async () => {
  const seed = testSeed('model');
  const random = seededRandom(seed);
  const fixture: Fixture = await startFixture();
  const { engine, client } = fixture;
  const volumes: ModelVolume[] = [];
  try {
    for (const [i, size] of VOLUME_BYTES.entries()) {
      const name = `model${i}`;
      await engine.attach(fixture.file(`${name}.img`, size), { name });
      volumes.push({ name, data: Buffer.alloc(size), image: null });
    }
    let snapshot: string | null = null;
    let takes = 0;
    for (let step = 0; step < OPERATIONS; step += 1) {
      const volume = volumes[Math.floor(random() * volumes.length)]!;
      const handle = engine.resolveExport(volume.name).handle;
      const roll = random();
      const [offset, length] = pickRange(random, volume.data.length);
      const where = `seed ${seed}, operation ${step}`;
      if (roll < 0.35) {
        const data = randomBytes(random, length);
        await client.write(handle, offset, data, random() < 0.1 ? IoFlags.FUA : IoFlags.NONE);
        data.copy(volume.data, offset);
      } else if (roll < 0.40) {
        await client.writeZeroes(handle, offset, length, random() < 0.5 ? IoFlags.MAY_UNMAP : IoFlags.NONE);
        volume.data.fill(0, offset, offset + length);
      } else if (roll < 0.50) {
        const got = await client.read(handle, offset, length);
        assert.ok(got.equals(volume.data.subarray(offset, offset + length)), `volume read differs (${where})`);
      } else if (roll < 0.55) {
        await client.flush(handle);
      } else if (roll < 0.62 && snapshot === null) {
        snapshot = await engine.snapshotCreate({ volumes: volumes.map((v) => v.name), storage: `${fixture.dir}/diff-${takes}`, limit_bytes: 64 << 20 });
        await engine.snapshotTake(snapshot);
        takes += 1;
        for (const v of volumes) v.image = Buffer.from(v.data);
      } else if (roll < 0.65 && snapshot !== null) {
        await engine.snapshotDestroy(snapshot);
        snapshot = null;
        for (const v of volumes) v.image = null;
      } else if (snapshot !== null && volume.image !== null) {
        const image = engine.resolveExport(`${volume.name}@${snapshot}`).handle;
        if (roll < 0.85) {
          const got = await client.read(image, offset, length);
          assert.ok(got.equals(volume.image.subarray(offset, offset + length)), `image read differs (${where})`);
        } else {
          const data = randomBytes(random, length);
          await client.write(image, offset, data);
          data.copy(volume.image, offset);
        }
      }
    }
    for (const volume of volumes) {
      const handle = engine.resolveExport(volume.name).handle;
      assert.ok((await client.read(handle, 0, volume.data.length)).equals(volume.data), `final volume ${volume.name} differs (seed ${seed})`);
      if (snapshot !== null && volume.image !== null) {
        const image = engine.resolveExport(`${volume.name}@${snapshot}`).handle;
        assert.ok((await client.read(image, 0, volume.image.length)).equals(volume.image), `final image ${volume.name} differs (seed ${seed})`);
      }
    }
    console.log(`  ${OPERATIONS} operations, ${takes} takes`);
  } finally {
    await fixture.close();
  }
});

test.run();

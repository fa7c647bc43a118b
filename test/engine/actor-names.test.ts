// Goal: each actor thread carries its kind's name (ublksnap-cow, -image,
// -store, -grow, -warm), so top -H, perf and the bench's per-thread CPU can say
// which actor burns the CPU; the main thread keeps the process's name.
// Method: an engine whose every pool has run a task (a snapshot taken
// under a write, its image read, destroyed), then /proc/self/task/*/comm.

import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startFixture } from '../lib/engine-fixture';

const MiB = 1 << 20;

function threadNames(): string[] {
  const names: string[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      names.push(readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim());
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return names;
}

test('actor threads are named by kind; the main thread is not renamed', async () => {
  const main_name = readFileSync('/proc/thread-self/comm', 'utf8').trim();
  const fixture = await startFixture({ cow_workers: 2, image_workers: 1, store_threads: 1 });
  try {
    const { engine, client } = fixture;
    await engine.attach(fixture.file('v.img', 8 * MiB), { name: 'v' });
    const id = await engine.snapshotCreate({ volumes: ['v'], storage: `${fixture.dir}/diff`, limit_bytes: 16 * MiB });
    await engine.snapshotTake(id);
    await client.write(engine.resolveExport('v').handle, 0, Buffer.alloc(MiB, 1));
    await client.read(engine.resolveExport(`v@${id}`).handle, 0, MiB);
    await engine.snapshotDestroy(id);
    const names = threadNames();
    const count = (name: string): number => names.filter((n) => n === name).length;
    assert.is(count('ublksnap-cow'), 2, `threads: ${names.join(', ')}`);
    assert.is(count('ublksnap-image'), 1, `threads: ${names.join(', ')}`);
    assert.is(count('ublksnap-store'), 1, `threads: ${names.join(', ')}`);
    assert.is(count('ublksnap-grow'), 1, `threads: ${names.join(', ')}`);
    assert.is(count('ublksnap-warm'), 1, `threads: ${names.join(', ')}`);
    assert.is(readFileSync('/proc/thread-self/comm', 'utf8').trim(), main_name);
  } finally {
    await fixture.close();
  }
});

test.run();

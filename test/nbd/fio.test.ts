// Goal: fio's nbd engine (libnbd) writes and verifies (crc32c headers)
// random, mixed-size workloads on a volume without a snapshot, on a volume
// under a taken snapshot (every first write copies a chunk), with two jobs
// on two connections at once, and on the snapshot image itself.
// Method: fio --ioengine=nbd with --verify=crc32c --do_verify=1
// --verify_fatal=1; any mismatch fails fio and so the test.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gate } from '../lib/system';
import { nbdFixtureHooks } from '../lib/nbd-fixture';
import { runOk } from '../lib/nbd-tools';

const suite = gate(test, 'nbd/fio', { tools: ['fio'] });
const VOLUME_BYTES = 64 * 1024 * 1024;

const fixture = nbdFixtureHooks(suite, { volumes: { vol: VOLUME_BYTES } });

async function fio(uri: string, name: string, extra: string[]): Promise<string> {
  return runOk('fio', [`--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, '--verify=crc32c', '--do_verify=1',
    '--verify_fatal=1', '--verify_state_save=0', '--randrepeat=0', '--output-format=terse', ...extra], { cwd: fixture.dir });
}

suite.test('random writes of 4 KiB..1 MiB, verified, no snapshot', async () => {
  await fio(fixture.uri('vol'), 'plain', ['--rw=randwrite', '--bsrange=4k-1m', '--iodepth=32', `--size=${VOLUME_BYTES}`]);
});

suite.test('unaligned block sizes (not multiples of 4 KiB), verified', async () => {
  await fio(fixture.uri('vol'), 'odd', ['--rw=randwrite', '--bs=3584', '--iodepth=8', '--size=8m', '--offset=1m']);
});

suite.test('under a taken snapshot: two connections, random writes, verified', async () => {
  const id = await fixture.snapshot(['vol']);
  const half = VOLUME_BYTES / 2;
  await Promise.all([0, 1].map((job) => fio(fixture.uri('vol'), `cow${job}`, [
    '--rw=randwrite', '--bsrange=4k-256k', '--iodepth=16', `--offset=${job * half}`, `--size=${half}`])));
  const info = fixture.engine.snapshotInfo(id);
  assert.is(info.state, 'taken');
  assert.is(info.error_code, 0);
  assert.ok(info.chunks[0]!.stored + info.chunks[0]!.in_memory + info.chunks[0]!.queued > 0, 'copy-on-write happened');
  await fixture.engine.snapshotDestroy(id);
});

suite.test('on the image: random writes and reads, verified', async () => {
  const id = await fixture.snapshot(['vol']);
  await fio(fixture.uri(`vol@${id}`), 'image', ['--rw=randrw', '--bsrange=512-128k', '--iodepth=16', '--size=32m']);
  await fixture.engine.snapshotDestroy(id);
});

test.run();

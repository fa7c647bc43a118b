// Goal: the whole chain from the outside: a spawned daemon, a volume
// attached with `ublksnap attach --nbd`, a snapshot with a small diff-storage
// limit, writes from a real NBD client (nbdcopy) that overflow it, and the
// CLI reporting it: snapshot_watcher streams the events, snapshot_waitevent
// and snapshot_info show corrupted / ENOSPC, and the volume holds exactly
// what the client wrote (no volume write failed).
// Method: nbdcopy copies a seeded random file onto the volume's export
// (nbd+unix URI printed by attach --nbd); the image export is then read with
// nbdcopy and must fail; the volume export read back must equal the file.

import { readFileSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HAS_NBD, disposeDaemon, hardTimeout, keyValues, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';
import { randomBytes, seededRandom } from '../lib/engine-fixture';
import { gate } from '../lib/system';
import { testSeed } from '../lib/workers';

const MiB = 1 << 20;
const ENOSPC = 28;
const VOLUME_BYTES = 16 * MiB;
/** nbdcopy of 16 MiB over a Unix socket takes well under this. */
const NBDCOPY_TIMEOUT_MS = 60_000;

hardTimeout(180_000, 'cli/events-nbd');

const suite = gate(test, 'cli/events-nbd', { tools: ['nbdcopy'] });
let daemon: TestDaemon;

function nbdcopy(source: string, target: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('nbdcopy', [source, target], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), NBDCOPY_TIMEOUT_MS);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stderr }); });
  });
}

suite.before(async () => {
  daemon = await startDaemon('cli-events-nbd');
  sparseFile(daemon.file('v.img'), VOLUME_BYTES);
});

suite.after(async () => {
  await disposeDaemon(daemon);
});

suite.test('NBD writes overflow the diff storage; the CLI sees every event; the volume is intact', async () => {
  if (!HAS_NBD) {
    console.log('  (no NBD frontend built in: nothing to test)');
    return;
  }
  const attached = keyValues(await daemon.ok(['attach', '-d', 'v.img', '--name', 'v', '--nbd']));
  assert.is(attached.nbd, `nbd+unix:///v?socket=${daemon.nbd_socket}`);
  const id = (await daemon.ok(['snapshot_create', '-d', 'v', '-f', daemon.file('diff.bin'), '-l', '2M'])).trim();
  await daemon.ok(['snapshot_take', '-i', id]);
  const image_uri = (await daemon.ok(['snapshot_info', '-d', 'v', '-f', 'nbd'])).trim();
  assert.match(image_uri, new RegExp(`^nbd\\+unix:///v%40${id}\\?socket=`));
  const watcher = daemon.cli(['snapshot_watcher', '-i', id]);
  await new Promise((resolve) => setTimeout(resolve, 500));

  const data = randomBytes(seededRandom(testSeed('volume data')), VOLUME_BYTES);
  writeFileSync(daemon.file('data.bin'), data);
  const write = await nbdcopy(daemon.file('data.bin'), attached.nbd as string);
  assert.is(write.code, 0, `every volume write succeeds through the overflow: ${write.stderr}`);

  // The watcher saw the overflow as it happened.
  for (let round = 0; round < 50; round += 1) {
    const info = keyValues(await daemon.ok(['snapshot_info', '-d', 'v']));
    if (info.error_code === String(ENOSPC)) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.is((await daemon.ok(['snapshot_info', '-d', 'v', '-f', 'error_code'])).trim(), String(ENOSPC));
  assert.match(await daemon.ok(['status']), new RegExp(`^snapshot=${id} state=corrupted error_code=${ENOSPC} `, 'm'));

  // The image is broken: a client reading it gets errors, not stale data.
  const image_read = await nbdcopy(image_uri, daemon.file('image.bin'));
  assert.is.not(image_read.code, 0, 'reading a corrupted image fails');

  // The volume holds exactly what was written.
  const back = await nbdcopy(attached.nbd as string, daemon.file('back.bin'));
  assert.is(back.code, 0, back.stderr);
  assert.ok(readFileSync(daemon.file('back.bin')).equals(data), 'the volume is exactly what the client wrote');

  await daemon.ok(['snapshot_destroy', '-i', id]);
  const watched = await watcher;
  assert.is(watched.code, 0, watched.stderr);
  const lines = watched.stdout.trim().split('\n');
  const codes = lines.map((line) => /event=(\w+)/.exec(line)?.[1]);
  console.log(`  watcher: ${codes.join(', ')}`);
  assert.ok(codes.includes('no_space'), 'no_space streamed');
  assert.ok(codes.includes('corrupted'), 'corrupted streamed');
  // Upstream's watcher ends at corruption, before the destroy.
  assert.is(codes.at(-1), 'corrupted');
  assert.match(lines.find((line) => line.includes('event=corrupted')) as string, new RegExp(`volume=v error_code=${ENOSPC}`));
});

test.run();

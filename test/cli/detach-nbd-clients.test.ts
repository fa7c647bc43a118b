// Goal: `detach` of a volume with NBD clients connected is refused with
// EBUSY naming each connection (its id and where it came from), as a
// mounted ublk device is; after the clients leave it goes through; with
// --force it goes through at once and the client's next request fails
// with EIO instead of reaching a volume that is gone.
// Method: a real daemon, `attach --nbd`, a raw NBD client (test/lib) bound
// to the export over the daemon's Unix socket; the real CLI for detach.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HAS_NBD, disposeDaemon, hardTimeout, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';
import { RawNbd } from '../lib/nbd-raw-client';

const MiB = 1 << 20;
const NBD_CMD_READ = 0;
const NBD_EIO = 5;
let daemon: TestDaemon;

hardTimeout(120_000, 'cli/detach-nbd-clients');

test.before(async () => {
  daemon = await startDaemon('cli-detach-nbd');
  sparseFile(daemon.file('vol.img'), 4 * MiB);
});

test.after(async () => {
  await disposeDaemon(daemon);
});

async function boundClient(): Promise<RawNbd> {
  const client = await RawNbd.connect(daemon.nbd_socket);
  await client.go('vol', { structured: false });
  return client;
}

test('detach is refused while a client is connected, names it, and works once it left', async () => {
  if (!HAS_NBD) return console.log('  (no NBD frontend built in: nothing to test)');
  await daemon.ok(['attach', '-d', 'vol.img', '--name', 'vol', '--nbd']);
  const client = await boundClient();
  const refused = await daemon.cli(['detach', '-d', 'vol']);
  assert.is(refused.code, 1, 'refused');
  assert.match(refused.stderr,
    /^ublksnap: detach: volume vol has clients connected \(NBD connection \d+ from the Unix socket .*nbd\.sock\): disconnect them first, or use --force .*\(EBUSY\)\n$/);
  assert.is(JSON.parse(await daemon.ok(['status', '-j'])).volumes.length, 1, 'still attached');
  await client.disc();
  await client.closed;
  // The server notices the disconnect asynchronously: allow it a moment.
  let result = await daemon.cli(['detach', '-d', 'vol']);
  for (let attempt = 0; result.code !== 0 && attempt < 20; attempt += 1) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    result = await daemon.cli(['detach', '-d', 'vol']);
  }
  assert.is(result.code, 0, result.stderr);
});

test('detach --force goes through; the client then gets EIO', async () => {
  if (!HAS_NBD) return;
  await daemon.ok(['attach', '-d', 'vol.img', '--name', 'vol', '--nbd']);
  const client = await boundClient();
  await daemon.ok(['detach', '-d', 'vol', '--force']);
  await client.request(NBD_CMD_READ, 0, 1n, 0, 4096);
  const reply = await client.reply();
  assert.is(reply.kind, 'simple');
  assert.is((reply as { error: number }).error, NBD_EIO, 'a detached volume answers EIO');
  client.destroy();
});

test.run();

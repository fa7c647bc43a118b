// Goal: the harness can start, use, measure and stop one server of each
// kind — nbdkit's file plugin, a plain qemu-storage-daemon export, QEMU
// fleecing and our own server process — and the fleecing image of each
// snapshot kind keeps the data of take while the volume is overwritten.
// Method: an 8 MiB image of random data; for each server: the export's
// nbdcopy checksum equals the file's; a fio sequential write (parsed by the
// harness's parser); for the snapshot kinds, the image checksum after the
// write equals the one before; stop reports CPU seconds and peak RSS.
// Missing tools are installed by the harness's own set-up step when we are
// root (as `npm run bench` does), else the suite skips loudly.

import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { QSD_IMAGE_EXPORT, QSD_VOLUME_EXPORT, nbdkitArgs, qsdFleecingArgs, qsdPlainArgs, unixUri } from '../../bench/nbd/commands';
import { runFio } from '../../bench/nbd/fio';
import { fileChecksum, fillRandom } from '../../bench/nbd/image';
import { exportChecksum, readExport } from '../../bench/nbd/nbdcopy';
import { ServerProcess, UblksnapServer, type ServerUsage } from '../../bench/nbd/servers';
import { seqWriteJob } from '../../bench/nbd/systems';
import { TOOLS, ensureTools, findExecutable } from '../../bench/nbd/tools';
import { gate, isRoot } from '../lib/system';

const IMAGE_BYTES = 8 * 1024 * 1024;
const SHM_DIR = '/dev/shm';

if (isRoot() && TOOLS.some((tool) => findExecutable(tool.command) === undefined)) ensureTools((line) => console.log(line));

const servers = suite('one server of each kind');
const guard = gate(servers, 'bench servers', { tools: TOOLS.map((tool) => tool.command), paths: [SHM_DIR] });
let dir = '';
let image = '';

guard.before(() => {
  dir = mkdtempSync(path.join(SHM_DIR, 'ublksnap-bench-test-'));
  image = path.join(dir, 'image.raw');
  fillRandom(image, IMAGE_BYTES);
});

guard.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function assertUsage(usage: ServerUsage): void {
  assert.ok(usage.cpu_seconds >= 0);
  assert.ok(usage.peak_rss_bytes > 1024 * 1024, `peak RSS ${usage.peak_rss_bytes}`);
  assert.ok(usage.threads.length >= 1);
}

async function plainServerWorks(server: ServerProcess, uri: string): Promise<void> {
  try {
    assert.is((await exportChecksum(uri)).checksum, fileChecksum(image));
    const read = await readExport(uri, IMAGE_BYTES);
    assert.ok(read.bytes_per_second > 0);
    const write = await runFio(uri, seqWriteJob(IMAGE_BYTES), path.join(dir, 'fio.json'));
    assert.is(write.io_bytes, IMAGE_BYTES);
    assert.is((await exportChecksum(uri)).checksum, fileChecksum(image));
  } catch (error) {
    await server.kill();
    throw error;
  }
  assertUsage(await server.stop());
}

guard.test('nbdkit file plugin', async () => {
  const socket = path.join(dir, 'nbdkit.sock');
  const server = await ServerProcess.start('nbdkit', 'nbdkit', nbdkitArgs(image, socket), socket);
  await plainServerWorks(server, unixUri(socket, ''));
});

guard.test('qemu-storage-daemon plain export', async () => {
  const socket = path.join(dir, 'qsd.sock');
  const server = await ServerProcess.start('qsd', 'qemu-storage-daemon', qsdPlainArgs(image, socket), socket);
  await plainServerWorks(server, unixUri(socket, QSD_VOLUME_EXPORT));
});

guard.test('qemu-storage-daemon fleecing: the image keeps the data of take', async () => {
  const socket = path.join(dir, 'fleece.sock');
  const target = path.join(dir, 'target.raw');
  writeFileSync(target, '');
  truncateSync(target, IMAGE_BYTES);
  const before = fileChecksum(image);
  const server = await ServerProcess.start('qsd-fleece', 'qemu-storage-daemon', qsdFleecingArgs(image, target, socket), socket);
  try {
    await runFio(unixUri(socket, QSD_VOLUME_EXPORT), seqWriteJob(IMAGE_BYTES), path.join(dir, 'fio.json'));
    assert.is.not(fileChecksum(image), before, 'the volume was overwritten');
    assert.is((await exportChecksum(unixUri(socket, QSD_IMAGE_EXPORT))).checksum, before);
  } catch (error) {
    await server.kill();
    throw error;
  }
  assertUsage(await server.stop());
});

guard.test('ublksnap server: volume export, take, image keeps the data of take, destroy, quit', async () => {
  const socket = path.join(dir, 'ublksnap.sock');
  const server = await UblksnapServer.launch('ublksnap', { socket_path: socket, storage_dir: dir, volumes: [{ name: 'vol', file: image }] });
  try {
    assert.is((await exportChecksum(unixUri(socket, 'vol'))).checksum, fileChecksum(image));
    const before = fileChecksum(image);
    const taken = await server.take();
    assert.is(taken.chunk_bytes, 256 * 1024);
    assert.ok(taken.take_ms >= 0);
    await runFio(unixUri(socket, 'vol'), seqWriteJob(IMAGE_BYTES), path.join(dir, 'fio.json'));
    assert.is.not(fileChecksum(image), before, 'the volume was overwritten');
    assert.is((await exportChecksum(unixUri(socket, taken.images.vol!))).checksum, before);
    assert.ok((await server.destroy(taken.id)) >= 0);
    rmSync(taken.storage, { force: true });
    const refused = await server.command('destroy nonsense').then(() => null, (error: Error) => error);
    assert.match(refused?.message ?? 'accepted', /not a UUID/);
    assert.ok((await server.gcCount()) >= 0, 'a bad command left the server answering');
  } catch (error) {
    await server.kill();
    throw error;
  }
  assertUsage(await server.stop());
});

servers.run();

// Goal: the clients backup servers use speak TLS to our NBD server as they
// are: nbdinfo, nbdcopy (libnbd, GnuTLS) and qemu-img (qemu, GnuTLS), each
// with x509 (a server certificate, client certificates verified against a
// CA) and with PSK (a `user:hexkey` file), over TCP with TLS required; the
// URI the server prints works as is; status shows each connection's TLS
// and identity; reloading credentials keeps a live session.
// Method: certificates made with openssl and a PSK file in the test; a
// volume filled with seeded random bytes; every copy compared byte for byte
// with the volume file; qemu-io held open (interactive, stdin) to look at
// the server's status while it is connected.

import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startNbdFixture, type NbdFixture } from '../lib/nbd-fixture';
import { run, runOk } from '../lib/nbd-tools';
import { gate, tempDir } from '../lib/system';
import { makeTlsMaterial, type TlsMaterial } from '../lib/tls-material';
import { randomBytes, seededRandom } from '../lib/random';

const suite = gate(test, 'nbd/tls-clients', { tools: ['openssl', 'nbdinfo', 'nbdcopy', 'qemu-img', 'qemu-io'] });
const VOLUME_BYTES = 8 * 1024 * 1024;
const SEED = 14;
/** qemu-io held open reads 64 KiB and quits well within this. */
const QEMU_IO_TIMEOUT_MS = 30_000;

let fixture: NbdFixture;
let material: TlsMaterial;
let volume_file: string;
let port: number;
let backup_dir: string;
let psk: { file: string; keys: Map<string, string> };

suite.before(async () => {
  const root = tempDir('tls-clients').path;
  material = await makeTlsMaterial(root);
  backup_dir = await material.clientDir('backup');
  psk = material.pskFile('server.psk', ['alice', 'backup']);
  fixture = await startNbdFixture({
    server: {
      listen: { host: '127.0.0.1', port: 0 },
      security: {
        tls: { mode: 'require', certificates_dir: material.server_dir, psk_file: psk.file, verify_peer: true },
        access: [],
        insecure: false,
      },
    },
  });
  volume_file = fixture.file('vol.img', VOLUME_BYTES);
  writeFileSync(volume_file, randomBytes(seededRandom(SEED), VOLUME_BYTES));
  await fixture.engine.attach(volume_file, { name: 'vol' });
  port = fixture.server.status().tcp!.port;
});

suite.after(async () => {
  await fixture?.close();
});

function x509Uri(client_dir: string, export_name = 'vol'): string {
  return `nbds://127.0.0.1:${port}/${export_name}?tls-certificates=${client_dir}`;
}

function pskUri(user: string, file: string, export_name = 'vol'): string {
  return `nbds://${user}@127.0.0.1:${port}/${export_name}?tls-psk-file=${file}`;
}

async function copiedEqualsVolume(uri: string, name: string): Promise<void> {
  const out = path.join(fixture.dir, `${name}.copy`);
  await runOk('nbdcopy', [uri, out]);
  assert.ok(readFileSync(out).equals(readFileSync(volume_file)), `${name}: the copy equals the volume`);
}

function qemuObject(kind: 'x509' | 'psk', dir: string, user?: string): string {
  return kind === 'x509'
    ? `tls-creds-x509,id=tls0,dir=${dir},endpoint=client`
    : `tls-creds-psk,id=tls0,dir=${dir},endpoint=client,username=${user}`;
}

function qemuImage(export_name = 'vol'): string {
  return `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=${export_name},tls-creds=tls0`;
}

suite.test('nbdinfo over x509 shows the export, with TLS in its output', async () => {
  const info = JSON.parse(await runOk('nbdinfo', ['--json', x509Uri(backup_dir)])) as { TLS: boolean; exports: { 'export-size': number }[] };
  assert.is(info.exports[0]!['export-size'], VOLUME_BYTES);
  assert.is(info.TLS, true);
});

suite.test('nbdcopy over x509 copies the volume byte for byte', async () => {
  await copiedEqualsVolume(x509Uri(backup_dir), 'x509');
});

suite.test('nbdinfo and nbdcopy over PSK', async () => {
  const alice_file = path.join(fixture.dir, 'alice-client.psk');
  writeFileSync(alice_file, `alice:${psk.keys.get('alice')}\n`, { mode: 0o600 });
  const info = JSON.parse(await runOk('nbdinfo', ['--json', pskUri('alice', alice_file)])) as { TLS: boolean; exports: { 'export-size': number }[] };
  assert.is(info.exports[0]!['export-size'], VOLUME_BYTES);
  assert.is(info.TLS, true);
  await copiedEqualsVolume(pskUri('alice', alice_file), 'psk');
});

suite.test('qemu-img reads the image over x509 and over PSK', async () => {
  for (const kind of ['x509', 'psk'] as const) {
    const dir = kind === 'x509' ? backup_dir : material.pskClientDir('qemu-psk', 'backup', psk.keys.get('backup')!);
    const out = path.join(fixture.dir, `qemu-${kind}.raw`);
    await runOk('qemu-img', ['convert', '--object', qemuObject(kind, dir, 'backup'), '--image-opts', qemuImage(), '-O', 'raw', out]);
    assert.ok(readFileSync(out).equals(readFileSync(volume_file)), `qemu-img ${kind}: the copy equals the volume`);
  }
});

suite.test('the URI the server prints works as it is (PSK file of the server, its first user)', async () => {
  const uri = fixture.server.uri('vol');
  assert.match(uri, new RegExp(`^nbds://alice@127\\.0\\.0\\.1:${port}/vol\\?tls-psk-file=`));
  const info = JSON.parse(await runOk('nbdinfo', ['--json', uri])) as { exports: { 'export-size': number }[] };
  assert.is(info.exports[0]!['export-size'], VOLUME_BYTES);
});

suite.test('status shows a live connection as TLS with its identity; a reload keeps it serving', async () => {
  const child = spawn('qemu-io', ['--object', qemuObject('x509', backup_dir), '--image-opts', qemuImage()], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  try {
    const deadline = Date.now() + 30_000;
    let clients = fixture.server.status().clients;
    while (!clients.some((client) => client.export === 'vol') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      clients = fixture.server.status().clients;
    }
    const bound = clients.find((client) => client.export === 'vol');
    assert.ok(bound, `qemu-io is bound (${output})`);
    assert.is(bound.tls, true);
    assert.is(bound.identity, 'backup');
    fixture.server.reloadTls();
    // qemu-io leaves at the end of its input (a 'quit' alone does not end it on a pipe).
    child.stdin.end('read 0 64k\n');
    const exited = new Promise<number | null>((resolve) => child.once('exit', (exit_code) => resolve(exit_code)));
    const code = await Promise.race([exited, new Promise<string>((resolve) => setTimeout(() => resolve('timeout'), QEMU_IO_TIMEOUT_MS))]);
    assert.is(code, 0, output);
    assert.match(output, /read 65536\/65536 bytes/, 'the session read after the reload');
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

suite.test('a plain client is told TLS is required and sees no export', async () => {
  const listed = await run('nbdinfo', ['--list', `nbd://127.0.0.1:${port}`]);
  assert.is.not(listed.code, 0);
  // libnbd reports REP_ERR_TLS_REQD to LIST as ENOTSUP; tls-refusals checks the reply type itself.
  assert.match(listed.stderr, /TLS|not supported/, listed.stderr + listed.stdout);
  assert.not.match(listed.stdout, /vol/);
});

test.run();

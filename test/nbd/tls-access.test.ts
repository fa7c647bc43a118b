// Goal: authorisation per export. An identity granted an export read-only
// is served it with READ_ONLY set and gets EPERM when it writes anyway; an
// identity granted nothing of an export does not see it in LIST and is
// refused at GO; a grant read-write lets a client write; a refusal is
// logged once per client, export and reason however often it retries;
// rules name PSK users and certificate CNs alike.
// Method: rules {backup: vol and every image, read-only}, {alice: vol,
// read-write}, {cn-reader (a certificate): secret, read-only}; nbdinfo
// --list and qemu-io for what real clients see; the byte-level client over
// node's tls sends the WRITE a well-behaved client would not.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pino from 'pino';
import { Writable } from 'node:stream';
import path from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { FLAG_READ_ONLY, NBD_EPERM } from '../../src/frontends/nbd/protocol';
import { startNbdFixture, type NbdFixture } from '../lib/nbd-fixture';
import { run, runOk } from '../lib/nbd-tools';
import { gate, tempDir } from '../lib/system';
import { makeTlsMaterial } from '../lib/tls-material';
import { certificateSession, pskSession } from '../lib/tls-clients';

const suite = gate(test, 'nbd/tls-access', { tools: ['openssl', 'nbdinfo', 'qemu-io'] });
const VOLUME_BYTES = 1024 * 1024;
const CMD_WRITE = 1;

let fixture: NbdFixture;
let port: number;
let keys: Map<string, string>;
let root: string;
let reader_dir: string;
let image: string;
const log_lines: { msg: string; identity?: string; export?: string }[] = [];

suite.before(async () => {
  root = tempDir('tls-access').path;
  const material = await makeTlsMaterial(root);
  reader_dir = await material.clientDir('cn-reader');
  const psk = material.pskFile('server.psk', ['alice', 'backup', 'mallory']);
  keys = psk.keys;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) log_lines.push(JSON.parse(line));
      done();
    },
  });
  fixture = await startNbdFixture({
    server: {
      listen: { host: '127.0.0.1', port: 0 },
      logger: pino({ level: 'warn' }, sink),
      security: {
        tls: { mode: 'require', certificates_dir: material.server_dir, psk_file: psk.file, verify_peer: true },
        access: [
          { identity: 'backup', exports: ['vol', 'vol@*'], read_only: true },
          { identity: 'alice', exports: ['vol'], read_only: false },
          { identity: 'cn-reader', exports: ['secret'], read_only: true },
        ],
        insecure: false,
      },
    },
  });
  await fixture.attach('vol', VOLUME_BYTES);
  await fixture.attach('secret', VOLUME_BYTES);
  image = `vol@${await fixture.snapshot(['vol'])}`;
  port = fixture.server.status().tcp!.port;
});

suite.after(async () => {
  await fixture?.close();
});

function clientPskFile(user: string): string {
  const file = path.join(root, `${user}.psk`);
  writeFileSync(file, `${user}:${keys.get(user)}\n`, { mode: 0o600 });
  return file;
}

async function listed(user: string): Promise<string[]> {
  const out = await runOk('nbdinfo', ['--list', '--json', `nbds://${user}@127.0.0.1:${port}?tls-psk-file=${clientPskFile(user)}`]);
  return (JSON.parse(out) as { exports: { 'export-name': string }[] }).exports.map((entry) => entry['export-name']).sort();
}

suite.test('LIST shows each identity only what it may open', async () => {
  assert.equal(await listed('backup'), [image, 'vol'].sort());
  assert.equal(await listed('alice'), ['vol']);
  const mallory = await run('nbdinfo', ['--list', '--json', `nbds://mallory@127.0.0.1:${port}?tls-psk-file=${clientPskFile('mallory')}`]);
  assert.not.match(mallory.stdout, /vol|secret/, 'mallory sees no export');
});

suite.test('read-only grant: READ_ONLY set, and a WRITE sent anyway gets EPERM', async () => {
  const client = await pskSession(port, 'backup', keys.get('backup')!);
  const opened = await client.go('vol', { handshake_done: true });
  assert.ok((opened.flags & FLAG_READ_ONLY) !== 0, 'READ_ONLY is set');
  await client.request(CMD_WRITE, 0, 7n, 0, 4096, Buffer.alloc(4096, 1));
  const reply = await client.reply();
  // Structured replies: an error chunk whose payload starts with the error number.
  const error = reply.kind === 'simple' ? reply.error : reply.payload.readUInt32BE(0);
  assert.is(error, NBD_EPERM, 'WRITE: EPERM');
  client.destroy();
});

suite.test('read-write grant: alice writes vol with qemu-io; the certificate CN rule opens secret read-only', async () => {
  const dir = path.join(root, 'qemu-alice');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'keys.psk'), `alice:${keys.get('alice')}\n`, { mode: 0o600 });
  await runOk('qemu-io', ['--object', `tls-creds-psk,id=tls0,dir=${dir},endpoint=client,username=alice`, '--image-opts',
    `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=vol,tls-creds=tls0`, '-c', 'write -P 0x5a 0 64k']);
  const reader = await certificateSession(port, reader_dir);
  const opened = await reader.go('secret', { handshake_done: true });
  assert.ok((opened.flags & FLAG_READ_ONLY) !== 0, 'secret is read-only for cn-reader');
  reader.destroy();
});

suite.test('a refused export: GO fails; the refusal is logged once however often the client retries', async () => {
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const client = await pskSession(port, 'mallory', keys.get('mallory')!);
    await client.go('vol', { handshake_done: true }).then(
      () => { throw new Error('mallory must not open vol'); },
      (error: Error) => assert.match(error.message, /GO failed: 0x80000002/, 'REP_ERR_POLICY'),
    );
    client.destroy();
  }
  const refusals = log_lines.filter((line) => line.msg.startsWith('nbd export refused') && line.identity === 'mallory' && line.export === 'vol');
  assert.is(refusals.length, 1, JSON.stringify(refusals));
});

test.run();

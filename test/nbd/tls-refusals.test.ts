// Goal: every way a TLS client can be wrong is refused cleanly, the server
// serves the next client, and nothing leaks: a wrong PSK key, an unknown
// PSK user, an expired client certificate, one from a CA the server does
// not trust, none at all; a client that skips STARTTLS (LIST and GO get
// REP_ERR_TLS_REQD, EXPORT_NAME ends the session); STARTTLS with data or a
// second time; garbage inside the TLS session; a client that stops in the
// middle of the TLS handshake (dropped at the handshake timeout).
// Method: real nbdinfo for the credential cases, node's tls module through
// the byte-level client for the protocol cases; after each case a good
// nbdinfo reads the export; at the end no connection is left, the process
// holds no more descriptors than after the first good client, and the heap
// did not grow past a bound over many refused handshakes.

import { randomBytes } from 'node:crypto';
import { mkdirSync, copyFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REP_ERR_INVALID, REP_ERR_TLS_REQD } from '../../src/frontends/nbd/protocol';
import { RawNbd, infoData } from '../lib/nbd-raw-client';
import { startNbdFixture, type NbdFixture } from '../lib/nbd-fixture';
import { run, runOk } from '../lib/nbd-tools';
import { gate, tempDir } from '../lib/system';
import { makeTlsMaterial, type TlsMaterial } from '../lib/tls-material';
import { openDescriptorCount, pskSession } from '../lib/tls-clients';

const suite = gate(test, 'nbd/tls-refusals', { tools: ['openssl', 'nbdinfo'] });
const VOLUME_BYTES = 1024 * 1024;
/** Short, so the stalled-handshake case ends quickly. */
const HANDSHAKE_TIMEOUT_MS = 2_000;
/** Refused handshakes in the memory check, and the heap growth they may cause at most. */
const REFUSED_ROUNDS = 40;
const HEAP_GROWTH_BYTES_MAX = 8 * 1024 * 1024;
const OPT_EXPORT_NAME = 1;
const OPT_LIST = 3;
const OPT_STARTTLS = 5;
const OPT_GO = 7;

let fixture: NbdFixture;
let material: TlsMaterial;
let port: number;
let psk: { file: string; keys: Map<string, string> };
let good_dir: string;
let descriptors_baseline = 0;
let root: string;

suite.before(async () => {
  root = tempDir('tls-refusals').path;
  material = await makeTlsMaterial(root);
  good_dir = await material.clientDir('backup');
  psk = material.pskFile('server.psk', ['alice']);
  fixture = await startNbdFixture({
    server: {
      listen: { host: '127.0.0.1', port: 0 },
      handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS,
      security: {
        tls: { mode: 'require', certificates_dir: material.server_dir, psk_file: psk.file, verify_peer: true },
        access: [],
        insecure: false,
      },
    },
  });
  await fixture.attach('vol', VOLUME_BYTES);
  port = fixture.server.status().tcp!.port;
  await goodClientWorks();
  await idle();
  descriptors_baseline = openDescriptorCount();
});

suite.after(async () => {
  await fixture?.close();
});

async function goodClientWorks(): Promise<void> {
  const out = await runOk('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/vol?tls-certificates=${good_dir}`]);
  assert.is(Number(out.trim()), VOLUME_BYTES, 'the next good client is served');
}

/** Waits until the server holds no connection (bounded). */
async function idle(): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (fixture.server.status().connections > 0) {
    if (Date.now() > deadline) throw new Error(`connections left: ${JSON.stringify(fixture.server.status().clients)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function pskClientFile(name: string, line: string): string {
  const file = path.join(root, name);
  writeFileSync(file, `${line}\n`, { mode: 0o600 });
  return file;
}

async function refusedByNbdinfo(uri: string, why: string): Promise<void> {
  const result = await run('nbdinfo', ['--size', uri]);
  assert.is.not(result.code, 0, `${why}: nbdinfo must fail (${result.stdout})`);
  await goodClientWorks();
}

suite.test('a wrong PSK key and an unknown PSK user are refused', async () => {
  const wrong = pskClientFile('wrong.psk', `alice:${randomBytes(32).toString('hex')}`);
  await refusedByNbdinfo(`nbds://alice@127.0.0.1:${port}/vol?tls-psk-file=${wrong}`, 'wrong key');
  const stranger = pskClientFile('stranger.psk', `mallory:${psk.keys.get('alice')}`);
  await refusedByNbdinfo(`nbds://mallory@127.0.0.1:${port}/vol?tls-psk-file=${stranger}`, 'unknown user');
});

suite.test('expired, untrusted and missing client certificates are refused', async () => {
  await refusedByNbdinfo(`nbds://127.0.0.1:${port}/vol?tls-certificates=${await material.expiredClientDir()}`, 'expired');
  await refusedByNbdinfo(`nbds://127.0.0.1:${port}/vol?tls-certificates=${await material.untrustedClientDir()}`, 'untrusted');
  const no_cert = path.join(root, 'client-none');
  mkdirSync(no_cert, { recursive: true });
  copyFileSync(path.join(good_dir, 'ca-cert.pem'), path.join(no_cert, 'ca-cert.pem'));
  await refusedByNbdinfo(`nbds://127.0.0.1:${port}/vol?tls-certificates=${no_cert}`, 'no certificate');
});

suite.test('a client that skips STARTTLS: LIST and GO get TLS_REQD, EXPORT_NAME ends the session', async () => {
  const client = await RawNbd.connect({ host: '127.0.0.1', port });
  await client.handshake();
  const [listed] = await client.option(OPT_LIST);
  assert.is(listed!.type, REP_ERR_TLS_REQD, 'LIST: TLS required');
  const [went] = await client.option(OPT_GO, infoData('vol', []));
  assert.is(went!.type, REP_ERR_TLS_REQD, 'GO: TLS required');
  const [with_data] = await client.option(OPT_STARTTLS, Buffer.from('x'));
  assert.is(with_data!.type, REP_ERR_INVALID, 'STARTTLS carries no data');
  await client.sendOption(OPT_EXPORT_NAME, Buffer.from('vol'));
  assert.ok(await client.waitClosed(), 'EXPORT_NAME without TLS: the server hangs up');
  await goodClientWorks();
});

suite.test('inside TLS: a second STARTTLS is INVALID, garbage ends the session', async () => {
  const client = await pskSession(port, 'alice', psk.keys.get('alice')!);
  const [again] = await client.option(OPT_STARTTLS);
  assert.is(again!.type, REP_ERR_INVALID, 'TLS is already on');
  await client.write(randomBytes(64));
  assert.ok(await client.waitClosed(), 'garbage inside TLS: the server hangs up');
  await goodClientWorks();
});

suite.test('a client that stops in the middle of the TLS handshake is dropped at the handshake timeout', async () => {
  const client = await RawNbd.connect({ host: '127.0.0.1', port });
  await client.handshake();
  await client.sendOption(OPT_STARTTLS);
  await client.optionReply();
  // Half a ClientHello's record header, then silence.
  await client.write(Buffer.from([0x16, 0x03, 0x01]));
  const started = Date.now();
  assert.ok(await client.waitClosed(HANDSHAKE_TIMEOUT_MS * 5), 'dropped');
  assert.ok(Date.now() - started >= HANDSHAKE_TIMEOUT_MS / 2, 'by the handshake timeout, not at once');
  await goodClientWorks();
});

suite.test('no connection, descriptor or heap left behind by refusals', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const wrong = pskClientFile('wrong-many.psk', `alice:${randomBytes(32).toString('hex')}`);
  gc();
  const heap_before = process.memoryUsage().heapUsed;
  for (let round = 0; round < REFUSED_ROUNDS; round += 1) {
    const client = await RawNbd.connect({ host: '127.0.0.1', port });
    await client.handshake();
    await client.startTls({
      pskCallback: () => ({ identity: 'alice', psk: randomBytes(32) }),
      checkServerIdentity: () => undefined,
      ciphers: 'TLS_AES_128_GCM_SHA256',
    }).then(() => { throw new Error('a wrong key must not complete the handshake'); }, () => undefined);
    client.destroy();
  }
  await refusedByNbdinfo(`nbds://alice@127.0.0.1:${port}/vol?tls-psk-file=${wrong}`, 'wrong key');
  await idle();
  gc();
  const heap_growth = process.memoryUsage().heapUsed - heap_before;
  assert.ok(heap_growth < HEAP_GROWTH_BYTES_MAX, `heap grew ${heap_growth} bytes over ${REFUSED_ROUNDS} refused handshakes`);
  assert.is(fixture.server.status().clients.length, 0);
  assert.ok(openDescriptorCount() <= descriptors_baseline, `descriptors: ${openDescriptorCount()} now, ${descriptors_baseline} at the start`);
});

test.run();

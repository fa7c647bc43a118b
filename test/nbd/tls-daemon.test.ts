// Goal: the daemon side of NBD TLS. A TCP listener on an address other
// machines reach refuses to start without TLS required, and starts with a
// warning under --nbd-insecure; a world-readable key file stops the start
// naming the file and its mode; `attach --nbd` prints an nbds:// URI that
// nbdinfo uses as it is; `status` shows a connection's TLS and identity;
// SIGHUP reloads the PSK file (old key refused, new key served) without
// ending the daemon or a connected client; flags, config keys and the
// environment reach the same settings.
// Method: the real CLI and daemon; the first non-loopback IPv4 address of
// this machine (the validation itself when there is none); qemu-io held
// open over TLS while status and the reload run.

import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { resolveConfig, parseDaemonFlags } from '../../src/daemon/config';
import { ServerSecurity } from '../../src/frontends/nbd/security';
import { TLS_OFF } from '../../src/frontends/nbd/tls-credentials';
import { CLI_PATH, disposeDaemon, hardTimeout, runNode, scratchDir, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';
import { run, runOk } from '../lib/nbd-tools';
import { gate } from '../lib/system';

const suite = gate(test, 'nbd/tls-daemon', { tools: ['nbdinfo', 'qemu-io'] });
hardTimeout(240_000, 'nbd/tls-daemon');
const VOLUME_BYTES = 4 * 1024 * 1024;
const QEMU_IO_TIMEOUT_MS = 30_000;

function nonLoopbackAddress(): string | null {
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const address of addresses ?? []) if (address.family === 'IPv4' && !address.internal) return address.address;
  }
  return null;
}

function writePsk(file: string, user: string): string {
  const key = randomBytes(32).toString('hex');
  writeFileSync(file, `${user}:${key}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return key;
}

const daemons: TestDaemon[] = [];
suite.after(async () => {
  for (const daemon of daemons) await disposeDaemon(daemon);
});

suite.test('a non-loopback listener without TLS required refuses to start; --nbd-insecure starts it with a warning', async () => {
  const address = nonLoopbackAddress();
  if (address === null) {
    // No such address here: the rule itself, as the daemon applies it.
    const security = new ServerSecurity({ tls: TLS_OFF, access: [], insecure: false }, console as never);
    assert.throws(() => security.checkListener('192.0.2.1'), /needs --nbd-tls require/);
    security.checkListener('127.0.0.1');
    return;
  }
  const dir = scratchDir('tls-insecure');
  const refused = await runNode(CLI_PATH, ['daemon', '--socket', path.join(dir, 'ctl.sock'), '--state-dir', path.join(dir, 'state'),
    '--nbd-socket', path.join(dir, 'nbd.sock'), '--nbd-listen', `${address}:0`], { timeout_ms: 30_000 });
  assert.is(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /reachable from other machines.*--nbd-tls require.*--nbd-insecure/);
  const daemon = await startDaemon('tls-insecure-on', { args: ['--nbd-listen', `${address}:0`, '--nbd-insecure'] });
  daemons.push(daemon);
  assert.match(daemon.logs, /non-loopback address without TLS required \(--nbd-insecure\)/);
});

suite.test('a PSK file others can read stops the start, naming the file and its mode', async () => {
  const dir = scratchDir('tls-mode');
  const psk = path.join(dir, 'keys.psk');
  writePsk(psk, 'alice');
  chmodSync(psk, 0o644);
  const result = await runNode(CLI_PATH, ['daemon', '--socket', path.join(dir, 'ctl.sock'), '--state-dir', path.join(dir, 'state'),
    '--nbd-socket', path.join(dir, 'nbd.sock'), '--nbd-listen', '127.0.0.1:0', '--nbd-tls-psk-file', psk], { timeout_ms: 30_000 });
  assert.is(result.code, 1, result.stderr);
  assert.ok(result.stderr.includes(`${psk} has mode 0644`), result.stderr);
});

suite.test('attach --nbd prints an nbds:// URI that works as is; status shows TLS and identity; SIGHUP reloads the key', async () => {
  const dir = scratchDir('tls-daemon');
  const psk = path.join(dir, 'keys.psk');
  const first_key = writePsk(psk, 'backup');
  const daemon = await startDaemon('tls-daemon-run', { args: ['--nbd-listen', '127.0.0.1:0', '--nbd-tls-psk-file', psk] });
  daemons.push(daemon);
  const attached = await daemon.ok(['attach', '-d', sparseFile(daemon.file('vol.img'), VOLUME_BYTES), '--name', 'vol', '--nbd']);
  const uri = /^nbd=(.*)$/m.exec(attached)?.[1] ?? '';
  assert.match(uri, /^nbds:\/\/backup@127\.0\.0\.1:\d+\/vol\?tls-psk-file=/, attached);
  assert.is(Number((await runOk('nbdinfo', ['--size', uri])).trim()), VOLUME_BYTES);
  const port = Number(/:(\d+)\//.exec(uri)![1]);

  // A client held open over TLS through status and the reload.
  const qemu_dir = path.join(dir, 'qemu');
  mkdirSync(qemu_dir);
  writeFileSync(path.join(qemu_dir, 'keys.psk'), `backup:${first_key}\n`, { mode: 0o600 });
  const child = spawn('qemu-io', ['--object', `tls-creds-psk,id=tls0,dir=${qemu_dir},endpoint=client,username=backup`, '--image-opts',
    `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=vol,tls-creds=tls0`], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  try {
    let status = '';
    const deadline = Date.now() + QEMU_IO_TIMEOUT_MS;
    while (!/client=\d+ frontend=nbd .*tls=true identity=backup export=vol/.test(status) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      status = await daemon.ok(['status']);
    }
    assert.match(status, /client=\d+ frontend=nbd peer=127\.0\.0\.1:\d+ tls=true identity=backup export=vol read_only=false/, `${status}\n${output}`);

    const second_key = writePsk(psk, 'backup');
    process.kill(daemon.pid, 'SIGHUP');
    const reload_deadline = Date.now() + 10_000;
    while (!daemon.logs.includes('nbd TLS credentials reloaded') && Date.now() < reload_deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(daemon.running, 'SIGHUP does not stop the daemon');
    const old_file = path.join(dir, 'old.psk');
    writeFileSync(old_file, `backup:${first_key}\n`, { mode: 0o600 });
    const with_old = await run('nbdinfo', ['--size', `nbds://backup@127.0.0.1:${port}/vol?tls-psk-file=${old_file}`]);
    assert.is.not(with_old.code, 0, 'the old key is refused after the reload');
    void second_key;
    assert.is(Number((await runOk('nbdinfo', ['--size', uri])).trim()), VOLUME_BYTES, 'the new key (the URI names the server file) is served');

    child.stdin.end('read 0 64k\n');
    const code = await Promise.race([
      new Promise<number | null>((resolve) => child.once('exit', (exit_code) => resolve(exit_code))),
      new Promise<string>((resolve) => setTimeout(() => resolve('timeout'), QEMU_IO_TIMEOUT_MS)),
    ]);
    assert.is(code, 0, output);
    assert.match(output, /read 65536\/65536 bytes/, 'the client connected before the reload still reads');
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

suite.test('flags, config keys and environment reach the same TLS settings', () => {
  const from_flags = resolveConfig(parseDaemonFlags(['--nbd-tls-psk-file', '/k.psk', '--nbd-allow', 'backup=*@*,vm1:ro', '--nbd-allow', 'alice=*']), {}, '/');
  assert.equal(from_flags.nbd_security, {
    tls: { mode: 'require', certificates_dir: null, psk_file: '/k.psk', verify_peer: false },
    access: [{ identity: 'backup', exports: ['*@*', 'vm1'], read_only: true }, { identity: 'alice', exports: ['*'], read_only: false }],
    insecure: false,
  }, 'credentials without a mode mean require');
  const from_env = resolveConfig(parseDaemonFlags([]), {
    UBLKSNAP_NBD_TLS: 'allow', UBLKSNAP_NBD_TLS_CERTIFICATES: '/pki', UBLKSNAP_NBD_TLS_VERIFY_PEER: '1',
    UBLKSNAP_NBD_ALLOW: 'backup=*@*:ro;alice=vm1', UBLKSNAP_NBD_INSECURE: 'yes',
  }, '/');
  assert.equal(from_env.nbd_security.tls, { mode: 'allow', certificates_dir: '/pki', psk_file: null, verify_peer: true });
  assert.is(from_env.nbd_security.access.length, 2);
  assert.is(from_env.nbd_security.insecure, true);
  const dir = scratchDir('tls-config');
  const config = path.join(dir, 'config.json');
  writeFileSync(config, JSON.stringify({ 'nbd-tls': 'require', nbd_tls_certificates: 'pki', nbd_tls_verify_peer: true,
    nbd_allow: [{ identity: 'backup', exports: ['*@*'], read_only: true }] }));
  const from_file = resolveConfig(parseDaemonFlags(['--config', config]), {}, '/');
  assert.equal(from_file.nbd_security.tls, { mode: 'require', certificates_dir: path.join(dir, 'pki'), psk_file: null, verify_peer: true });
  assert.equal(from_file.nbd_security.access, [{ identity: 'backup', exports: ['*@*'], read_only: true }]);
  assert.throws(() => resolveConfig(parseDaemonFlags(['--nbd-tls', 'require']), {}, '/'), /needs --nbd-tls-certificates DIR or --nbd-tls-psk-file/);
  assert.throws(() => resolveConfig(parseDaemonFlags(['--nbd-tls', 'maybe', '--nbd-tls-psk-file', '/k']), {}, '/'), /expected one of off, allow, require/);
  assert.throws(() => resolveConfig(parseDaemonFlags(['--nbd-allow', 'nobody']), {}, '/'), /expected IDENTITY=EXPORT/);
  assert.throws(() => resolveConfig(parseDaemonFlags(['--nbd-tls-verify-peer', '--nbd-tls-psk-file', '/k']), {}, '/'), /verify-peer needs --nbd-tls-certificates/);
});

test.run();

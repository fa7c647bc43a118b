// Goal: the pure rules under NBD TLS, case by case: export patterns and
// identities of the authorisation rules (read-write wins over read-only,
// `*` never matches an anonymous client), the PSK file format and its
// errors, which hosts count as loopback, and the key-file mode check.
// Method: direct calls; files in a temporary directory.

import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AccessPolicy } from '../../src/frontends/nbd/access';
import { isLoopbackHost } from '../../src/frontends/nbd/security';
import { loadTlsCredentials, parsePskFile } from '../../src/frontends/nbd/tls-credentials';
import { tempDir } from '../lib/system';

test('export patterns and identities', () => {
  const policy = new AccessPolicy([
    { identity: 'backup', exports: ['vm*@*'], read_only: true },
    { identity: 'backup', exports: ['vm2@*'], read_only: false },
    { identity: '*', exports: ['shared'], read_only: true },
    { identity: 'anonymous', exports: ['public'], read_only: true },
  ]);
  assert.is(policy.accessOf('backup', 'vm1@1234'), 'read-only');
  assert.is(policy.accessOf('backup', 'vm2@1234'), 'read-write', 'read-write wins');
  assert.is(policy.accessOf('backup', 'vm1'), 'none', 'an image pattern does not grant the volume');
  assert.is(policy.accessOf('backup', 'xvm1@1'), 'none');
  assert.is(policy.accessOf('alice', 'shared'), 'read-only', '* is any proven identity');
  assert.is(policy.accessOf('anonymous', 'shared'), 'none', '* is not an anonymous client');
  assert.is(policy.accessOf('anonymous', 'public'), 'read-only');
  assert.is(new AccessPolicy([]).accessOf('anonymous', 'anything'), 'read-write', 'no rules: all may open all');
  const middle = new AccessPolicy([{ identity: 'a', exports: ['x*y*z'], read_only: false }]);
  assert.is(middle.accessOf('a', 'x1y2z'), 'read-write');
  assert.is(middle.accessOf('a', 'xyz'), 'read-write');
  assert.is(middle.accessOf('a', 'xzy'), 'none');
  assert.is(middle.accessOf('a', 'xyzy'), 'none', 'the tail must end the name');
});

test('PSK file: user:hexkey lines, comments, and clear errors', () => {
  const users = parsePskFile('# keys\nalice:00ff\n\nbackup:0123456789abcdef\n', 'f');
  assert.equal([...users.keys()], ['alice', 'backup']);
  assert.equal(users.get('alice'), Buffer.from([0, 255]));
  assert.throws(() => parsePskFile('alice\n', 'f'), /line 1: expected user:hexkey/);
  assert.throws(() => parsePskFile('alice:0g\n', 'f'), /not an even number of hex digits/);
  assert.throws(() => parsePskFile('alice:001\n', 'f'), /not an even number of hex digits/);
  assert.throws(() => parsePskFile('a:00\na:11\n', 'f'), /line 2: user a is given twice/);
  assert.throws(() => parsePskFile('# nothing\n', 'f'), /holds no user:hexkey line/);
});

test('loopback hosts', () => {
  for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1', '0:0:0:0:0:0:0:1']) assert.ok(isLoopbackHost(host), host);
  for (const host of ['0.0.0.0', '::', '192.0.2.2', '10.0.0.1', 'example.org', 'fd00::2']) assert.not.ok(isLoopbackHost(host), host);
});

test('a private key with group or other access is refused, naming it and its mode', () => {
  const dir = tempDir('tls-rules');
  const file = path.join(dir.path, 'keys.psk');
  writeFileSync(file, 'alice:00ff\n');
  for (const mode of [0o640, 0o604, 0o660]) {
    chmodSync(file, mode);
    assert.throws(() => loadTlsCredentials({ mode: 'require', certificates_dir: null, psk_file: file, verify_peer: false }),
      (error: Error) => error.message.includes(`${file} has mode 0${mode.toString(8)}`));
  }
  chmodSync(file, 0o600);
  const credentials = loadTlsCredentials({ mode: 'require', certificates_dir: null, psk_file: file, verify_peer: false });
  assert.ok(credentials.psk?.has('alice'));
  dir.remove();
});

test.run();

// TLS material for the tests, made with the real openssl tool: a CA, a
// server certificate for localhost and 127.0.0.1, client certificates (CN
// as given), an expired one, one from a CA the server does not trust, and
// PSK files in the `user:hexkey` format. Laid out the way the clients want
// it: a server directory (ca-cert.pem, server-cert.pem, server-key.pem) and
// one client directory per identity (ca-cert.pem, client-cert.pem,
// client-key.pem) for libnbd's tls-certificates= and qemu's tls-creds-x509
// dir=; a PSK client directory holds keys.psk for qemu's tls-creds-psk.

import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runOk } from './nbd-tools';

/** Days a test certificate is valid: the tests end long before. */
const VALID_DAYS = 30;
const KEY_BITS = 2048;
/** Just enough of a CA configuration for `openssl ca` to sign the expired certificate. */
const EXPIRED_CA_CONFIG = `[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any_name
[any_name]
commonName = supplied
`;

export interface TlsMaterial {
  /** ca-cert.pem, server-cert.pem, server-key.pem (0600). */
  server_dir: string;
  /** A client directory per identity: clientDir('backup'). */
  clientDir(common_name: string): Promise<string>;
  /** A client directory whose certificate expired yesterday (CN expired). */
  expiredClientDir(): Promise<string>;
  /** A client directory whose certificate a CA the server does not know signed (CN stranger). */
  untrustedClientDir(): Promise<string>;
  /** Writes a PSK file (mode 0600) with these users and random 32-byte keys; returns its path and the keys. */
  pskFile(name: string, users: string[]): { file: string; keys: Map<string, string> };
  /** A directory holding keys.psk with one user's line, for qemu's tls-creds-psk (and libnbd). */
  pskClientDir(name: string, user: string, hex_key: string): string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await runOk('openssl', args, { cwd });
}

async function newKey(file: string, cwd: string): Promise<void> {
  await openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${KEY_BITS}`, '-out', file], cwd);
  chmodSync(path.join(cwd, file), 0o600);
}

async function newCa(prefix: string, cwd: string): Promise<void> {
  await newKey(`${prefix}-key.pem`, cwd);
  await openssl(['req', '-x509', '-new', '-key', `${prefix}-key.pem`, '-subj', `/CN=${prefix} test CA`, '-days', String(VALID_DAYS),
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', `${prefix}-cert.pem`], cwd);
}

/** A certificate for CN signed by the CA `ca`; extensions as a client or a server needs them. */
async function signed(name: string, common_name: string, ca: string, role: 'server' | 'client', cwd: string, expired = false): Promise<void> {
  await newKey(`${name}-key.pem`, cwd);
  await openssl(['req', '-new', '-key', `${name}-key.pem`, '-subj', `/CN=${common_name}`, '-out', `${name}.csr`], cwd);
  const extensions = role === 'server'
    ? 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n'
    : 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n';
  writeFileSync(path.join(cwd, `${name}.ext`), extensions);
  if (!expired) {
    await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}-cert.pem`, '-CAkey', `${ca}-key.pem`, '-CAcreateserial',
      '-extfile', `${name}.ext`, '-days', String(VALID_DAYS), '-out', `${name}-cert.pem`], cwd);
    return;
  }
  // `openssl x509` (3.0) cannot date a certificate in the past; `openssl ca` can, with a minimal CA config.
  writeFileSync(path.join(cwd, 'ca.cnf'), EXPIRED_CA_CONFIG);
  writeFileSync(path.join(cwd, 'index.txt'), '');
  writeFileSync(path.join(cwd, 'serial'), '1000\n');
  await openssl(['ca', '-batch', '-config', 'ca.cnf', '-cert', `${ca}-cert.pem`, '-keyfile', `${ca}-key.pem`, '-in', `${name}.csr`,
    '-startdate', '200101000000Z', '-enddate', '200102000000Z', '-extfile', `${name}.ext`, '-notext', '-out', `${name}-cert.pem`], cwd);
}

export async function makeTlsMaterial(root: string): Promise<TlsMaterial> {
  const work = path.join(root, 'pki');
  mkdirSync(work, { recursive: true });
  await newCa('ca', work);
  await signed('server', 'localhost', 'ca', 'server', work);
  const server_dir = path.join(root, 'server-tls');
  mkdirSync(server_dir, { recursive: true });
  copyFileSync(path.join(work, 'ca-cert.pem'), path.join(server_dir, 'ca-cert.pem'));
  copyFileSync(path.join(work, 'server-cert.pem'), path.join(server_dir, 'server-cert.pem'));
  copyFileSync(path.join(work, 'server-key.pem'), path.join(server_dir, 'server-key.pem'));
  chmodSync(path.join(server_dir, 'server-key.pem'), 0o600);

  const clientDirFrom = (name: string): string => {
    const dir = path.join(root, `client-${name}`);
    mkdirSync(dir, { recursive: true });
    copyFileSync(path.join(work, 'ca-cert.pem'), path.join(dir, 'ca-cert.pem'));
    copyFileSync(path.join(work, `${name}-cert.pem`), path.join(dir, 'client-cert.pem'));
    copyFileSync(path.join(work, `${name}-key.pem`), path.join(dir, 'client-key.pem'));
    chmodSync(path.join(dir, 'client-key.pem'), 0o600);
    return dir;
  };
  let other_ca = false;
  return {
    server_dir,
    async clientDir(common_name) {
      await signed(`c-${common_name}`, common_name, 'ca', 'client', work);
      return clientDirFrom(`c-${common_name}`);
    },
    async expiredClientDir() {
      await signed('c-expired', 'expired', 'ca', 'client', work, true);
      return clientDirFrom('c-expired');
    },
    async untrustedClientDir() {
      if (!other_ca) await newCa('other', work);
      other_ca = true;
      await signed('c-stranger', 'stranger', 'other', 'client', work);
      return clientDirFrom('c-stranger');
    },
    pskFile(name, users) {
      const keys = new Map(users.map((user) => [user, randomBytes(32).toString('hex')]));
      const file = path.join(root, name);
      writeFileSync(file, [...keys].map(([user, key]) => `${user}:${key}\n`).join(''), { mode: 0o600 });
      chmodSync(file, 0o600);
      return { file, keys };
    },
    pskClientDir(name, user, hex_key) {
      const dir = path.join(root, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, 'keys.psk'), `${user}:${hex_key}\n`, { mode: 0o600 });
      return dir;
    },
  };
}

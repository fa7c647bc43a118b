// The server's TLS credentials, read from disk: an x509 directory laid out
// as qemu-nbd and nbdkit expect it, and/or a PSK file in the format nbdkit,
// libnbd and GnuTLS's psktool use. Read at start and again on reload
// (SIGHUP): each connection keeps the credentials it started with, so a
// reload never touches a live session.
//
//   x509 directory                      PSK file
//   ca-cert.pem     CA of client certs  alice:0123…ef   one `user:hexkey` a line
//   ca-crl.pem      optional CRL        backup:89ab…01
//   server-cert.pem our certificate
//   server-key.pem  our private key     (must not be readable by others)
//
// Private keys (server-key.pem, the PSK file) with any permission for group
// or others are refused, naming the file and its mode, like ssh refuses a
// private key anyone else can read.

import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { UblksnapError } from '../../shared/errors';

export type TlsMode = 'off' | 'allow' | 'require';
export const TLS_MODES: readonly TlsMode[] = ['off', 'allow', 'require'];

export interface NbdTlsOptions {
  mode: TlsMode;
  /** A directory with server-cert.pem, server-key.pem and (for verify_peer) ca-cert.pem. */
  certificates_dir: string | null;
  /** A `user:hexkey` file. */
  psk_file: string | null;
  /** Clients must present a certificate signed by ca-cert.pem (x509). */
  verify_peer: boolean;
}

export const TLS_OFF: NbdTlsOptions = { mode: 'off', certificates_dir: null, psk_file: null, verify_peer: false };

export const CA_CERT_FILE = 'ca-cert.pem';
export const CA_CRL_FILE = 'ca-crl.pem';
export const SERVER_CERT_FILE = 'server-cert.pem';
export const SERVER_KEY_FILE = 'server-key.pem';
/** Permission bits of a private key that let someone else read or change it. */
const KEY_MODE_FORBIDDEN_BITS = 0o077;
/** Names this server's sessions for OpenSSL's session cache (any fixed string of ≤ 32 bytes). */
const SESSION_ID_CONTEXT = 'ublksnap-nbd';
/** A PSK or certificate file larger than this is not one. */
const CREDENTIAL_FILE_BYTES_MAX = 1024 * 1024;
/** PSK users one file may hold. */
export const PSK_USERS_MAX = 4096;
/** RFC 4279: identities up to 128 bytes; GnuTLS keys are at most 64 bytes. */
const PSK_IDENTITY_BYTES_MAX = 128;
const PSK_KEY_BYTES_MAX = 64;
/** TLS 1.2 at least: older versions are broken, and libnbd and qemu speak 1.3. */
const TLS_MIN_VERSION = 'TLSv1.2';
/**
 * TLS 1.3 suites with SHA-256 first: OpenSSL's PSK callback (the one Node
 * uses) only works with a SHA-256 suite; had the server picked
 * AES_256_GCM_SHA384 (its default first choice), a GnuTLS PSK client would
 * fail with "Insufficient credentials". Then TLS 1.2 PSK suites beside the
 * certificate ones.
 */
const TLS_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:' +
  'ECDHE-PSK-AES256-GCM-SHA384:ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:PSK-AES256-GCM-SHA384:HIGH:!aNULL:!MD5';

/** What a connection needs to start TLS, fixed when it connects. */
export interface TlsCredentials {
  secure_context: tls.SecureContext;
  psk: ReadonlyMap<string, Buffer> | null;
  has_certificate: boolean;
  verify_peer: boolean;
  /** When these were read, for status and logs. */
  loaded_at: string;
}

function credentialError(file: string, problem: string): never {
  throw new UblksnapError('EINVAL', `NBD TLS: ${file}: ${problem}`);
}

function readCredentialFile(file: string, private_key: boolean): Buffer {
  let size_bytes: number;
  let mode: number;
  try {
    const stats = statSync(file);
    size_bytes = stats.size;
    mode = stats.mode;
  } catch (error) {
    // ENOENT, EACCES: say which file cannot be used.
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
    throw new UblksnapError(code === 'ENOENT' ? 'ENOENT' : 'EACCES', `NBD TLS: ${file}: cannot read it (${code})`);
  }
  if (size_bytes > CREDENTIAL_FILE_BYTES_MAX) credentialError(file, `larger than ${CREDENTIAL_FILE_BYTES_MAX} bytes`);
  if (private_key && (mode & KEY_MODE_FORBIDDEN_BITS) !== 0) {
    throw new UblksnapError('EACCES',
      `NBD TLS: private key ${file} has mode ${(mode & 0o777).toString(8).padStart(4, '0')}: ` +
      'group and others must have no access (chmod 600)');
  }
  return readFileSync(file);
}

/** `user:hexkey` lines; blank lines and `#` comments are skipped. */
export function parsePskFile(text: string, file: string): Map<string, Buffer> {
  const users = new Map<string, Buffer>();
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index += 1) {
    const line = lines[index]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `line ${index + 1}`;
    const colon = line.lastIndexOf(':');
    if (colon <= 0) credentialError(file, `${where}: expected user:hexkey`);
    const user = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (Buffer.byteLength(user) > PSK_IDENTITY_BYTES_MAX) credentialError(file, `${where}: user longer than ${PSK_IDENTITY_BYTES_MAX} bytes`);
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) credentialError(file, `${where}: the key of ${user} is not an even number of hex digits`);
    if (hex.length / 2 > PSK_KEY_BYTES_MAX) credentialError(file, `${where}: the key of ${user} is longer than ${PSK_KEY_BYTES_MAX} bytes`);
    if (users.has(user)) credentialError(file, `${where}: user ${user} is given twice`);
    if (users.size >= PSK_USERS_MAX) credentialError(file, `more than ${PSK_USERS_MAX} users`);
    users.set(user, Buffer.from(hex, 'hex'));
  }
  if (users.size === 0) credentialError(file, 'holds no user:hexkey line');
  return users;
}

/** Reads every file options name; throws a UblksnapError naming the file on any problem. */
export function loadTlsCredentials(options: NbdTlsOptions): TlsCredentials {
  if (options.certificates_dir === null && options.psk_file === null) {
    throw new UblksnapError('EINVAL', 'NBD TLS needs a certificates directory, a PSK file, or both');
  }
  if (options.verify_peer && options.certificates_dir === null) {
    throw new UblksnapError('EINVAL', 'NBD TLS: verifying client certificates needs a certificates directory (with ca-cert.pem)');
  }
  const context_options: tls.SecureContextOptions = {
    minVersion: TLS_MIN_VERSION, ciphers: TLS_CIPHERS, honorCipherOrder: true,
    // OpenSSL refuses a TLS 1.3 PSK (a resumption, to it) on a context that
    // verifies peers without one; tls.Server sets it, a bare TLSSocket must.
    sessionIdContext: SESSION_ID_CONTEXT,
  };
  if (options.certificates_dir !== null) {
    const dir = options.certificates_dir;
    context_options.cert = readCredentialFile(path.join(dir, SERVER_CERT_FILE), false);
    context_options.key = readCredentialFile(path.join(dir, SERVER_KEY_FILE), true);
    if (options.verify_peer) {
      context_options.ca = readCredentialFile(path.join(dir, CA_CERT_FILE), false);
      let crl: Buffer | null = null;
      try {
        crl = readCredentialFile(path.join(dir, CA_CRL_FILE), false);
      } catch (error) {
        // ENOENT: no revocation list, which is the usual case.
        if (!(error instanceof UblksnapError) || error.code !== 'ENOENT') throw error;
      }
      if (crl !== null) context_options.crl = crl;
    }
  }
  let secure_context: tls.SecureContext;
  try {
    secure_context = tls.createSecureContext(context_options);
  } catch (error) {
    // OpenSSL's own words: a key that does not match the certificate, bad PEM.
    throw new UblksnapError('EINVAL', `NBD TLS: ${options.certificates_dir ?? ''}: ${(error as Error).message}`);
  }
  const psk = options.psk_file !== null
    ? parsePskFile(readCredentialFile(options.psk_file, true).toString('utf8'), options.psk_file)
    : null;
  return {
    secure_context,
    psk,
    has_certificate: options.certificates_dir !== null,
    verify_peer: options.verify_peer,
    loaded_at: new Date().toISOString(),
  };
}

/**
 * The options that turn a connected plain socket into the server side of a
 * TLS session. on_psk_identity hears the PSK user the client named (Node
 * does not report it after the handshake).
 */
export function serverSocketOptions(credentials: TlsCredentials, on_psk_identity: (identity: string) => void): tls.TLSSocketOptions {
  const psk = credentials.psk;
  return {
    isServer: true,
    secureContext: credentials.secure_context,
    requestCert: credentials.verify_peer,
    rejectUnauthorized: credentials.verify_peer,
    ...(psk !== null ? {
      // An unknown user gets null: the handshake fails as with a wrong key.
      pskCallback: (_socket: tls.TLSSocket, identity: string): Buffer | null => {
        const key = psk.get(identity) ?? null;
        if (key !== null) on_psk_identity(identity);
        return key;
      },
    } : {}),
  };
}

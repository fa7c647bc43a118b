// Raw TLS clients for the refusal and authorisation tests: an NBD
// connection that does STARTTLS with a PSK or a certificate from node's own
// tls module (the server must not care which TLS library speaks to it), and
// a count of this process's open descriptors to catch leaks.

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { RawNbd } from './nbd-raw-client';

/** Connects, reads the greeting, sends client flags, does STARTTLS with this PSK user and hex key. */
export async function pskSession(port: number, user: string, hex_key: string): Promise<RawNbd> {
  const client = await RawNbd.connect({ host: '127.0.0.1', port });
  await client.handshake();
  await client.startTls({
    pskCallback: () => ({ identity: user, psk: Buffer.from(hex_key, 'hex') }),
    // No certificate is involved in a PSK session: nothing to check the server's name against.
    checkServerIdentity: () => undefined,
    ciphers: 'TLS_AES_128_GCM_SHA256',
  });
  return client;
}

/** As pskSession, with the client certificate of a test client directory (tls-material.ts). */
export async function certificateSession(port: number, client_dir: string): Promise<RawNbd> {
  const client = await RawNbd.connect({ host: '127.0.0.1', port });
  await client.handshake();
  await client.startTls({
    ca: readFileSync(path.join(client_dir, 'ca-cert.pem')),
    cert: readFileSync(path.join(client_dir, 'client-cert.pem')),
    key: readFileSync(path.join(client_dir, 'client-key.pem')),
    servername: 'localhost',
  });
  return client;
}

/** Descriptors this process holds now. */
export function openDescriptorCount(): number {
  return readdirSync('/proc/self/fd').length;
}

// The TLS rows (issue 14): what encryption costs, over TCP on loopback,
// on the same image as the other rows. ublksnap-tcp runs a whole plain
// round (systems.ts); the TLS rows run the image read (nbdcopy) only:
// fio's nbd engine cannot open a TLS URI (libnbd refuses tls-psk-file=
// unless the program allows local files, and fio does not), so 4 KiB
// random writes over TLS are not measured here.
//
//   ublksnap-tcp   our server, plain TCP                    nbd://127.0.0.1:PORT/bench
//   ublksnap-tls   our server, TLS required, PSK            nbds://bench@127.0.0.1:PORT/bench?tls-psk-file=…
//   nbdkit-tls     nbdkit file plugin, --tls=require, PSK   nbds://bench@127.0.0.1:PORT/?tls-psk-file=…
//
// PSK on both TLS rows: the same key exchange and cipher choice left to the
// libraries (GnuTLS on the client, OpenSSL in ours, GnuTLS in nbdkit).
// Our TLS runs on the server's main thread and relays plain bytes to the
// I/O actor (src/frontends/nbd/tls-relay.ts): these rows show that cost.

import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ServerProcess } from './servers';
import { UBLKSNAP_VOLUME_NAME, launchUblksnap, plainRound, type RoundContext, type SystemSpec } from './systems';

const PSK_USER = 'bench';
const PSK_KEY_BYTES = 32;

/** A loopback port free right now (the server binds it a moment later). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen({ host: '127.0.0.1', port: 0 }, () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

function pskFile(context: RoundContext, system: string): string {
  const file = path.join(context.work_dir, `${system}.psk`);
  writeFileSync(file, `${PSK_USER}:${randomBytes(PSK_KEY_BYTES).toString('hex')}\n`, { mode: 0o600 });
  return file;
}

function tlsUri(port: number, export_name: string, psk_file: string): string {
  return `nbds://${PSK_USER}@127.0.0.1:${port}/${export_name}?tls-psk-file=${psk_file}`;
}

export function ublksnapTcp(): SystemSpec {
  const id = 'ublksnap-tcp';
  return {
    id, label: 'ublksnap, no snapshot, plain TCP', kind: 'plain',
    run: (context) => plainRound(context, id, async () => {
      const port = await freePort();
      const server = await launchUblksnap(context, id, {}, { tcp_port: port });
      return { server, uri: `nbd://127.0.0.1:${port}/${UBLKSNAP_VOLUME_NAME}` };
    }),
  };
}

export function ublksnapTls(): SystemSpec {
  const id = 'ublksnap-tls';
  return {
    id, label: 'ublksnap, no snapshot, TLS (PSK) over TCP', kind: 'plain',
    run: (context) => plainRound(context, id, async () => {
      const port = await freePort();
      const psk_file = pskFile(context, id);
      const server = await launchUblksnap(context, id, {}, { tcp_port: port, tls_psk_file: psk_file });
      return { server, uri: tlsUri(port, UBLKSNAP_VOLUME_NAME, psk_file) };
    }, true),
  };
}

export function nbdkitTls(): SystemSpec {
  const id = 'nbdkit-tls';
  return {
    id, label: 'nbdkit file plugin, --tls=require (PSK) over TCP', kind: 'plain',
    run: (context) => plainRound(context, id, async () => {
      const port = await freePort();
      const psk_file = pskFile(context, id);
      const socket_path = path.join(context.work_dir, `${id}.sock`);
      const args = ['--foreground', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), '--tls=require', `--tls-psk=${psk_file}`,
        'file', context.image_path];
      const server = await ServerProcess.start(id, 'nbdkit', args, socket_path, port);
      return { server, uri: tlsUri(port, '', psk_file) };
    }, true),
  };
}

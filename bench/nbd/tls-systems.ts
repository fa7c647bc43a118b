// The TLS rows (issue 14): what encryption costs, over TCP on loopback,
// on the same image as the other rows. Each runs the image read (nbdcopy
// → null:) and 4 KiB writes at QD32 with nbdcopy (nbdcopyWrites): fio's
// nbd engine cannot open a TLS URI (libnbd refuses tls-psk-file= unless
// the program allows local files, and fio does not), and `qemu-img bench`
// takes no --object for TLS credentials.
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
import { rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { readExport } from './nbdcopy';
import { ServerProcess } from './servers';
import {
  RANDOM_BLOCK_BYTES, RANDOM_IODEPTH, UBLKSNAP_VOLUME_NAME, WORKLOADS, launchUblksnap, measure, readStep,
  type RoundContext, type SystemSpec, type WorkloadSpec,
} from './systems';

const PSK_USER = 'bench';
const PSK_KEY_BYTES = 32;
/** A write run longer than this is stuck. */
const WRITE_TIMEOUT_MS = 300_000;

export const WRITE_4K_TLS: WorkloadSpec = {
  id: 'write-4k-nbdcopy', label: `4 KiB writes, nbdcopy QD${RANDOM_IODEPTH}`, unit: 'IOPS',
};

/**
 * nbdcopy from a file of random bytes onto the export in 4 KiB requests,
 * RANDOM_IODEPTH in flight, one connection, no zero detection: every
 * request a 4 KiB WRITE. Sequential, where fio's row is random; what TLS
 * costs per request does not depend on where it lands.
 */
function nbdcopyWrites(source: string, uri: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const args = ['--request-size', String(RANDOM_BLOCK_BYTES), '--requests', String(RANDOM_IODEPTH), '--connections', '1',
      '--threads', '1', '--sparse', '0', '--no-extents', source, uri];
    const started = process.hrtime.bigint();
    const child = spawn('nbdcopy', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let errors = '';
    child.stderr.on('data', (chunk: Buffer) => { errors += chunk.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), WRITE_TIMEOUT_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`nbdcopy ${args.join(' ')}: exit ${code}: ${errors.trim()}`));
      else resolve(Number(process.hrtime.bigint() - started) / 1e9);
    });
  });
}

/** The TLS rows' round: an untimed read, the timed read, the timed 4 KiB writes. */
async function tlsRound(context: RoundContext, system: string, server: ServerProcess, uri: string): Promise<void> {
  const write_bytes = Math.min(context.rand_write_bytes, context.image_bytes);
  const source = path.join(context.work_dir, `${system}-writes.bin`);
  writeFileSync(source, randomBytes(write_bytes));
  try {
    await readExport(uri, context.image_bytes);
    await readStep(context, system, WORKLOADS.seq_read, server, uri);
    await measure(context, system, WRITE_4K_TLS, server, async () => {
      const seconds = await nbdcopyWrites(source, uri);
      const ios = write_bytes / RANDOM_BLOCK_BYTES;
      return { value: ios / seconds, bytes: write_bytes, ios, seconds };
    });
  } catch (error) {
    await server.kill();
    throw error;
  } finally {
    rmSync(source, { force: true });
  }
  context.usage(system, await server.stop());
}

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
    id, label: 'ublksnap, plain TCP', kind: 'plain',
    run: async (context) => {
      const port = await freePort();
      const server = await launchUblksnap(context, id, {}, { tcp_port: port });
      await tlsRound(context, id, server, `nbd://127.0.0.1:${port}/${UBLKSNAP_VOLUME_NAME}`);
    },
  };
}

export function ublksnapTls(): SystemSpec {
  const id = 'ublksnap-tls';
  return {
    id, label: 'ublksnap, TLS (PSK)', kind: 'plain',
    run: async (context) => {
      const port = await freePort();
      const psk_file = pskFile(context, id);
      const server = await launchUblksnap(context, id, {}, { tcp_port: port, tls_psk_file: psk_file });
      await tlsRound(context, id, server, tlsUri(port, UBLKSNAP_VOLUME_NAME, psk_file));
    },
  };
}

export function nbdkitTls(): SystemSpec {
  const id = 'nbdkit-tls';
  return {
    id, label: 'nbdkit file, --tls=require (PSK)', kind: 'plain',
    run: async (context) => {
      const port = await freePort();
      const psk_file = pskFile(context, id);
      const socket_path = path.join(context.work_dir, `${id}.sock`);
      const args = ['--foreground', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), '--tls=require', `--tls-psk=${psk_file}`,
        'file', context.image_path];
      const server = await ServerProcess.start(id, 'nbdkit', args, socket_path, port);
      await tlsRound(context, id, server, tlsUri(port, '', psk_file));
    },
  };
}

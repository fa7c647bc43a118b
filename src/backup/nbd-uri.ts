// NBD URIs as the daemon prints them (`attach --nbd`, `snapshot_info -f
// nbd`), turned into what a socket connect needs. Two forms, the ones
// libnbd and QEMU read too (docs/nbd.md "URIs"):
//
//   nbd+unix:///NAME?socket=/path/to/nbd.sock      Unix socket
//   nbd://HOST[:PORT]/NAME                         TCP (port 10809 by default)
//
// The export name is percent-encoded (`vol%40<uuid>` for `vol@<uuid>`).

import { UblksnapError } from '../shared/errors';

/** The IANA port of NBD, the default of an nbd:// URI without one. */
export const NBD_DEFAULT_PORT = 10809;

export interface NbdTarget {
  readonly export_name: string;
  /** A Unix socket path, or null for TCP. */
  readonly socket_path: string | null;
  readonly host: string;
  readonly port: number;
  /** The URI as given, for messages. */
  readonly uri: string;
}

function invalid(uri: string, why: string): never {
  throw new UblksnapError('EINVAL', `${JSON.stringify(uri)} is not an NBD URI this client reads: ${why} (expected nbd+unix:///NAME?socket=PATH or nbd://HOST:PORT/NAME)`);
}

export function parseNbdUri(uri: string): NbdTarget {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    invalid(uri, 'not a URI');
  }
  const export_name = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (export_name.length === 0) invalid(uri, 'no export name');
  if (url.protocol === 'nbd+unix:') {
    const socket_path = url.searchParams.get('socket');
    if (socket_path === null || socket_path.length === 0) invalid(uri, 'no socket= parameter');
    return { export_name, socket_path, host: '', port: 0, uri };
  }
  if (url.protocol === 'nbd:') {
    if (url.hostname.length === 0) invalid(uri, 'no host');
    const port = url.port === '' ? NBD_DEFAULT_PORT : Number(url.port);
    return { export_name, socket_path: null, host: url.hostname.replace(/^\[|\]$/g, ''), port, uri };
  }
  invalid(uri, `scheme ${url.protocol} (TLS and other transports are not supported)`);
}

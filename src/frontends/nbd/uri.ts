// NBD URIs (the NBD project's doc/uri.md, as libnbd, qemu and nbdinfo read
// them): `nbd://HOST:PORT/EXPORT` over TCP and
// `nbd+unix:///EXPORT?socket=PATH` over a Unix socket. The export name is
// the path after the first slash, percent-encoded: `@` in `NAME@ID` and
// any other reserved character survive the trip.
//
// TLS (libnbd's nbd_connect_uri): `nbds://[USER@]HOST:PORT/EXPORT?QUERY`,
// the query naming the client's credentials: `tls-certificates=DIR` (x509:
// ca-cert.pem, client-cert.pem, client-key.pem) or `tls-psk-file=FILE`,
// with the PSK user as the URI's user (libnbd reads it as tls-username).

/** Percent-encodes everything but RFC 3986 unreserved characters. */
function encodeComponent(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (character) => `%${character.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Socket paths keep their slashes readable; everything else is encoded. */
function encodeSocketPath(path: string): string {
  return path.split('/').map(encodeComponent).join('/');
}

export function unixUri(socket_path: string, export_name: string): string {
  return `nbd+unix:///${encodeComponent(export_name)}?socket=${encodeSocketPath(socket_path)}`;
}

export function tcpUri(host: string, port: number, export_name: string): string {
  const shown_host = host.includes(':') ? `[${host}]` : host;
  return `nbd://${shown_host}:${port}/${encodeComponent(export_name)}`;
}

/** What a TLS client URI carries beyond the address. */
export interface TlsUriCredentials {
  /** x509: the client's certificates directory. */
  certificates_dir?: string;
  /** PSK: the client's key file and the user in it. */
  psk_file?: string;
  username?: string;
}

export function tlsUri(host: string, port: number, export_name: string, credentials: TlsUriCredentials): string {
  const shown_host = host.includes(':') ? `[${host}]` : host;
  const user = credentials.username !== undefined ? `${encodeComponent(credentials.username)}@` : '';
  const query: string[] = [];
  if (credentials.certificates_dir !== undefined) query.push(`tls-certificates=${encodeSocketPath(credentials.certificates_dir)}`);
  if (credentials.psk_file !== undefined) query.push(`tls-psk-file=${encodeSocketPath(credentials.psk_file)}`);
  return `nbds://${user}${shown_host}:${port}/${encodeComponent(export_name)}${query.length > 0 ? `?${query.join('&')}` : ''}`;
}

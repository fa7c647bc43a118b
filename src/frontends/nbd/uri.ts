// NBD URIs (the NBD project's doc/uri.md, as libnbd, qemu and nbdinfo read
// them): `nbd://HOST:PORT/EXPORT` over TCP and
// `nbd+unix:///EXPORT?socket=PATH` over a Unix socket. The export name is
// the path after the first slash, percent-encoded: `@` in `NAME@ID` and
// any other reserved character survive the trip.

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

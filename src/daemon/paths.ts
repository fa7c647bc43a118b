// Where the daemon lives on disk, computed the same way by the daemon and
// the CLI: that is how `ublksnap status` finds a daemon with no flag and no
// environment variable.
//
//   runtime dir  $XDG_RUNTIME_DIR/ublksnap   (a desktop or ssh session)
//                /run/ublksnap               (root)
//                /tmp/ublksnap-$UID          (anyone else)
//   socket       <runtime dir>/ublksnap.sock (unless --socket / UBLKSNAP_SOCKET)
//   state dir    /var/lib/ublksnap           (root)
//                $XDG_STATE_HOME/ublksnap    (anyone else; default ~/.local/state)
//                (unless --state-dir): pid file, volumes.json, cbt/
//
// The state dir outlives a reboot on purpose: it holds the record of
// attached volumes and their saved change tracking (volume-persistence.ts),
// which the runtime dir, a tmpfs, would lose. With no usable home the
// runtime dir is the fallback, and a reboot then forgets the volumes.
//
// The control socket stays in the runtime dir even when --state-dir moves
// the state elsewhere (npm start keeps its state in the checkout), so the
// CLI's default always reaches the default daemon.
//
// This file must stay light: the CLI imports it for every command.

import { lstatSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { UblksnapError } from '../shared/errors';

export const SOCKET_FILE_NAME = 'ublksnap.sock';
export const PID_FILE_NAME = 'ublksnap.pid';
export const NBD_SOCKET_FILE_NAME = 'nbd.sock';
/** Runtime and state directories are private to their owner. */
export const PRIVATE_DIR_MODE = 0o700;

export function currentUid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

export function defaultRuntimeDir(env: NodeJS.ProcessEnv = process.env, uid = currentUid()): string {
  const xdg = env.XDG_RUNTIME_DIR;
  // The XDG spec says to ignore a relative XDG_RUNTIME_DIR.
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'ublksnap');
  if (uid === 0) return '/run/ublksnap';
  return `/tmp/ublksnap-${uid}`;
}

/** The persistent state dir (see the top of this file). */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env, uid = currentUid()): string {
  if (uid === 0) return '/var/lib/ublksnap';
  // The XDG spec says to ignore relative paths here too.
  const xdg = env.XDG_STATE_HOME;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'ublksnap');
  const home = env.HOME;
  if (home && path.isAbsolute(home) && home !== '/') return path.join(home, '.local', 'state', 'ublksnap');
  return defaultRuntimeDir(env, uid);
}

export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env, uid = currentUid()): string {
  return path.join(defaultRuntimeDir(env, uid), SOCKET_FILE_NAME);
}

/** The socket the CLI talks to: --socket, else UBLKSNAP_SOCKET, else the default. */
export function clientSocketPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (flag !== undefined && flag !== '') return path.resolve(flag);
  if (env.UBLKSNAP_SOCKET) return path.resolve(env.UBLKSNAP_SOCKET);
  return defaultSocketPath(env);
}

/** The checkout (or installed package) root: dist/src/daemon/ is three levels down. */
export function packageRoot(): string {
  return path.resolve(__dirname, '..', '..', '..');
}

let cached_version: string | null = null;
export function packageVersion(): string {
  if (cached_version === null) {
    const manifest = JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown };
    cached_version = typeof manifest.version === 'string' ? manifest.version : '0.0.0';
  }
  return cached_version;
}

/**
 * Creates dir (mode 0700) if missing and checks it is safe to put a socket
 * or pid file in: a real directory (not a symlink) owned by us, writable by
 * no one else. A /tmp/ublksnap-$UID made by another user is refused.
 */
export function ensurePrivateDir(dir: string, uid = currentUid()): void {
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  const stats = lstatSync(dir);
  if (!stats.isDirectory()) throw new UblksnapError('EINVAL', `${dir} is not a directory`);
  if (stats.uid !== uid) throw new UblksnapError('EPERM', `${dir} belongs to uid ${stats.uid}, not to us (uid ${uid}); refusing to use it`);
  if ((stats.mode & 0o022) !== 0) {
    throw new UblksnapError('EPERM', `${dir} is writable by others (mode ${(stats.mode & 0o777).toString(8)}); refusing to use it`);
  }
}

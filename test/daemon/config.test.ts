// Goal: the daemon's options resolve with the documented precedence (flags,
// then the config file, then UBLKSNAP_* variables, then defaults), relative
// paths resolve against the right directory, and the default socket is the
// one the CLI computes too.
// Method: resolveConfig on flag sets, config files in a scratch dir and
// fake environments; defaultSocketPath / clientSocketPath on fake
// environments and uids.

import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseDaemonFlags, parseListenAddress, resolveConfig } from '../../src/daemon/config';
import { clientSocketPath, defaultRuntimeDir, defaultSocketPath, defaultStateDir } from '../../src/daemon/paths';
import { DEFAULT_PARAMS } from '../../src/shared/params';
import { removeScratchDir, scratchDir } from '../lib/daemon';

let dir: string;

test.before(() => {
  dir = scratchDir('config');
});

test.after(() => {
  removeScratchDir(dir);
});

test('defaults: runtime dir from XDG_RUNTIME_DIR, /run as root, /tmp otherwise; the CLI uses the same socket', () => {
  assert.is(defaultRuntimeDir({ XDG_RUNTIME_DIR: '/run/user/1000' }, 1000), '/run/user/1000/ublksnap');
  assert.is(defaultRuntimeDir({ XDG_RUNTIME_DIR: 'relative/dir' }, 1000), '/tmp/ublksnap-1000', 'a relative XDG_RUNTIME_DIR is ignored');
  assert.is(defaultRuntimeDir({}, 0), '/run/ublksnap');
  assert.is(defaultRuntimeDir({}, 1000), '/tmp/ublksnap-1000');
  assert.is(defaultSocketPath({}, 1000), '/tmp/ublksnap-1000/ublksnap.sock');
  const env = { XDG_RUNTIME_DIR: '/run/user/7' };
  assert.is(clientSocketPath(undefined, env), defaultSocketPath(env));
  assert.is(clientSocketPath(undefined, { ...env, UBLKSNAP_SOCKET: '/s/env.sock' }), '/s/env.sock');
  assert.is(clientSocketPath('/s/flag.sock', { ...env, UBLKSNAP_SOCKET: '/s/env.sock' }), '/s/flag.sock');
  const config = resolveConfig(parseDaemonFlags([]), env, dir);
  assert.is(config.socket, clientSocketPath(undefined, env), 'daemon and CLI agree with no flag and no variable');
  assert.is(config.state_dir, defaultStateDir(env), 'the persistent state dir, not the runtime dir');
  assert.is(config.log_level, 'info');
  assert.equal(config.params, DEFAULT_PARAMS);
  assert.is(config.nbd_socket, null);
  assert.is(config.nbd_listen, null);
});

test('default state dir: persistent (/var/lib as root, XDG_STATE_HOME or ~/.local/state otherwise)', () => {
  assert.is(defaultStateDir({ XDG_STATE_HOME: '/home/u/.state', HOME: '/home/u' }, 0), '/var/lib/ublksnap');
  assert.is(defaultStateDir({ XDG_STATE_HOME: '/home/u/.state', HOME: '/home/u' }, 1000), '/home/u/.state/ublksnap');
  assert.is(defaultStateDir({ XDG_STATE_HOME: 'relative', HOME: '/home/u' }, 1000), '/home/u/.local/state/ublksnap', 'a relative XDG_STATE_HOME is ignored');
  assert.is(defaultStateDir({ XDG_RUNTIME_DIR: '/run/user/1000' }, 1000), '/run/user/1000/ublksnap', 'no home: the runtime dir');
});

test('precedence: flags beat the config file beat the environment', () => {
  const file = path.join(dir, 'a.json');
  writeFileSync(file, JSON.stringify({ socket: 'file.sock', log_level: 'warn', 'nbd-listen': '127.0.0.1:10809', params: { chunk_minimum_shift: 16, chunk_maximum_in_queue: 4 } }));
  const env = { UBLKSNAP_SOCKET: '/env.sock', UBLKSNAP_LOG_LEVEL: 'debug', UBLKSNAP_STATE_DIR: '/env-state', UBLKSNAP_NBD_SOCKET: 'nbd.sock' };
  const from_file = resolveConfig(parseDaemonFlags(['--config', file]), env, '/cwd');
  assert.is(from_file.socket, path.join(dir, 'file.sock'), 'relative to the config file');
  assert.is(from_file.log_level, 'warn');
  assert.is(from_file.state_dir, '/env-state', 'not in the file: the environment');
  assert.is(from_file.nbd_socket, '/cwd/nbd.sock', 'relative to the working directory');
  assert.equal(from_file.nbd_listen, { host: '127.0.0.1', port: 10809 });
  assert.is(from_file.params.chunk_minimum_shift, 16);
  assert.is(from_file.config_file, file);
  const flags = resolveConfig(parseDaemonFlags(['--config', file, '--socket', 'flag.sock', '--log-level', 'error', '--param', 'chunk_maximum_in_queue=8']), env, '/cwd');
  assert.is(flags.socket, '/cwd/flag.sock');
  assert.is(flags.log_level, 'error');
  assert.is(flags.params.chunk_maximum_in_queue, 8, '--param beats the file');
  assert.is(flags.params.chunk_minimum_shift, 16, 'the file still counts for the rest');
  const via_env = resolveConfig(parseDaemonFlags([]), { UBLKSNAP_CONFIG: file }, '/cwd');
  assert.is(via_env.log_level, 'warn', 'UBLKSNAP_CONFIG names the file when --config does not');
});

test('listen addresses', () => {
  assert.equal(parseListenAddress('localhost:10809', 'x'), { host: 'localhost', port: 10809 });
  assert.equal(parseListenAddress('[::1]:0', 'x'), { host: '::1', port: 0 });
  for (const bad of ['localhost', ':10809', 'a b:1', '[::1]', 'host:99999', 'host:-1']) {
    assert.throws(() => parseListenAddress(bad, '--nbd-listen'), /--nbd-listen/);
  }
});

test.run();

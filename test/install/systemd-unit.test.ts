// Goal: packaging/ublksnap.service is a unit systemd accepts and that runs
// the daemon the way the README promises: state under /var/lib/ublksnap,
// the socket under /run/ublksnap (the directories systemd makes for
// StateDirectory= and RuntimeDirectory=), Type=simple (the daemon does not
// speak sd_notify), a clean stop by SIGTERM, and an ExecStart whose flags
// the daemon's own parser accepts.
// Method: `systemd-analyze verify` (skipped loudly without it; CI installs
// systemd), then the unit is parsed here: ExecStart's daemon arguments go
// through parseDaemonFlags and resolveConfig, and its paths are compared
// with the directories the unit asks systemd for.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseDaemonFlags, resolveConfig } from '../../src/daemon/config';
import { REPO_ROOT } from '../lib/daemon';
import { gate } from '../lib/system';

const UNIT = path.join(REPO_ROOT, 'packaging', 'ublksnap.service');
const verify = gate(test, 'install/systemd-unit verify', { tools: ['systemd-analyze'] });

/** Key → values of the unit (keys may repeat); comments and section headers dropped. */
function unitEntries(): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  for (const raw of readFileSync(UNIT, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith('[')) continue;
    const at = line.indexOf('=');
    assert.ok(at > 0, `not KEY=VALUE: ${line}`);
    const key = line.slice(0, at);
    entries.set(key, [...(entries.get(key) ?? []), line.slice(at + 1)]);
  }
  return entries;
}

function one(entries: Map<string, string[]>, key: string): string {
  const values = entries.get(key) ?? [];
  assert.is(values.length, 1, `${key}= once`);
  return values[0] as string;
}

verify.test('systemd-analyze verify accepts the unit', () => {
  // --man=no: the manual page is installed by npm install -g, not on this machine.
  const output = execFileSync('sh', ['-c', `systemd-analyze verify --man=no "${UNIT}" 2>&1`], { encoding: 'utf8' });
  assert.is(output, '', output);
});

test('ExecStart runs `ublksnap daemon` with flags its parser accepts, on the unit\'s directories', () => {
  const entries = unitEntries();
  assert.is(one(entries, 'Type'), 'simple', 'the daemon does not speak sd_notify');
  assert.is(one(entries, 'KillSignal'), 'SIGTERM', 'SIGTERM is the clean stop');
  const exec = one(entries, 'ExecStart').split(/\s+/);
  assert.equal(exec.slice(0, 3), ['/usr/bin/env', 'ublksnap', 'daemon'], 'found on systemd\'s PATH (/usr/bin or /usr/local/bin)');
  const config = resolveConfig(parseDaemonFlags(exec.slice(3)), {}, '/');
  assert.is(config.state_dir, path.join('/var/lib', one(entries, 'StateDirectory')));
  assert.is(path.dirname(config.socket), path.join('/run', one(entries, 'RuntimeDirectory')));
  // Not given: the daemon puts nbd.sock beside the control socket, in the runtime directory too.
  assert.is(config.nbd_socket, null);
});

test.run();

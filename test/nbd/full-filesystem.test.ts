// Goal: a write to a volume whose own filesystem is full reaches the NBD
// client as ENOSPC (not EIO), a discard that fails for another reason than
// "not supported" is reported, and the engine and every other volume keep
// working.
// Method: a 64 MiB sparse volume file on a 4 MiB tmpfs; qemu-io writes
// 8 MiB into it (the tmpfs fills) and must print "No space left on device";
// a second volume elsewhere is written and read back right after, the
// full volume still answers reads, and after freeing room it takes writes
// again.

import { truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gate, mountTmpfs, type Mount } from '../lib/system';
import { startNbdFixture, type NbdFixture } from '../lib/nbd-fixture';
import { run, runOk } from '../lib/nbd-tools';

const suite = gate(test, 'nbd/full-filesystem', { root: true, tools: ['qemu-io'] });
const SMALL_FS_BYTES = 4 * 1024 * 1024;
const VOLUME_BYTES = 64 * 1024 * 1024;
const WRITE_BYTES = 8 * 1024 * 1024;
const MIB = 1024 * 1024;

let fixture: NbdFixture;
let small: Mount;

suite.before(async () => {
  fixture = await startNbdFixture();
  small = mountTmpfs(SMALL_FS_BYTES);
  const full_path = path.join(small.path, 'full.img');
  writeFileSync(full_path, '');
  truncateSync(full_path, VOLUME_BYTES);
  await fixture.engine.attach(full_path, { name: 'full' });
  await fixture.attach('other', VOLUME_BYTES);
});

suite.after(async () => {
  await fixture?.close();
  small?.unmount();
});

suite.test('a full filesystem under a volume is ENOSPC to the client', async () => {
  const result = await run('qemu-io', ['-f', 'raw', '-c', `write -P 7 0 ${WRITE_BYTES}`, fixture.uri('full')]);
  assert.match(result.stdout + result.stderr, /No space left on device/, `qemu-io said: ${result.stdout}${result.stderr}`);
  assert.not.match(result.stdout + result.stderr, /Input\/output error/);
});

suite.test('the other volume and the full one keep serving', async () => {
  const other = await runOk('qemu-io', ['-f', 'raw', '-c', `write -P 9 ${MIB} ${MIB}`, '-c', `read -P 9 ${MIB} ${MIB}`, fixture.uri('other')]);
  assert.not.match(other, /error|failed/i);
  const full = await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 7 0 4096', fixture.uri('full')]);
  assert.not.match(full, /error|failed/i, 'what did land reads back');
  assert.is(fixture.engine.volumes().length, 2);
});

suite.test('room freed by a discard takes writes again', async () => {
  const out = await runOk('qemu-io', ['-f', 'raw', '-c', `discard 0 ${WRITE_BYTES}`, '-c', `write -P 5 0 ${MIB}`, '-c', `read -P 5 0 ${MIB}`, fixture.uri('full')]);
  assert.not.match(out, /error|failed/i, out);
});

test.run();

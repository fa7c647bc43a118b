// Goal: readcbtmap of a large map (2 MiB: a 1 TiB volume at the default
// tracking-block rules) streams in pieces into the file, shows progress
// on a terminal (stderr) and nothing anywhere else, and leaves no partial
// file when it fails.
// Method: a spawned daemon with a sparse 1 TiB file attached; the CLI run
// once with pipes and once under `script` (util-linux), which gives it a
// pseudo-terminal; the progress line is looked for in the terminal output.

import { readdirSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gate } from '../lib/system';
import { CLI_PATH, disposeDaemon, hardTimeout, keyValues, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';

const TiB = 2 ** 40;
const MAP_BYTES = 2 * 1024 * 1024;
let daemon: TestDaemon;

hardTimeout(120_000, 'cli/readcbtmap');

/** script(1) (Debian: bsdutils, essential) gives the CLI a pseudo-terminal. */
const on_terminal = gate(test, 'cli/readcbtmap progress on a terminal', { tools: ['script'] });

test.before(async () => {
  daemon = await startDaemon('cli-readcbtmap', { params: [] });
  sparseFile(daemon.file('big.img'), TiB);
  await daemon.ok(['attach', '-d', 'big.img', '--name', 'big']);
});

test.after(async () => {
  await disposeDaemon(daemon);
});

test('a 2 MiB map through pipes: the whole map in the file, nothing on stdout or stderr', async () => {
  const info = keyValues(await daemon.ok(['cbtinfo', '-d', 'big']));
  assert.is(Number(info.block_count), MAP_BYTES, '1 TiB at 512 KiB blocks');
  const result = await daemon.cli(['readcbtmap', '-d', 'big', '-f', 'big.cbt']);
  assert.is(result.code, 0, result.stderr);
  assert.is(result.stdout, '');
  assert.is(result.stderr, '', 'no progress when stderr is not a terminal');
  assert.is(statSync(daemon.file('big.cbt')).size, MAP_BYTES);
  const json = JSON.parse(await daemon.ok(['readcbtmap', '-d', 'big', '-f', 'big2.cbt', '-j']));
  assert.is(json.block_count, MAP_BYTES);
});

on_terminal.test('on a terminal: a progress line on stderr that ends at 100% and is erased', async () => {
  const command = [process.execPath, CLI_PATH, '--socket', daemon.socket, 'readcbtmap', '-d', 'big', '-f', daemon.file('tty.cbt')]
    .map((arg) => `'${arg}'`).join(' ');
  // Blocking is fine here: the daemon is another process.
  const result = execFileSync('script', ['-qfec', command, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
  assert.match(result, /\rreadcbtmap: +\d+% \([\d.]+ [KM]iB of 2\.0 MiB\)/);
  assert.match(result, /readcbtmap: 100% \(2\.0 MiB of 2\.0 MiB\)/);
  assert.match(result, /\r\u001b\[K$/, 'the line is erased at the end');
  assert.is(statSync(daemon.file('tty.cbt')).size, MAP_BYTES);
});

test('a failed read leaves no partial file', async () => {
  const result = await daemon.cli(['readcbtmap', '-d', 'nope', '-f', 'nope.cbt']);
  assert.is(result.code, 1);
  assert.match(result.stderr, /^ublksnap: readcbtmap: no attached volume nope \(ESRCH\)\n$/);
  assert.equal(readdirSync(daemon.dir).filter((name) => name.includes('nope') || name.includes('partial')), []);
});

test.run();

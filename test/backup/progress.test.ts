// Goal: on a terminal, `ublksnap backup` shows its progress — percent,
// bytes, rate and ETA — on one self-overwriting stderr line, and erases it
// before the summary; without a terminal it shows none.
// Method: run the CLI inside `script` (util-linux), which gives it a
// pseudo-terminal, slowed by --max-rate so the rate and ETA appear; then
// the same backup with pipes.

import { writeFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cli, cliOk } from '../lib/backup-fixture';
import { CLI_PATH, disposeDaemon, hardTimeout, startDaemon, type TestDaemon } from '../lib/daemon';
import { runOk } from '../lib/nbd-tools';
import { randomBytes, seededRandom } from '../lib/random';
import { gate } from '../lib/system';
import { testSeed } from '../lib/workers';

const suite = gate(test, 'backup/progress', { tools: ['script'] });
hardTimeout(120_000, 'backup/progress');

const MiB = 1 << 20;
let daemon: TestDaemon;

suite.before(async () => {
  daemon = await startDaemon('backup-progress');
  writeFileSync(daemon.file('vol.img'), randomBytes(seededRandom(testSeed('backup progress volume')), 8 * MiB));
  await cliOk(daemon, ['attach', '-d', daemon.file('vol.img'), '--name', 'vol']);
});

suite.after(async () => {
  await disposeDaemon(daemon);
});

suite.test('a terminal shows percent, bytes, rate and ETA, then the summary', async () => {
  const command = `${process.execPath} ${CLI_PATH} --socket ${daemon.socket} backup -d vol --dir ${daemon.file('tty')} --max-rate 4M`;
  const output = await runOk('script', ['-qec', command, '/dev/null'], { cwd: daemon.dir, timeout_ms: 60_000 });
  assert.match(output, /\rbackup: +\d+% \(\d[\d.]* [KMG]?i?B of 8\.0 MiB, \d[\d.]* [KMG]?i?B\/s, ETA \d+:\d\d\)\u001b\[K/);
  assert.match(output, /\r\u001b\[Kseq=1\r?\n/, 'the progress line is erased before the summary');
});

suite.test('pipes show no progress', async () => {
  const result = await cli(daemon, ['backup', '-d', 'vol', '--dir', daemon.file('pipe'), '--max-rate', '4M']);
  assert.is(result.code, 0, result.stderr);
  assert.not.match(result.stderr, /%|ETA/);
  assert.match(result.stdout, /^seq=1\n/);
});

test.run();

// Goal: `ublksnap shutdown` stops the daemon as SIGTERM does — the reply
// first, then every shutdown step, exit 0, no socket or pid file left —
// with or without --restart; `ublksnap cleanup` answers on a machine with
// no ublk (nothing can be left behind) instead of failing.
// Method: spawned `ublksnap daemon` processes in scratch dirs, the real CLI.
// (The ublk side of both, devices handed over and taken back, runs in the
// guest: test/guest/ublk-recovery.guest.ts.)

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { disposeDaemon, exists, hardTimeout, sparseFile, startDaemon } from '../lib/daemon';

hardTimeout(120_000, 'daemon/shutdown');

for (const restart of [false, true]) {
  const command = restart ? ['shutdown', '--restart'] : ['shutdown'];
  test(`ublksnap ${command.join(' ')}: the daemon exits 0 and leaves no socket or pid file`, async () => {
    const daemon = await startDaemon(`shutdown-${restart ? 'restart' : 'plain'}`);
    try {
      await daemon.ok(['attach', '-d', sparseFile(daemon.file('vol.img'), 16 << 20)]);
      const reply = await daemon.cli(['-j', ...command]);
      assert.is(reply.code, 0, reply.stderr);
      assert.equal(JSON.parse(reply.stdout), {});
      const exit = await daemon.exited(command.join(' '));
      assert.equal(exit, { code: 0, signal: null }, daemon.logs);
      assert.ok(!exists(daemon.socket), 'the control socket is left behind');
      assert.ok(!exists(daemon.pid_file), 'the pid file is left behind');
      assert.match(daemon.logs, restart ? /"restarting":true,"msg":"daemon stopping"/ : /"restarting":false,"msg":"daemon stopping"/);
    } finally {
      await disposeDaemon(daemon);
    }
  });
}

test('ublksnap cleanup without ublk in the kernel: nothing left behind, exit 0', async () => {
  const daemon = await startDaemon('cleanup-no-ublk');
  try {
    assert.is(await daemon.ok(['cleanup', '--dry-run']), '');
    assert.equal(JSON.parse(await daemon.ok(['-j', 'cleanup'])), { leftovers: [] });
    const bad = await daemon.cli(['cleanup', '--now']);
    assert.is.not(bad.code, 0, 'an unknown option is refused');
    assert.match(bad.stderr, /--now/);
  } finally {
    await disposeDaemon(daemon);
  }
});

test.run();

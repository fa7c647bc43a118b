// Goal: the switch that picks where a ublk queue's io_uring lives
// (UBLKSNAP_UBLK_HOSTING, read by the ublk session in its I/O actor) takes
// 'actor' and 'thread', defaults when unset or empty, and refuses anything
// else with EINVAL naming the variable and the accepted values — a typo
// must not silently pick a hosting.
// The daemon checks it at start, on any machine (ublk or not): a bad value
// fails the start with that one line.
// Method: ublkHostingFrom on hand-made environments; a real daemon process.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { UblksnapError } from '../../src/shared/errors';
import { UBLK_HOSTING_DEFAULT, UBLK_HOSTING_ENV, ublkHostingFrom } from '../../src/frontends/ublk/session';
import { TestDaemon, removeScratchDir, scratchDir } from '../lib/daemon';

const hosting = suite('ublk queue hosting switch');

hosting('actor and thread are taken as given', () => {
  assert.is(ublkHostingFrom({ [UBLK_HOSTING_ENV]: 'actor' }), 'actor');
  assert.is(ublkHostingFrom({ [UBLK_HOSTING_ENV]: 'thread' }), 'thread');
});

hosting('unset or empty gives the default', () => {
  assert.is(ublkHostingFrom({}), UBLK_HOSTING_DEFAULT);
  assert.is(ublkHostingFrom({ [UBLK_HOSTING_ENV]: '' }), UBLK_HOSTING_DEFAULT);
});

hosting('anything else is EINVAL naming the variable and the choices', () => {
  for (const value of ['Thread', 'threads', ' actor', '1']) {
    try {
      ublkHostingFrom({ [UBLK_HOSTING_ENV]: value });
      assert.unreachable(`${value} accepted`);
    } catch (error) {
      assert.instance(error, UblksnapError);
      assert.is((error as UblksnapError).code, 'EINVAL');
      assert.match((error as Error).message, `${UBLK_HOSTING_ENV}=${value}`);
      assert.match((error as Error).message, 'actor, thread');
    }
  }
});

hosting('a daemon started with a bad value refuses to start, naming it', async () => {
  const daemon = new TestDaemon(scratchDir('ublk-hosting'));
  try {
    let failure = '';
    await daemon.start({ env: { [UBLK_HOSTING_ENV]: 'threads' } }).catch((error: unknown) => { failure = (error as Error).message; });
    assert.match(failure, 'daemon exited during start');
    assert.match(failure, `${UBLK_HOSTING_ENV}=threads: expected one of actor, thread (EINVAL)`);
  } finally {
    if (daemon.running) await daemon.stop('SIGKILL');
    removeScratchDir(daemon.dir);
  }
});

hosting.run();

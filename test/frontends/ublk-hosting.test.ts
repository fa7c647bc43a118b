// Goal: the switch that picks where a ublk queue's io_uring lives
// (UBLKSNAP_UBLK_HOSTING, read by the ublk session in its I/O actor) takes
// 'actor' and 'thread', defaults when unset or empty, and refuses anything
// else with EINVAL naming the variable and the accepted values — a typo
// must not silently pick a hosting.
// Method: ublkHostingFrom on hand-made environments.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { UblksnapError } from '../../src/shared/errors';
import { UBLK_HOSTING_DEFAULT, UBLK_HOSTING_ENV, ublkHostingFrom } from '../../src/frontends/ublk/session';

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

hosting.run();

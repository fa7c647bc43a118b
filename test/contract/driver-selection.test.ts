// Goal: the contract suite's choice of drivers is honest: UBLKSNAP_CONTRACT_DRIVERS
// picks drivers by name (an unknown one is a clear error), a driver asked
// for by name never skips, CI skips only a driver whose scenarios run
// elsewhere, and the ublk driver claims the guest runs its scenarios only
// while the guest programs exist.
// Method: the pure decisions (drivers/index.ts selectedDrivers and
// unavailableOutcome, drivers/ublk.ts ublkUnavailability) on every case,
// with real files for "the guest program exists"; and the ublk driver's
// own answer on this machine: unavailable on a kernel without ublk, naming
// the compiled guest programs.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DRIVERS, DRIVER_SELECTION_ENV, selectedDrivers, unavailableOutcome } from './drivers';
import { GUEST_PROGRAMS, ublkDriver, ublkUnavailability } from './drivers/ublk';

test('without the variable every driver runs, and none is required', () => {
  const selection = selectedDrivers({});
  assert.equal(selection.drivers.map((d) => d.name), DRIVERS.map((d) => d.name));
  assert.ok(selection.drivers.some((d) => d.name === 'ublk'), 'the ublk driver is listed');
  assert.is(selection.required, false);
});

test('the variable picks drivers by name, in its order, and requires them', () => {
  const selection = selectedDrivers({ [DRIVER_SELECTION_ENV]: ' ublk, nbd ' });
  assert.equal(selection.drivers.map((d) => d.name), ['ublk', 'nbd']);
  assert.is(selection.required, true);
});

test('an unknown driver name is an error naming the known ones', () => {
  assert.throws(() => selectedDrivers({ [DRIVER_SELECTION_ENV]: 'ublk,nope' }),
    (error: Error) => error.message.includes('no driver "nope"') && error.message.includes('in-process, nbd, ublk'));
});

test('a driver asked for by name fails rather than skips, in CI or not', () => {
  for (const ci of [false, true]) {
    const outcome = unavailableOutcome('s via ublk', { reason: 'no ublk', covered_by: 'the guest' }, true, ci);
    assert.ok('fail' in outcome && outcome.fail.includes('asked for by name'), JSON.stringify(outcome));
  }
});

test('CI skips a driver only when its scenarios run elsewhere; outside CI it skips with the reason', () => {
  const covered = unavailableOutcome('s via ublk', { reason: 'no ublk', covered_by: 'the guest runs them' }, false, true);
  assert.ok('skip' in covered && covered.skip.includes('no ublk') && covered.skip.includes('the guest runs them'), JSON.stringify(covered));
  const uncovered = unavailableOutcome('s via ublk', { reason: 'no ublk', covered_by: null }, false, true);
  assert.ok('fail' in uncovered && uncovered.fail.includes('CI must not skip'), JSON.stringify(uncovered));
  const local = unavailableOutcome('s via ublk', { reason: 'no ublk', covered_by: null }, false, false);
  assert.ok('skip' in local && local.skip.includes('no ublk'), JSON.stringify(local));
});

test('the ublk driver claims the guest only while every guest program exists', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ublksnap-driver-selection-'));
  try {
    const programs = [path.join(dir, 'a.guest.js'), path.join(dir, 'b.guest.js')];
    assert.is(ublkUnavailability('no ublk', programs).covered_by, null, 'none exists');
    writeFileSync(programs[0]!, '');
    assert.is(ublkUnavailability('no ublk', programs).covered_by, null, 'one of two exists');
    writeFileSync(programs[1]!, '');
    const both = ublkUnavailability('no ublk', programs);
    assert.ok(both.covered_by?.includes('a.guest') && both.covered_by.includes('b.guest'), String(both.covered_by));
    assert.is(both.reason, 'no ublk');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('on this machine: the ublk driver runs where /dev/ublk-control is, else says why and names the guest programs', () => {
  const why_not = ublkDriver.unavailable();
  if (existsSync('/dev/ublk-control') && process.getuid?.() === 0) {
    assert.is(why_not, null, 'ublk is here: the driver must run');
    return;
  }
  assert.ok(why_not !== null, 'no ublk here: the driver says so');
  assert.ok(why_not.reason.length > 0);
  for (const program of GUEST_PROGRAMS) assert.ok(existsSync(program), `${program} is compiled`);
  assert.ok(why_not.covered_by?.includes('contract-ublk.guest') && why_not.covered_by.includes('contract-ublk-errors.guest') && why_not.covered_by.includes('contract-ublk-patterns.guest'),
    String(why_not.covered_by));
});

test.run();

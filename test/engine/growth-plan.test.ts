// Goal: the growth plan (engine/growth-plan.ts) starts as blksnap does
// (grow by the minimum at half of it), then follows the measured rates: a
// fast writer gets larger steps, started early enough that the step is
// fallocated before the room left runs out; a writer that stops lets the
// plan fall back towards the minimum; measurements too short to mean
// anything are ignored.
// Method: the plan fed with synthetic clocks and fill levels.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GrowthPlan } from '../../src/engine/growth-plan';

const MINIMUM_SECTORS = 2048;

test('before any measurement: step = minimum, low water = half of it', () => {
  const plan = new GrowthPlan(MINIMUM_SECTORS);
  assert.is(plan.step_sectors(), MINIMUM_SECTORS);
  assert.is(plan.low_water_sectors(), MINIMUM_SECTORS / 2);
  plan.sampleFill(1000, 0);
  assert.is(plan.step_sectors(), MINIMUM_SECTORS, 'one sample is no rate yet');
});

test('a fast writer: larger steps, started when the room left lasts twice the step', () => {
  const plan = new GrowthPlan(MINIMUM_SECTORS);
  plan.sampleFill(0, 0);
  plan.sampleFill(100, 100_000); // 1000 sectors per ms (~500 MB/s)
  assert.is(plan.fill_rate_sectors_per_ms, 1000);
  assert.is(plan.step_sectors(), 2_000_000, 'two seconds of writes');
  assert.is(plan.low_water_sectors(), MINIMUM_SECTORS / 2, 'no growth speed measured yet');
  plan.sampleGrowth(1_000_000, 250); // 4000 sectors per ms
  // The next step takes 2e6 / 4000 = 500 ms; at 1000 sectors/ms that is 5e5 sectors, twice over.
  assert.is(plan.low_water_sectors(), 1_000_000);
});

test('a writer that stops: the rate decays, the plan returns towards the minimum', () => {
  const plan = new GrowthPlan(MINIMUM_SECTORS);
  plan.sampleFill(0, 0);
  plan.sampleFill(100, 100_000);
  plan.sampleGrowth(1_000_000, 250);
  let time = 100;
  for (let i = 0; i < 30; i += 1) plan.sampleFill((time += 1000), 100_000);
  assert.ok(plan.step_sectors() <= MINIMUM_SECTORS * 1.01, `step ${plan.step_sectors()}`);
  assert.ok(plan.low_water_sectors() <= MINIMUM_SECTORS, `low water ${plan.low_water_sectors()}`);
});

test('measurements over a few milliseconds are ignored', () => {
  const plan = new GrowthPlan(MINIMUM_SECTORS);
  plan.sampleFill(0, 0);
  plan.sampleFill(1, 1_000_000);
  assert.is(plan.fill_rate_sectors_per_ms, 0);
  plan.sampleGrowth(1_000_000, 1);
  plan.sampleFill(1000, 2000);
  assert.is(plan.low_water_sectors(), MINIMUM_SECTORS / 2, 'no growth speed from a 1 ms step');
  assert.throws(() => new GrowthPlan(0), /bad growth minimum/);
});

test.run();

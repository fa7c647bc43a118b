// Goal: the arithmetic behind the PASS/FAIL lines is right — per-round
// ratios pair the two systems of the same round only, the median of an even
// count is the mean of the middle two, a goal passes only when every one of
// its comparisons does and quotes the worst, and the system order rotates.
// Method: hand-made samples whose ratios are known.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { median } from '../../bench/lib';
import { evaluate, roundRatios, verdictLine, verdicts, type Comparison, type Sample } from '../../bench/nbd/goals';
import { GOALS, defaultChunkBytes, goalComparisons, rotate, xfsCrossServerLine } from '../../bench/nbd/suite';

function sample(system: string, workload: string, round: number, value: number): Sample {
  return { system, workload, round, value, server_cpu_seconds: 0 };
}

const ours_vs_theirs = (workload: string, target: number, goal = 'g'): Comparison => ({
  goal, label: workload, target, numerator: { system: 'ours', workload }, denominator: { system: 'theirs', workload },
});

const math = suite('ratios and medians');

math('median: odd and even counts, input left unsorted', () => {
  const values = [3, 1, 2];
  assert.is(median(values), 2);
  assert.equal(values, [3, 1, 2]);
  assert.is(median([4, 1, 3, 2]), 2.5);
});

math('per-round ratios pair the same round; a round missing a side is left out', () => {
  const samples = [
    sample('ours', 'w', 0, 100), sample('theirs', 'w', 0, 50),
    sample('ours', 'w', 1, 90), sample('theirs', 'w', 1, 100),
    sample('ours', 'w', 2, 70), // theirs failed in round 2
    sample('theirs', 'w', 3, 80), sample('ours', 'w', 3, 40),
  ];
  assert.equal(roundRatios(samples, ours_vs_theirs('w', 1)), [2, 0.9, 0.5]);
  const result = evaluate(samples, ours_vs_theirs('w', 1));
  assert.is(result.median, 0.9);
  assert.is(result.pass, false);
});

math('a workload measured several times in a round counts with its median: one stalled write does not decide the round', () => {
  const samples = [
    sample('ours', 'w', 0, 100), sample('ours', 'w', 0, 10), sample('ours', 'w', 0, 90), sample('theirs', 'w', 0, 100),
    sample('ours', 'w', 1, 80), sample('theirs', 'w', 1, 100), sample('theirs', 'w', 1, 20), sample('theirs', 'w', 1, 100),
  ];
  assert.equal(roundRatios(samples, ours_vs_theirs('w', 1)), [0.9, 0.8]);
});

math('two workloads measured in pairs: the round\'s ratio is the median of the pairs\' ratios, not the ratio of the medians', () => {
  const paired = (system: string, pair: number, value: number): Sample => ({ ...sample(system, 'w', 0, value), pair });
  const samples = [
    paired('ours', 0, 2535), paired('ours', 1, 2909), paired('ours', 2, 2000),
    paired('theirs', 0, 2535), paired('theirs', 1, 3103), paired('theirs', 2, 3094),
  ];
  assert.equal(roundRatios(samples, ours_vs_theirs('w', 1)), [2909 / 3103]);
  const unpaired = samples.map(({ pair: _, ...rest }) => rest);
  assert.equal(roundRatios(unpaired, ours_vs_theirs('w', 1)), [2535 / 3094]);
});

math('a goal passes only if every comparison passes, and quotes the worst median', () => {
  const samples = [
    sample('ours', 'a', 0, 3), sample('theirs', 'a', 0, 1),
    sample('ours', 'b', 0, 1.5), sample('theirs', 'b', 0, 1),
  ];
  const [pass] = verdicts(samples, [ours_vs_theirs('a', 1), ours_vs_theirs('b', 1)]);
  assert.is(pass!.pass, true);
  assert.is(pass!.ratio, 1.5);
  assert.is(pass!.worst, 'b');
  assert.is(verdictLine(pass!), 'PASS g: 1.50× (worst: b; a 3.00×)');
  const [fail] = verdicts(samples, [ours_vs_theirs('a', 2), ours_vs_theirs('b', 2)]);
  assert.is(fail!.pass, false);
  assert.match(verdictLine(fail!), /^FAIL g: 1\.50×/);
});

math('a goal with a comparison never measured fails, saying n/a', () => {
  const samples = [sample('ours', 'a', 0, 3), sample('theirs', 'a', 0, 1)];
  const [verdict] = verdicts(samples, [ours_vs_theirs('a', 1), ours_vs_theirs('missing', 1)]);
  assert.is(verdict!.pass, false);
  assert.match(verdictLine(verdict!), /missing n\/a/);
});

const plan = suite('the plan of the run');

plan('rotation: each round starts one system later', () => {
  assert.equal(rotate(['a', 'b', 'c'], 0), ['a', 'b', 'c']);
  assert.equal(rotate(['a', 'b', 'c'], 1), ['b', 'c', 'a']);
  assert.equal(rotate(['a', 'b', 'c'], 4), ['b', 'c', 'a']);
  assert.equal(rotate([], 3), []);
});

plan('the default chunk of a 1 GiB volume is 256 KiB (chunk_minimum_shift 18)', () => {
  assert.is(defaultChunkBytes(2 ** 30), 256 * 1024);
});

plan('the comparisons cover the four docs/design.md §10 goals with their targets', () => {
  const comparisons = goalComparisons([{ id: 'ublksnap-snap', copy_unit_bytes: 262144 }, { id: 'ublksnap-snap-64k', copy_unit_bytes: 65536 }]);
  const targets = Object.fromEntries(comparisons.map((c) => [c.goal, c.target]));
  assert.equal(targets, { [GOALS.plain]: 0.8, [GOALS.versus_qemu]: 2, [GOALS.versus_self]: 0.5, [GOALS.image_reads]: 1 });
  const stride = comparisons.find((c) => c.goal === GOALS.versus_qemu && c.label.includes('copy unit, 256'))!;
  assert.equal(stride.numerator, { system: 'ublksnap-snap', workload: 'stride-256k' });
  assert.equal(stride.denominator, { system: 'qsd-fleece', workload: 'stride-64k' });
  assert.is(comparisons.filter((c) => c.goal === GOALS.image_reads).length, 4);
});

plan('the -xfs snapshot systems are judged against their own write before take and QEMU on the same XFS, and only by the XFS goals', () => {
  const comparisons = goalComparisons([
    { id: 'ublksnap-snap', copy_unit_bytes: 262144 },
    { id: 'ublksnap-snap-64k-xfs', copy_unit_bytes: 65536, on_xfs: true },
  ]);
  const xfs = comparisons.filter((c) => c.numerator.system === 'ublksnap-snap-64k-xfs');
  assert.equal(xfs.map((c) => [c.goal, c.target, c.denominator.system, c.numerator.workload, c.denominator.workload]), [
    [GOALS.xfs_versus_self, 0.9, 'ublksnap-snap-64k-xfs', 'seq-write', 'seq-write-before-take'],
    [GOALS.xfs_versus_qemu, 3, 'qsd-fleece-xfs', 'seq-write', 'seq-write'],
  ]);
  assert.not.ok(comparisons.some((c) => c.goal.startsWith('XFS') && !c.numerator.system.endsWith('-xfs')), 'tmpfs systems stay out of the XFS goals');
  assert.not.ok(comparisons.some((c) => c.denominator.system.endsWith('-xfs') !== c.numerator.system.endsWith('-xfs')
    && c.goal !== GOALS.plain), 'no comparison crosses filesystems');
});

plan('the cross-server XFS line quotes first touch ÷ the no-snapshot system per round, and is empty without it', () => {
  const systems = [{ id: 'ublksnap-snap-xfs', copy_unit_bytes: 262144, on_xfs: true }];
  const sample = (system: string, round: number, value: number): Sample => ({ system, workload: 'seq-write', round, value, server_cpu_seconds: 0 });
  const samples = [sample('ublksnap-snap-xfs', 0, 80), sample('ublksnap-xfs', 0, 100), sample('ublksnap-snap-xfs', 1, 90), sample('ublksnap-xfs', 1, 100)];
  assert.match(xfsCrossServerLine(samples, systems), '256 KiB chunk 0.80 0.90 (median 0.85×)');
  assert.is(xfsCrossServerLine(samples.filter((s) => s.system !== 'ublksnap-xfs'), systems), '');
});

math.run();
plan.run();

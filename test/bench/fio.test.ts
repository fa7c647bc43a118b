// Goal: the harness asks fio for exactly the workloads of issue 6 and reads
// back the right figures: the stride job does one pass (one write per copy
// unit, not io_size wrapped around), and the parser finds the JSON behind
// the nbd engine's "connected" line and rejects failed jobs.
// Method: pure functions on built jobs and on a fio 3.33 JSON report cut
// down to the fields we read (plus neighbours we must not confuse).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { expectedIos, fioArgs, parseFioJson } from '../../bench/nbd/fio';
import { randWriteJob, seqWriteJob, strideJob } from '../../bench/nbd/systems';
import { loadArgs } from '../../bench/nbd/take-latency';

const GiB = 2 ** 30;
const URI = 'nbd+unix:///bench?socket=/tmp/x.sock';

function report(overrides: { error?: number; write?: Record<string, unknown> } = {}): string {
  const side = (io_bytes: number) => ({
    io_bytes, io_kbytes: io_bytes / 1024, bw_bytes: 0, bw: 0, iops: 0, runtime: 0, total_ios: 0,
    clat_ns: { min: 0, max: 0, percentile: { '1.000000': 1 } },
  });
  return `fio: connected to NBD server\n${JSON.stringify({
    'fio version': 'fio-3.33',
    jobs: [{
      jobname: 'bench', error: overrides.error ?? 0, usr_cpu: 5.5, sys_cpu: 17.25,
      read: side(0),
      write: {
        ...side(268435456), bw_bytes: 886046720, iops: 844.9, runtime: 303, total_ios: 256,
        clat_ns: { percentile: { '50.000000': 16318464, '99.000000': 44826624 } }, ...overrides.write,
      },
      trim: side(0),
    }],
  }, null, 2)}\n`;
}

const args = suite('fio job arguments');

args('sequential write: 1 MiB blocks, QD16, the whole device, JSON to a file', () => {
  const list = fioArgs(URI, seqWriteJob(GiB), '/tmp/out.json');
  for (const expected of ['--ioengine=nbd', `--uri=${URI}`, '--rw=write', '--bs=1048576', '--iodepth=16', `--size=${GiB}`, '--output=/tmp/out.json']) {
    assert.ok(list.includes(expected), `missing ${expected} in ${list.join(' ')}`);
  }
  assert.is(expectedIos(seqWriteJob(GiB)), 1024);
});

args('random write: 65 536 I/Os of 4 KiB at QD32 over the device', () => {
  const job = randWriteJob(GiB, 65_536 * 4096);
  const list = fioArgs(URI, job, '/tmp/out.json');
  assert.ok(list.includes('--rw=randwrite') && list.includes('--bs=4096') && list.includes('--iodepth=32'));
  assert.ok(list.includes(`--io_size=${65_536 * 4096}`));
  assert.is(expectedIos(job), 65_536);
});

args('stride: a hole of stride − block after each write, one pass over the device', () => {
  const job = strideJob(GiB, 65_536);
  const list = fioArgs(URI, job, '/tmp/out.json');
  assert.ok(list.includes(`--rw=write:${65_536 - 4096}`), list.join(' '));
  assert.is(expectedIos(job), GiB / 65_536);
  assert.ok(list.includes(`--io_size=${(GiB / 65_536) * 4096}`));
});

args('nonsense jobs are refused', () => {
  assert.throws(() => fioArgs(URI, { pattern: 'stride', block_bytes: 4096, iodepth: 1, size_bytes: GiB, stride_bytes: 4096 }, 'x'), /stride/);
  assert.throws(() => fioArgs(URI, { pattern: 'write', block_bytes: 3000, iodepth: 1, size_bytes: GiB }, 'x'), /multiple/);
});

args('take-latency load: global options first, then one job and URI per volume, time-based', () => {
  const list = loadArgs(['nbd+unix:///a?socket=/s', 'nbd+unix:///b?socket=/s'], 32 * 2 ** 20, 7);
  const first_name = list.findIndex((arg) => arg.startsWith('--name='));
  for (const global of ['--ioengine=nbd', '--rw=randwrite', '--time_based', '--runtime=7', `--size=${32 * 2 ** 20}`]) {
    const at = list.indexOf(global);
    assert.ok(at >= 0 && at < first_name, `${global} must come before the first job`);
  }
  assert.equal(list.slice(first_name), ['--name=volume0', '--uri=nbd+unix:///a?socket=/s', '--name=volume1', '--uri=nbd+unix:///b?socket=/s']);
});

const parse = suite('fio JSON');

parse('the write side: bytes, I/Os, runtime, bandwidth, IOPS, latency percentiles, fio CPU', () => {
  const result = parseFioJson(report());
  assert.equal(result, {
    io_bytes: 268435456, ios: 256, runtime_ms: 303, bytes_per_second: 886046720, iops: 844.9,
    clat_p50_us: 16318.464, clat_p99_us: 44826.624, client_cpu_percent: 22.75, client_system_percent: 17.25,
  });
});

parse('a failed job, a job with no writes and text without JSON are errors', () => {
  assert.throws(() => parseFioJson(report({ error: 5 })), /error 5/);
  assert.throws(() => parseFioJson(report({ write: { io_bytes: 0 } })), /no writes/);
  assert.throws(() => parseFioJson('fio: connection refused\n'), /no JSON/);
});

args.run();
parse.run();

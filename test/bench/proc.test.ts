// Goal: the CPU and memory charged to a server are read right from /proc —
// utime + stime even when comm holds spaces and parentheses, VmHWM in
// bytes — and the live readers work on this very process.
// Method: stat and status lines written by hand, then our own pid after
// burning a little CPU.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cpuByThreadName, cpuSeconds, parseStatTicks, parseStatusBytes, peakRssBytes, threadCpu } from '../../bench/nbd/proc';

const proc = suite('/proc readers');

proc('utime + stime from a stat line whose comm has spaces and parentheses', () => {
  // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
  const line = '4242 (qemu (x) d) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 123 456 789\n';
  assert.equal(parseStatTicks(line), { comm: 'qemu (x) d', ticks: 325, system_ticks: 75 });
  assert.throws(() => parseStatTicks('garbage'), /not a \/proc stat line/);
});

proc('VmHWM in bytes; a missing field is an error', () => {
  const status = 'Name:\tnode\nVmPeak:\t 1000 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n';
  assert.is(parseStatusBytes(status, 'VmHWM'), 2048 * 1024);
  assert.throws(() => parseStatusBytes(status, 'VmSwap'), /no VmSwap/);
});

proc('this process: CPU seconds grow with work, peak RSS is real, threads are listed', () => {
  const before = cpuSeconds(process.pid);
  const until = Date.now() + 150;
  let spin = 0;
  while (Date.now() < until) spin += 1;
  assert.ok(spin > 0);
  assert.ok(cpuSeconds(process.pid) > before, 'CPU seconds did not grow');
  assert.ok(peakRssBytes(process.pid) > 10 * 1024 * 1024);
  const threads = threadCpu(process.pid);
  assert.ok(threads.some((t) => t.tid === process.pid), 'the main thread is a task of its process');
});

proc('CPU per thread name: main by its tid, others by comm, a new thread from zero, one gone left out', () => {
  const before = [
    { tid: 10, comm: 'node', seconds: 1, system_seconds: 0.5 },
    { tid: 11, comm: 'ublksnap-cow', seconds: 2, system_seconds: 1 },
    { tid: 12, comm: 'ublksnap-cow', seconds: 3, system_seconds: 1 },
    { tid: 13, comm: 'node', seconds: 4, system_seconds: 0 },
  ];
  const after = [
    { tid: 10, comm: 'node', seconds: 1.25, system_seconds: 0.5 },
    { tid: 11, comm: 'ublksnap-cow', seconds: 2.5, system_seconds: 1.25 },
    { tid: 12, comm: 'ublksnap-cow', seconds: 3.25, system_seconds: 1.25 },
    { tid: 14, comm: 'node', seconds: 0.5, system_seconds: 0.25 },
  ];
  assert.equal(cpuByThreadName(10, before, after), {
    main: { seconds: 0.25, system_seconds: 0 },
    'ublksnap-cow': { seconds: 0.75, system_seconds: 0.5 },
    node: { seconds: 0.5, system_seconds: 0.25 },
  });
});

proc.run();

// Goal: the report counts the sequential writes in which fio spent over
// 0.5 s of system time per GiB, per group (no snapshot, before take, first
// touch), and says nothing when no sample carries fio's figures.
// Method: samples made by hand around the threshold.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { clientStallLine, isClientStall } from '../../bench/nbd/client-stalls';
import type { SampleRecord } from '../../bench/nbd/systems';

const GIB = 1024 ** 3;

function sample(system: string, workload: string, client_system_seconds: number | undefined, bytes = GIB): SampleRecord {
  return { system, workload, round: 0, unit: 'MiB/s', value: 1, server_cpu_seconds: 0, bytes, ios: 1, seconds: 1, client_system_seconds };
}

test('a stall is fio over 0.5 s of system time per GiB written', () => {
  assert.is(isClientStall(sample('a', 'seq-write', 0.49)), false);
  assert.is(isClientStall(sample('a', 'seq-write', 0.51)), true);
  assert.is(isClientStall(sample('a', 'seq-write', 0.3, GIB / 2)), true, '0.6 s per GiB');
  assert.is(isClientStall(sample('a', 'seq-write', undefined)), false);
});

test('counted per group: no snapshot, before take, first touch', () => {
  const kinds = new Map<string, 'plain' | 'snapshot'>([['plain', 'plain'], ['snap', 'snapshot']]);
  const samples = [
    sample('plain', 'seq-write', 0.2), sample('plain', 'seq-write', 0.9),
    sample('snap', 'seq-write-before-take', 0.2),
    sample('snap', 'seq-write', 1.2), sample('snap', 'seq-write', 0.7), sample('snap', 'seq-write', 0.2),
    sample('snap', 'rand-write', 3),
  ];
  assert.is(clientStallLine(samples, kinds),
    'Client stalls (fio over 0.5 s of system time per GiB written): seq writes with no snapshot 1 of 2, writes before take 0 of 1, seq first touches 2 of 3.');
  assert.is(clientStallLine(samples.map((s) => ({ ...s, client_system_seconds: undefined })), kinds), '');
});

test.run();

// Goal: the QEMU copy-method probe reads strace -c's summary right: the call
// count of each system call by name, the header, separator and total lines
// skipped, a row with an errors column or without one alike.
// Method: a summary as strace 6.1 prints it (the probe's own run is the
// bench's: it needs root, an XFS and qemu-storage-daemon).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseStraceCounts } from '../../bench/nbd/qemu-copy-method';

const SUMMARY = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 60.00    0.030000         117       256           pwrite64
 30.00    0.015000         115       130           pread64
 10.00    0.005000          50       100        12 copy_file_range
------ ----------- ----------- --------- --------- ----------------
100.00    0.050000          77       486        12 total
`;

test('call counts by system call name; header and total skipped', () => {
  assert.equal(parseStraceCounts(SUMMARY), { pwrite64: 256, pread64: 130, copy_file_range: 100 });
});

test('an empty summary (no call traced) counts nothing', () => {
  assert.equal(parseStraceCounts(''), {});
});

test.run();

// Runs several contract scenario files in ONE node process, through uvu's
// multi-file runner, and ends with uvu's one summary (Total / Passed /
// Skipped). Why: in the ublk guest, loading the engine and the test modules
// over 9p under TCG costs about a minute per process; the guest program
// (test/guest/contract-ublk.guest.ts) pays it once for all files instead of
// once per file. The scenarios do not share state: each starts its own
// engine and driver (harness.ts).
// Usage: node dist/test/contract/run-files.js FILE.test.js...

import path from 'node:path';
import { run } from 'uvu/run';

const files = process.argv.slice(2);
if (files.length === 0 || files.some((file) => !file.endsWith('.test.js'))) {
  console.error('usage: node dist/test/contract/run-files.js FILE.test.js...');
  process.exit(2);
}
void run(files.map((file) => ({ name: path.basename(file), file: path.resolve(file) })));

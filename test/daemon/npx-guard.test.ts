// Goal: `npx ublksnap …` in a checkout never rebuilds the addon or rewrites
// dist/ under a running daemon: npm runs the install and prepare scripts in
// the checkout on npx's first use (npm_command=exec), and a rebuild there
// once deleted native/build in the middle of a test run.
// Method: run both lifecycle scripts as npx would (npm_command=exec) and
// check they keep the existing build (exit 0, the message, mtimes
// unchanged); the real install path (no npm_command) is what `npm ci` runs
// before every test, so it is covered already.

import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BUILT = {
  'build-native.js': path.join(ROOT, 'native', 'build', 'Release', 'ublksnap.node'),
  'compile-ts.js': path.join(ROOT, 'dist', 'src', 'cli', 'main.js'),
};
/** Keeping a build is a stat and a message: anything near this long rebuilt something. */
const KEEP_TIMEOUT_MS = 10_000;

for (const [script, built] of Object.entries(BUILT)) {
  test(`${script} under npx keeps the existing build`, () => {
    const before = statSync(built).mtimeMs;
    const result = spawnSync(process.execPath, [path.join(ROOT, 'scripts', script)], {
      cwd: ROOT, encoding: 'utf8', timeout: KEEP_TIMEOUT_MS, env: { ...process.env, npm_command: 'exec' },
    });
    assert.is(result.status, 0, result.stderr);
    assert.match(result.stderr, /npx: keeping the existing/);
    assert.is(statSync(built).mtimeMs, before, `${built} was rewritten`);
  });
}

test.run();

#!/usr/bin/env node
// The `ublksnap` command (CLI and `ublksnap daemon`): the compiled TypeScript
// lives in dist/, built by `npm ci` (prepare) or `npm run build`.
'use strict';

let cli;
try {
  cli = require('../dist/src/cli/main.js');
} catch (error) {
  if (error && error.code === 'MODULE_NOT_FOUND' && String(error.message).includes('dist/src/cli/main.js')) {
    process.stderr.write('ublksnap: not built yet: run `npm run build` (or `npx tsc -p tsconfig.json`) in the checkout (ENOENT)\n');
    process.exit(1);
  }
  throw error;
}
cli.run();

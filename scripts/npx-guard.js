'use strict';
// When `npx ublksnap …` runs in a checkout for the first time, npm installs
// the checkout into npx's cache and runs its install and prepare scripts in
// the checkout itself (npm_command is then 'exec'). Rebuilding the addon and
// rewriting dist/ there would pull them from under a daemon started from the
// same checkout (seen: a test run lost its addon mid-suite). So under npx a
// build that already exists is kept.
const { existsSync } = require('node:fs');

/** True when this lifecycle script runs for npx and `built` (a path) exists already. */
function keepExistingBuildUnderNpx(built, what) {
  if (process.env.npm_command !== 'exec' || !existsSync(built)) return false;
  console.error(`ublksnap: npx: keeping the existing ${what} (${built})`);
  return true;
}

module.exports = { keepExistingBuildUnderNpx };

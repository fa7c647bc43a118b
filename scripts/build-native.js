#!/usr/bin/env node
'use strict';
// Builds the C++ addon in native/ with the node-gyp that ships inside npm.
//
// Why a script and not the default "node-gyp rebuild": the build must never
// download Node headers (the machines reach no such host). We point node-gyp
// at the headers of the running Node itself (<prefix>/include/node), which
// Debian's and the official Node packages both install.
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

const { keepExistingBuildUnderNpx } = require('./npx-guard');

if (keepExistingBuildUnderNpx(path.resolve(__dirname, '..', 'native', 'build', 'Release', 'ublksnap.node'), 'native addon')) process.exit(0);

const nodePrefix = path.resolve(path.dirname(process.execPath), '..');
const headers = path.join(nodePrefix, 'include', 'node', 'node_api.h');
if (!existsSync(headers)) {
  console.error(`ublksnap: Node headers not found at ${headers}; install the Node development headers`);
  process.exit(1);
}

function findNodeGyp() {
  // npm sets npm_config_node_gyp while running lifecycle scripts.
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(nodePrefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  for (const candidate of candidates) {
    if (candidate && existsSync(candidate)) return candidate;
  }
  console.error('ublksnap: node-gyp not found (it ships with npm)');
  process.exit(1);
}

const result = spawnSync(
  process.execPath,
  [findNodeGyp(), 'rebuild', `--nodedir=${nodePrefix}`, '--directory', 'native'],
  { stdio: 'inherit', cwd: path.resolve(__dirname, '..') },
);
process.exit(result.status === null ? 1 : result.status);

#!/usr/bin/env node
'use strict';
// `npm run prepare`: compiles the TypeScript into dist/ (tsc -p tsconfig.json),
// except under npx when dist/ is there already (npx-guard.js says why).
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { keepExistingBuildUnderNpx } = require('./npx-guard');

const root = path.resolve(__dirname, '..');
if (keepExistingBuildUnderNpx(path.join(root, 'dist', 'src', 'cli', 'main.js'), 'compiled TypeScript')) process.exit(0);
const tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
const result = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit', cwd: root });
process.exit(result.status === null ? 1 : result.status);

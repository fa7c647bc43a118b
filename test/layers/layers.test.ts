// Goal: src/ stays layered (shared/native → cow → actors → engine →
// frontends → ipc → daemon → cli): no upward import, no import cycle,
// frontends reach the engine only through engine/api.ts and never each
// other, and nothing below the frontends names one.
// Method: run scripts/check-layers.js on the real tree (must be clean),
// then on copies of the tree with one offence planted each (must report it).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendFileSync, cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { check } = require('../../../scripts/check-layers.js') as { check(src: string): string[] };

const SRC = path.join(__dirname, '../../../src');

/** Runs the check on a copy of src/ with `plants` ([file, line] pairs) appended. */
function withPlanted(plants: [string, string][], run: (problems: string[]) => void): void {
  const copy = mkdtempSync(path.join(tmpdir(), 'ublksnap-layers-'));
  try {
    cpSync(SRC, copy, { recursive: true });
    for (const [file, line] of plants) appendFileSync(path.join(copy, file), `\n${line}\n`);
    run(check(copy));
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
}

test('the tree is layered', () => {
  assert.equal(check(SRC), []);
});

test('an upward import is reported', () => {
  withPlanted([['shared/units.ts', "import type { EngineControl } from '../engine/api';"]], (problems) => {
    assert.ok(problems.some((p) => p.includes('shared/units.ts imports upward: engine/api.ts')), problems.join('\n'));
  });
});

test('a frontend reaching past the engine API is reported', () => {
  withPlanted([['frontends/nbd/uri.ts', "import type { Engine } from '../../engine/engine';"]], (problems) => {
    assert.ok(problems.some((p) => p.includes('reaches into the engine: engine/engine.ts')), problems.join('\n'));
  });
});

test('a cycle is reported', () => {
  withPlanted([['shared/units.ts', "import { assert } from './assert';"], ['shared/assert.ts', "import { SECTOR_BYTES } from './units';"]], (problems) => {
    assert.ok(problems.some((p) => p.startsWith('import cycle:')), problems.join('\n'));
  });
});

test('a frontend named below the frontends is reported', () => {
  withPlanted([['engine/events.ts', '// served to NBD clients']], (problems) => {
    assert.ok(problems.some((p) => p.includes('engine/events.ts') && p.includes('names a frontend')), problems.join('\n'));
  });
});

test.run();

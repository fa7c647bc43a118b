// Goal: native/include/ublksnap-layout.h, which the C++ addon reads ring
// cells and request records with, is exactly what scripts/gen-layout-header.js
// makes of the TypeScript layouts today, names every word of every table,
// and its static_asserts refuse a layout that breaks what the drawings promise.
// Method: regenerate the header in memory from the compiled tables and
// compare it with the committed file byte for byte; look up each table entry
// in it; then (when a C++ compiler is present) compile the header, and
// doctored copies of it generated from broken tables, with -fsyntax-only.

import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { RING_LAYOUT, ringBytes } from '../../src/shared/ring';
import {
  COMPLETION_RECORD_LAYOUT, IO_FLAG_VALUES, IO_OP_VALUES, REQUEST_FIELD_MAX, REQUEST_RECORD_LAYOUT,
} from '../../src/shared/request-record';
import { gate, runTool, tempDir } from '../lib/system';

const ROOT = path.join(__dirname, '..', '..', '..');
const STALE_HINT = 'run node scripts/gen-layout-header.js';

interface Generator {
  generateLayoutHeader(layouts?: Record<string, unknown>): string;
  loadLayouts(): Record<string, unknown>;
  HEADER_PATH: string;
}
const generator = require(path.join(ROOT, 'scripts', 'gen-layout-header.js')) as Generator;

/** NAME_LIKE_THIS → kNameLikeThis, as the generator names constants. */
function constantName(name: string): string {
  return 'k' + name.toLowerCase().split('_').map((part) => part[0]!.toUpperCase() + part.slice(1)).join('');
}

const header = suite('the committed header');

header('matches the TypeScript layouts', () => {
  const committed = readFileSync(generator.HEADER_PATH, 'utf8');
  const fresh = generator.generateLayoutHeader();
  if (committed !== fresh) {
    const committed_lines = committed.split('\n');
    const fresh_lines = fresh.split('\n');
    const first = fresh_lines.findIndex((line, index) => line !== committed_lines[index]);
    assert.unreachable(`native/include/ublksnap-layout.h is stale (${STALE_HINT}); first difference at line ${first + 1}:\n` +
      `  committed: ${committed_lines[first]}\n  generated: ${fresh_lines[first]}`);
  }
});

header('names every word, value and bound of the runtime tables', () => {
  const text = generator.generateLayoutHeader();
  const tables: [string, Readonly<Record<string, number>>][] = [
    ['RING_LAYOUT', RING_LAYOUT], ['REQUEST_RECORD_LAYOUT', REQUEST_RECORD_LAYOUT],
    ['COMPLETION_RECORD_LAYOUT', COMPLETION_RECORD_LAYOUT], ['IO_OP_VALUES', IO_OP_VALUES], ['IO_FLAG_VALUES', IO_FLAG_VALUES],
  ];
  for (const [table_name, table] of tables) {
    for (const [name, value] of Object.entries(table)) {
      assert.ok(text.includes(`constexpr int32_t ${constantName(name)} = ${value};`), `${table_name}.${name} = ${value} in the header`);
    }
  }
  assert.ok(text.includes(`constexpr int64_t kOffsetBytes = int64_t{${REQUEST_FIELD_MAX.OFFSET_BYTES}};`), 'offset bound, 64-bit');
  assert.ok(text.includes(`constexpr int32_t kLengthBytes = ${REQUEST_FIELD_MAX.LENGTH_BYTES};`), 'length bound');
});

header('says it is generated, and from where', () => {
  const text = generator.generateLayoutHeader();
  assert.ok(text.startsWith('// GENERATED FILE: do not edit. Written by scripts/gen-layout-header.js'));
  assert.ok(text.includes('src/shared/ring.ts') && text.includes('src/shared/request-record.ts'));
});

header('the addon build does not run the generator (the header is checked in)', () => {
  for (const file of ['scripts/build-native.js', 'native/binding.gyp', 'package.json']) {
    assert.not.ok(readFileSync(path.join(ROOT, file), 'utf8').includes('gen-layout-header'), `${file} runs no generator`);
  }
});

header.run();

// ── the static_asserts bite ─────────────────────────────────────────────

const compiled = suite('the header compiles, broken layouts do not');
const gated = gate(compiled, 'layout-header static_asserts', { tools: ['c++'] });

/** Compiles `text` as the header; returns the compiler's complaint, or '' when it compiles. */
function compileHeader(text: string): string {
  const dir = tempDir('layout-header');
  try {
    writeFileSync(path.join(dir.path, 'ublksnap-layout.h'), text);
    writeFileSync(path.join(dir.path, 'use.cc'), '#include "ublksnap-layout.h"\nint main() { return 0; }\n');
    runTool('c++', ['-std=c++17', '-Wall', '-Wextra', '-Werror', '-fsyntax-only', path.join(dir.path, 'use.cc')]);
    return '';
  } catch (error) {
    return (error as Error).message;
  } finally {
    dir.remove();
  }
}

/** The generator's input with one table entry replaced. */
function doctored(table: string, changes: Record<string, unknown>): Record<string, unknown> {
  const layouts = generator.loadLayouts();
  const original = layouts[table];
  layouts[table] = typeof original === 'object' ? { ...(original as object), ...changes } : changes['value'];
  return layouts;
}

gated.test('the committed header compiles cleanly (-Wall -Wextra -Werror)', () => {
  assert.is(compileHeader(readFileSync(generator.HEADER_PATH, 'utf8')), '');
});

const BREAKAGES: [string, Record<string, unknown>, RegExp][] = [
  ['TAIL on HEAD\'s cache line', doctored('RING_LAYOUT', { TAIL: 8 }), /HEAD and TAIL on separate cache lines/],
  ['a header word inside SEQUENCE', doctored('RING_LAYOUT', { RECORD_WORDS: RING_LAYOUT.HEADER_WORDS }), /ring header words fit before SEQUENCE/],
  ['a capacity bound that is no power of two', doctored('RING_LAYOUT', { CAPACITY_MAX: 3 << 18 }), /positions compare/],
  ['two request words on one index', doctored('REQUEST_RECORD_LAYOUT', { SERIAL: 4 }), /request words are distinct/],
  ['a request word past the record', doctored('REQUEST_RECORD_LAYOUT', { LENGTH: 9 }), /request words are distinct/],
  ['offset halves swapped', doctored('REQUEST_RECORD_LAYOUT', { OFFSET_LOW: 7, OFFSET_HIGH: 6 }), /offset halves adjacent/],
  ['a flag outside the mask', doctored('IO_FLAG_VALUES', { MAY_UNMAP: 4 }), /FLAGS holds the IoFlags bits/],
  ['an OP bound that is no IoOp', doctored('REQUEST_FIELD_MAX', { OP: 5 }), /OP is an IoOp/],
  ['an offset bound whose high half overflows', doctored('REQUEST_FIELD_MAX', { OFFSET_BYTES: 2 ** 52 * 1.5 * 1024 }), /OFFSET_HIGH fits its word|safe integer/],
  ['a ring size formula that differs from ringBytes', doctored('ringBytes', { value: (capacity: number, words: number) => ringBytes(capacity, words) + RING_LAYOUT.CACHE_LINE_BYTES }), /ringBytes\(/],
];

for (const [what, layouts, complaint] of BREAKAGES) {
  gated.test(`refused: ${what}`, () => {
    let output: string;
    try {
      output = compileHeader(generator.generateLayoutHeader(layouts));
    } catch (error) {
      // The generator itself refuses values that fit no word.
      output = (error as Error).message;
    }
    assert.match(output, complaint, `expected the compiler to refuse ${what}`);
  });
}

compiled.run();

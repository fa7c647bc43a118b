// Goal: the IPC schema check accepts exactly what a method declares and
// names the offending path and the limit in every refusal; the method
// table's schemas bound every string, array and integer.
// Method: table-driven cases against small schemas, then every method of
// METHODS walked for unbounded fields, then hostile values (deep nesting,
// huge arrays, NUL bytes, prototype keys).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { METHODS } from '../../src/ipc/methods';
import { array, boolean, integer, object, oneOf, optional, string, validate, type Schema } from '../../src/ipc/schema';
import { UblksnapError } from '../../src/shared/errors';

function refusal(schema: Schema, value: unknown): string {
  try {
    validate(schema, value, 'params');
  } catch (error) {
    assert.instance(error, UblksnapError);
    assert.is((error as UblksnapError).code, 'EINVAL');
    return (error as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(value)}`);
}

const RANGE = object({ sector: integer(0, 100), count: integer(1, 10) });
const SAMPLE = object({
  name: string(8),
  mode: optional(oneOf(['fast', 'slow'])),
  ranges: array(RANGE, 3, 1),
  force: optional(boolean()),
});

test('valid input passes, typed and copied (unknown keys never reach a handler)', () => {
  const value = validate(SAMPLE, { name: 'a', ranges: [{ sector: 0, count: 1 }], force: true }, 'params');
  assert.equal(value, { name: 'a', ranges: [{ sector: 0, count: 1 }], force: true });
  assert.equal(validate(SAMPLE, { name: 'a', mode: 'slow', ranges: [{ sector: 100, count: 10 }] }, 'params').mode, 'slow');
});

const CASES: [string, unknown, RegExp][] = [
  ['not an object', [], /^params: expected an object, got an array$/],
  ['null', null, /^params: expected an object, got null$/],
  ['missing key', { ranges: [{ sector: 0, count: 1 }] }, /^params\.name: is required$/],
  ['unknown key', { name: 'a', ranges: [{ sector: 0, count: 1 }], colour: 1 }, /^params: unknown key "colour" \(known: name, mode, ranges, force\)$/],
  ['wrong type', { name: 7, ranges: [] }, /^params\.name: expected a string, got the integer 7$/],
  ['empty string', { name: '', ranges: [{ sector: 0, count: 1 }] }, /^params\.name: must not be empty$/],
  ['long string', { name: 'x'.repeat(9), ranges: [{ sector: 0, count: 1 }] }, /at most 8 characters, got 9/],
  ['NUL byte', { name: 'a\0b', ranges: [{ sector: 0, count: 1 }] }, /NUL/],
  ['enum', { name: 'a', mode: 'warp', ranges: [{ sector: 0, count: 1 }] }, /expected one of fast, slow/],
  ['boolean as string', { name: 'a', force: 'yes', ranges: [{ sector: 0, count: 1 }] }, /params\.force: expected true or false/],
  ['empty array', { name: 'a', ranges: [] }, /params\.ranges: must hold at least 1 item/],
  ['long array', { name: 'a', ranges: Array(4).fill({ sector: 0, count: 1 }) }, /at most 3 items, got 4/],
  ['nested path', { name: 'a', ranges: [{ sector: 0, count: 1 }, { sector: 0, count: 11 }] }, /^params\.ranges\[1\]\.count: must be in \[1, 10\], got 11$/],
  ['fraction', { name: 'a', ranges: [{ sector: 0.5, count: 1 }] }, /expected an integer, got the number 0\.5/],
  ['unsafe integer', { name: 'a', ranges: [{ sector: 2 ** 60, count: 1 }] }, /expected an integer/],
  ['negative', { name: 'a', ranges: [{ sector: -1, count: 1 }] }, /must be in \[0, 100\], got -1/],
  ['__proto__ key', JSON.parse('{"name":"a","ranges":[{"sector":0,"count":1}],"__proto__":{"x":1}}'), /unknown key "__proto__"/],
];

for (const [label, value, message] of CASES) {
  test(`refused: ${label}`, () => {
    assert.match(refusal(SAMPLE, value), message);
  });
}

test('deep nesting costs one type check: a 100 000-deep value is refused at the top', () => {
  let deep: unknown = 0;
  for (let i = 0; i < 100_000; i += 1) deep = [deep];
  assert.match(refusal(SAMPLE, { name: deep, ranges: [] }), /params\.name: expected a string, got an array/);
  assert.match(refusal(SAMPLE, { name: 'a', ranges: deep }), /^params\.ranges\[0\]: expected an object, got an array$/);
});

test('every method bounds every string, array and integer', () => {
  const walk = (schema: Schema, where: string): void => {
    switch (schema.kind) {
      case 'string':
        assert.ok(schema.max_length > 0 && schema.max_length <= 4096, `${where}: string bound`);
        break;
      case 'integer':
        assert.ok(Number.isSafeInteger(schema.min) && Number.isSafeInteger(schema.max), `${where}: integer range`);
        break;
      case 'array':
        assert.ok(schema.max_items > 0 && schema.max_items <= 65_536, `${where}: array bound`);
        walk(schema.items, `${where}[]`);
        break;
      case 'object':
        for (const [key, field] of Object.entries(schema.fields as Record<string, Schema>)) walk(field, `${where}.${key}`);
        break;
      case 'boolean':
        break;
    }
  };
  for (const [name, method] of Object.entries(METHODS)) walk(method.params, name);
});

test('method schemas: ids are UUIDs, names follow the engine rule, limits are integers', () => {
  const id = '5f0c3a1e-8d2b-4c6f-9a7e-0b1c2d3e4f50';
  assert.equal(validate(METHODS.snapshot_take.params, { id }, 'params'), { id });
  assert.match(refusal(METHODS.snapshot_take.params, { id: 'x' }), /a snapshot id \(UUID\)/);
  assert.match(refusal(METHODS.attach.params, { path: '/a', name: 'a/b' }), /volume name/);
  assert.match(refusal(METHODS.attach.params, { path: '/a', name: '-a' }), /volume name/);
  assert.match(refusal(METHODS.snapshot_create.params, { devices: [], storage: '/d', limit_bytes: '1G' }), /limit_bytes: expected an integer/);
  assert.match(refusal(METHODS.snapshot_waitevent.params, { id, timeout_ms: 3_600_001 }), /3600000/);
  assert.match(refusal(METHODS.readcbtmap.params, { device: 'a', first_block: 0, length_bytes: 0 }), /length_bytes/);
});

test.run();

// Goal: the line splitter cuts a byte stream into lines however the bytes
// are chunked, strips '\r\n', skips empty lines, and refuses a line longer
// than its limit before buffering it whole.
// Method: one text split at every possible chunk boundary; UTF-8 characters
// split across chunks; lines at and one byte past the limit, complete and
// unterminated; a flush at end of stream.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LineSplitter } from '../../src/ipc/line-splitter';

function collect(limit: number): { splitter: LineSplitter; lines: string[] } {
  const lines: string[] = [];
  return { splitter: new LineSplitter(limit, (line) => lines.push(line)), lines };
}

test('every chunking of the same bytes gives the same lines', () => {
  const text = Buffer.from('{"a":1}\n\n{"b":"é→"}\r\n{"c":3}\nrest');
  for (let cut = 0; cut <= text.length; cut += 1) {
    for (let cut2 = cut; cut2 <= text.length; cut2 += 7) {
      const { splitter, lines } = collect(64);
      assert.is(splitter.push(text.subarray(0, cut)), 'ok');
      assert.is(splitter.push(text.subarray(cut, cut2)), 'ok');
      assert.is(splitter.push(text.subarray(cut2)), 'ok');
      assert.equal(lines, ['{"a":1}', '{"b":"é→"}', '{"c":3}'], `cuts at ${cut}, ${cut2}`);
      assert.is(splitter.partial_bytes, 4);
      splitter.flush();
      assert.equal(lines.at(-1), 'rest');
    }
  }
});

test('a line of exactly the limit passes; one byte more overflows', () => {
  const at = collect(10);
  assert.is(at.splitter.push(Buffer.from(`${'x'.repeat(10)}\n`)), 'ok');
  assert.equal(at.lines, ['x'.repeat(10)]);
  const over = collect(10);
  assert.is(over.splitter.push(Buffer.from(`${'x'.repeat(11)}\n`)), 'overflow');
  assert.equal(over.lines, []);
});

test('an unterminated line overflows as soon as it passes the limit, in small pieces', () => {
  const { splitter, lines } = collect(1000);
  let result = 'ok';
  let pushed = 0;
  while (result === 'ok' && pushed < 10_000) {
    result = splitter.push(Buffer.alloc(100, 0x61));
    pushed += 100;
  }
  assert.is(result, 'overflow');
  assert.is(pushed, 1100);
  assert.is(splitter.partial_bytes, 0, 'nothing kept after an overflow');
  assert.is(splitter.push(Buffer.from('\n{}\n')), 'overflow', 'stays overflowed: no resynchronisation');
  assert.equal(lines, []);
});

test('lines before an overflowing one in the same chunk are delivered', () => {
  const { splitter, lines } = collect(8);
  assert.is(splitter.push(Buffer.from('ok\nalso ok\n123456789\n')), 'overflow');
  assert.equal(lines, ['ok', 'also ok']);
});

test.run();

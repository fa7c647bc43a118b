// Goal: the request and completion records (request-record.ts) carry every
// field exactly: byte offsets split into OFFSET_LOW/HIGH and joined again
// across 2^31, 2^32 and up to 2^53 - 1; export handles pack and unpack
// (volume, kind, serial) at their edges; packRequest and packCompletion
// write each word where the layout says and refuse each field outside the
// range the layout promises, naming the field; the runtime tables name
// every word once.
// Method: edge values and seeded random values through writeOffset/readOffset
// and packHandle/handle*; every field set just inside and just outside its
// range, one at a time, through packRequest/packCompletion.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { QUEUE_DEPTH_MAX, QUEUE_IO_BYTES_MAX } from '../../src/shared/limits';
import {
  COMPLETION_FIELD_MAX, COMPLETION_RECORD_LAYOUT, COMPLETION_WORDS, CompletionWord, ERRNO_MAX, handleIsImage,
  handleSerial, handleVolume, IoFlags, IoOp, packCompletion, packHandle, packRequest, readOffset, REQUEST_FIELD_MAX,
  REQUEST_RECORD_LAYOUT, REQUEST_WORDS, RequestWord, VOLUME_INDEX_LIMIT, writeOffset,
} from '../../src/shared/request-record';
import { seededRandom } from '../lib/random';
import { testSeed } from '../lib/workers';

const TWO_POW_32 = 2 ** 32;
const RANDOM_OFFSET_COUNT = 10_000;
const INT32_MAX = 2 ** 31 - 1;

function roundTrip(offset_bytes: number): Int32Array {
  const record = new Int32Array(REQUEST_WORDS).fill(-1);
  writeOffset(record, offset_bytes);
  assert.is(readOffset(record), offset_bytes, `offset ${offset_bytes}`);
  assert.is(record[RequestWord.OFFSET_LOW]! >>> 0, offset_bytes % TWO_POW_32, `low half of ${offset_bytes}`);
  assert.is(record[RequestWord.OFFSET_HIGH], Math.floor(offset_bytes / TWO_POW_32), `high half of ${offset_bytes}`);
  return record;
}

test('offsets split and join at the edges of 2^31, 2^32 and 2^53', () => {
  const edges = [0, 1, 512, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 33 + 4096,
    2 ** 52, 2 ** 53 - 2, Number.MAX_SAFE_INTEGER];
  for (const offset of edges) roundTrip(offset);
  const top = roundTrip(Number.MAX_SAFE_INTEGER);
  assert.is(top[RequestWord.OFFSET_LOW], -1, 'all 32 low bits set: -1 as an int32');
  assert.is(top[RequestWord.OFFSET_HIGH], 2 ** 21 - 1, 'the high half stays within 21 bits');
  const other_words = [...roundTrip(2 ** 40)].filter((_, index) =>
    index !== RequestWord.OFFSET_LOW && index !== RequestWord.OFFSET_HIGH);
  assert.ok(other_words.every((word) => word === -1), 'writeOffset touches only the two offset words');
});

test('random offsets up to 2^53 - 1 round-trip', () => {
  const next = seededRandom(testSeed('offsets'));
  for (let i = 0; i < RANDOM_OFFSET_COUNT; i += 1) {
    // Two draws: one generator value has only 32 bits of its own.
    const high = Math.floor(next() * 2 ** 21);
    const low = Math.floor(next() * TWO_POW_32);
    roundTrip(high * TWO_POW_32 + low);
    roundTrip((high % 4) * TWO_POW_32 + low);
  }
});

test('export handles: volume handles are the index; image handles carry serial and kind', () => {
  for (const volume of [0, 1, 1234, VOLUME_INDEX_LIMIT - 1]) {
    const handle = packHandle(volume, 0);
    assert.is(handle, volume, 'a volume handle is its index');
    assert.is(handleVolume(handle), volume);
    assert.is(handleSerial(handle), 0);
    assert.is(handleIsImage(handle), false);
    for (const serial of [1, 2, 77, 2 ** 20 + 3, INT32_MAX]) {
      const image = packHandle(volume, serial);
      assert.ok(Number.isSafeInteger(image), `handle of ${volume}/${serial} is a safe integer`);
      assert.is(handleVolume(image), volume, `volume of ${volume}/${serial}`);
      assert.is(handleSerial(image), serial, `serial of ${volume}/${serial}`);
      assert.ok(handleIsImage(image), `kind of ${volume}/${serial}`);
    }
  }
  assert.is.not(packHandle(5, 1), packHandle(5, 2));
  assert.is.not(packHandle(5, 1), packHandle(6, 1));
});

test('packRequest writes each field into its word', () => {
  const record = new Int32Array(REQUEST_WORDS).fill(-7);
  packRequest(record, 3, 4, IoOp.WRITE, IoFlags.FUA, 5, 6, 2 ** 32 * 7 + 8, 9);
  assert.is(record[RequestWord.TAG], 3);
  assert.is(record[RequestWord.QUEUE], 4);
  assert.is(record[RequestWord.OP], IoOp.WRITE);
  assert.is(record[RequestWord.FLAGS], IoFlags.FUA);
  assert.is(record[RequestWord.VOLUME], 5);
  assert.is(record[RequestWord.SERIAL], 6);
  assert.is(record[RequestWord.OFFSET_LOW], 8);
  assert.is(record[RequestWord.OFFSET_HIGH], 7);
  assert.is(record[RequestWord.LENGTH], 9);
});

test('packRequest accepts every field at the edges of its range', () => {
  const record = new Int32Array(REQUEST_WORDS);
  packRequest(record, 0, 0, IoOp.READ, IoFlags.NONE, 0, 0, 0, 0);
  packRequest(record, QUEUE_DEPTH_MAX - 1, INT32_MAX, IoOp.WRITE_ZEROES, IoFlags.FUA | IoFlags.MAY_UNMAP,
    VOLUME_INDEX_LIMIT - 1, INT32_MAX, Number.MAX_SAFE_INTEGER, QUEUE_IO_BYTES_MAX);
  assert.is(readOffset(record), Number.MAX_SAFE_INTEGER);
  assert.is(record[RequestWord.QUEUE], INT32_MAX);
  assert.is(REQUEST_FIELD_MAX.TAG, QUEUE_DEPTH_MAX - 1, 'the documented TAG range');
  assert.is(REQUEST_FIELD_MAX.LENGTH_BYTES, QUEUE_IO_BYTES_MAX, 'the documented LENGTH range');
});

/** One field out of range at a time; every other field valid. */
const REQUEST_REFUSALS: [string, number[], (record: Int32Array, bad: number) => void][] = [
  ['TAG', [-1, QUEUE_DEPTH_MAX, 1.5, NaN], (r, bad) => packRequest(r, bad, 1, IoOp.READ, 0, 1, 0, 0, 512)],
  ['QUEUE', [-1, 2 ** 31, 0.5], (r, bad) => packRequest(r, 1, bad, IoOp.READ, 0, 1, 0, 0, 512)],
  ['OP', [-1, IoOp.WRITE_ZEROES + 1], (r, bad) => packRequest(r, 1, 1, bad as IoOp, 0, 1, 0, 0, 512)],
  ['FLAGS', [-1, 4, 8, 2 ** 31], (r, bad) => packRequest(r, 1, 1, IoOp.READ, bad, 1, 0, 0, 512)],
  ['VOLUME', [-1, VOLUME_INDEX_LIMIT], (r, bad) => packRequest(r, 1, 1, IoOp.READ, 0, bad, 0, 0, 512)],
  ['SERIAL', [-1, 2 ** 31], (r, bad) => packRequest(r, 1, 1, IoOp.READ, 0, 1, bad, 0, 512)],
  ['OFFSET', [-1, 2 ** 53, 2 ** 64, 0.25, Infinity], (r, bad) => packRequest(r, 1, 1, IoOp.READ, 0, 1, 0, bad, 512)],
  ['LENGTH', [-1, QUEUE_IO_BYTES_MAX + 1, 2 ** 32, 511.5], (r, bad) => packRequest(r, 1, 1, IoOp.READ, 0, 1, 0, 0, bad)],
];

for (const [field, bad_values, pack] of REQUEST_REFUSALS) {
  test(`packRequest refuses ${field} outside its range, naming it, writing nothing`, () => {
    for (const bad of bad_values) {
      const record = new Int32Array(REQUEST_WORDS).fill(-3);
      assert.throws(() => pack(record, bad), new RegExp(`field ${field} = ${bad} outside`), `${field} = ${bad}`);
      assert.ok(record.every((word) => word === -3), `${field} = ${bad}: the record is untouched`);
    }
  });
}

test('packCompletion writes TAG and ERRNO, refusing either out of range', () => {
  const record = new Int32Array(COMPLETION_WORDS);
  packCompletion(record, QUEUE_DEPTH_MAX - 1, ERRNO_MAX);
  assert.equal([record[CompletionWord.TAG], record[CompletionWord.ERRNO]], [QUEUE_DEPTH_MAX - 1, ERRNO_MAX]);
  packCompletion(record, 0, 0);
  assert.equal([...record], [0, 0]);
  assert.is(COMPLETION_FIELD_MAX.ERRNO, ERRNO_MAX);
  assert.throws(() => packCompletion(record, QUEUE_DEPTH_MAX, 0), /field TAG/);
  assert.throws(() => packCompletion(record, -1, 0), /field TAG/);
  assert.throws(() => packCompletion(record, 1, -5), /field ERRNO/, 'errnos are positive');
  assert.throws(() => packCompletion(record, 1, ERRNO_MAX + 1), /field ERRNO/);
});

test('the runtime tables name each word once, matching the const enums', () => {
  assert.is(Object.keys(REQUEST_RECORD_LAYOUT).length, REQUEST_WORDS);
  assert.equal([...new Set(Object.values(REQUEST_RECORD_LAYOUT))].sort((a, b) => a - b), [...Array(REQUEST_WORDS).keys()]);
  assert.is(REQUEST_RECORD_LAYOUT.OFFSET_HIGH, RequestWord.OFFSET_HIGH);
  assert.is(REQUEST_RECORD_LAYOUT.LENGTH, RequestWord.LENGTH);
  assert.equal(Object.values(COMPLETION_RECORD_LAYOUT), [CompletionWord.TAG, CompletionWord.ERRNO]);
  assert.ok(Object.isFrozen(REQUEST_RECORD_LAYOUT) && Object.isFrozen(COMPLETION_RECORD_LAYOUT));
});

test.run();

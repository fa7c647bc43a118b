// Goal: alignedOffset, bufferAddress and alignedView give, for both
// ArrayBuffer and SharedArrayBuffer, a view whose first byte sits on the
// requested power-of-two boundary, inside the buffer, sharing its memory,
// and that stays aligned because a backing store never moves.
// Method: buffers of several sizes against every power of two up to 64 KiB,
// checked by address arithmetic on bufferAddress; writes through the view
// read back through a plain view of the whole buffer; addresses compared
// before and after a burst of garbage that forces collections.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DIRECT_IO_ALIGNMENT_BYTES, alignedOffset, alignedView, bufferAddress } from '../../src/native/index';

const ALIGNMENT_SHIFT_MAX = 16;
const BUFFER_BYTES_VARIANTS = [1, 100, 4096, 65_537, 1 << 20];
/** Enough short-lived garbage to run the young-generation collector many times. */
const GARBAGE_ROUNDS = 200;
const GARBAGE_BYTES_PER_ROUND = 256 << 10;
const MARKER_BYTE = 0x7e;

type AnyBuffer = ArrayBuffer | SharedArrayBuffer;

const makers: Array<[string, (byte_length: number) => AnyBuffer]> = [
  ['ArrayBuffer', (byte_length) => new ArrayBuffer(byte_length)],
  ['SharedArrayBuffer', (byte_length) => new SharedArrayBuffer(byte_length)],
];

const aligned = suite('aligned views of shared memory');

for (const [kind, make] of makers) {
  aligned(`${kind}: the offset is the smallest that reaches each boundary`, () => {
    for (const byte_length of BUFFER_BYTES_VARIANTS) {
      const buffer = make(byte_length);
      const address = bufferAddress(buffer);
      assert.is(typeof address, 'bigint');
      for (let shift = 0; shift <= ALIGNMENT_SHIFT_MAX; shift += 1) {
        const alignment_bytes = 2 ** shift;
        const offset_bytes = alignedOffset(buffer, alignment_bytes);
        assert.ok(offset_bytes >= 0 && offset_bytes < alignment_bytes, `offset ${offset_bytes} for ${alignment_bytes}`);
        assert.is((address + BigInt(offset_bytes)) % BigInt(alignment_bytes), 0n);
      }
      assert.is(alignedOffset(buffer, 1), 0);
    }
  });

  aligned(`${kind}: alignedView fits in byte_length + alignment and shares the memory`, () => {
    const byte_length = 3 * DIRECT_IO_ALIGNMENT_BYTES;
    // The least any address needs: alignment - 1 bytes of slack.
    const buffer = make(byte_length + DIRECT_IO_ALIGNMENT_BYTES - 1);
    const view = alignedView(buffer, byte_length);
    assert.is(view.byteLength, byte_length);
    assert.is(view.byteOffset, alignedOffset(buffer, DIRECT_IO_ALIGNMENT_BYTES));
    assert.is(view.buffer, buffer);
    view[0] = MARKER_BYTE;
    view[byte_length - 1] = MARKER_BYTE;
    const whole = new Uint8Array(buffer);
    assert.is(whole[view.byteOffset], MARKER_BYTE);
    assert.is(whole[view.byteOffset + byte_length - 1], MARKER_BYTE);
  });

  aligned(`${kind}: a buffer too small for the view is a RangeError`, () => {
    // Unless the buffer happens to be aligned already, alignment - 1 bytes
    // of slack are needed; none at all can only work at offset 0.
    const buffer = make(DIRECT_IO_ALIGNMENT_BYTES);
    if (alignedOffset(buffer, DIRECT_IO_ALIGNMENT_BYTES) === 0) {
      assert.is(alignedView(buffer, DIRECT_IO_ALIGNMENT_BYTES).byteOffset, 0);
    } else {
      assert.throws(() => alignedView(buffer, DIRECT_IO_ALIGNMENT_BYTES), RangeError);
    }
    assert.throws(() => alignedView(buffer, DIRECT_IO_ALIGNMENT_BYTES + 1), RangeError);
  });

  aligned(`${kind}: the address survives garbage collections`, () => {
    const buffer = make(1 << 20);
    const address_before = bufferAddress(buffer);
    let checksum = 0;
    for (let round = 0; round < GARBAGE_ROUNDS; round += 1) {
      const garbage = new Array<number>(GARBAGE_BYTES_PER_ROUND / 8).fill(round);
      checksum += garbage.length;
    }
    assert.ok(checksum > 0);
    assert.is(bufferAddress(buffer), address_before);
  });
}

aligned('an empty buffer gives an empty view at offset 0 or within the slack', () => {
  const empty = new ArrayBuffer(0);
  assert.is(alignedView(empty, 0, 1).byteLength, 0);
});

aligned.run();

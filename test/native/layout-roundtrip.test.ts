// Goal: C++ built only from native/include/ublksnap-layout.h and TypeScript
// built from src/shared/ring.ts and request-record.ts read and write the same
// ring cells and the same record words: a record crosses the language line
// in either direction with every field intact, including offsets past 2^32
// split into OFFSET_LOW/HIGH; the cell protocol agrees across wrap-around of
// the cells and of the 32-bit positions; a full ring refuses a push and an
// empty one a pop on both sides.
// Method: the addon's ringPushForTest/ringPopForTest (native/src/layout-test.cc)
// push and pop single records of rings made by Ring.create; TypeScript pops
// and pushes the same rings with tryPop/tryPush. Records are packed with
// packRequest/packCompletion so every word differs from every other, and
// compared field by field by name. Last, worker threads push through one
// side while the main thread pops through the other, to run the protocol
// under real concurrency.

import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  COMPLETION_WORDS, CompletionWord, IoFlags, IoOp, packCompletion, packRequest, readOffset, REQUEST_WORDS, RequestWord,
} from '../../src/shared/request-record';
import { Ring, RING_LAYOUT } from '../../src/shared/ring';

const ADDON_PATH = path.join(__dirname, '..', '..', '..', 'native', 'build', 'Release', 'ublksnap.node');

interface LayoutTestBinding {
  ringPushForTest(ring: Int32Array, record: Int32Array): boolean;
  ringPopForTest(ring: Int32Array, out: Int32Array): boolean;
}
const native = require(ADDON_PATH) as LayoutTestBinding;

/** The whole ring buffer as the addon takes it. */
function words(ring: Ring): Int32Array {
  return new Int32Array(ring.buffer);
}

interface RequestFields {
  tag: number; queue: number; op: IoOp; flags: number; volume: number; serial: number; offset: number; length: number;
}

/**
 * Requests whose nine words all differ from each other, with offsets on
 * both sides of 2^32 (a low half that is negative as an int32, too) and at
 * the 2^53 - 1 edge.
 */
const REQUESTS: RequestFields[] = [
  { tag: 7, queue: 11, op: IoOp.DISCARD, flags: IoFlags.MAY_UNMAP, volume: 513, serial: 77, offset: 5 * 2 ** 32 + 0x9abc_def0, length: 65_536 },
  { tag: 1023, queue: 2 ** 31 - 1, op: IoOp.WRITE_ZEROES, flags: IoFlags.FUA | IoFlags.MAY_UNMAP, volume: 65_535, serial: 2 ** 31 - 2, offset: Number.MAX_SAFE_INTEGER, length: 32 * 1024 * 1024 },
  { tag: 0, queue: 1, op: IoOp.WRITE, flags: IoFlags.FUA, volume: 2, serial: 3, offset: 2 ** 32 - 4096, length: 4096 },
  { tag: 5, queue: 6, op: IoOp.READ, flags: IoFlags.NONE, volume: 8, serial: 9, offset: 2 ** 32, length: 512 },
  { tag: 100, queue: 200, op: IoOp.FLUSH, flags: IoFlags.NONE, volume: 300, serial: 0, offset: 2 ** 32 + 2 ** 31, length: 0 },
];

function pack(record: Int32Array, fields: RequestFields): void {
  packRequest(record, fields.tag, fields.queue, fields.op, fields.flags, fields.volume, fields.serial, fields.offset, fields.length);
}

/** Field by field, by name, so a failure says which word went astray. */
function assertRequest(record: Int32Array, fields: RequestFields, what: string): void {
  assert.is(record[RequestWord.TAG], fields.tag, `${what}: TAG`);
  assert.is(record[RequestWord.QUEUE], fields.queue, `${what}: QUEUE`);
  assert.is(record[RequestWord.OP], fields.op, `${what}: OP`);
  assert.is(record[RequestWord.FLAGS], fields.flags, `${what}: FLAGS`);
  assert.is(record[RequestWord.VOLUME], fields.volume, `${what}: VOLUME`);
  assert.is(record[RequestWord.SERIAL], fields.serial, `${what}: SERIAL`);
  assert.is(record[RequestWord.OFFSET_LOW]! >>> 0, fields.offset % 2 ** 32, `${what}: OFFSET_LOW`);
  assert.is(record[RequestWord.OFFSET_HIGH], Math.floor(fields.offset / 2 ** 32), `${what}: OFFSET_HIGH`);
  assert.is(readOffset(record), fields.offset, `${what}: offset`);
  assert.is(record[RequestWord.LENGTH], fields.length, `${what}: LENGTH`);
}

const trip = suite('records cross the language line');

trip('the first request record has nine distinct words', () => {
  const record = new Int32Array(REQUEST_WORDS);
  pack(record, REQUESTS[0]!);
  assert.is(new Set(record).size, REQUEST_WORDS);
  assert.ok(record[RequestWord.OFFSET_LOW]! < 0, 'the low half reads negative as an int32: C++ must read it unsigned');
});

trip('C++ pushes request records, TypeScript pops them', () => {
  const ring = Ring.create(8, REQUEST_WORDS);
  const record = new Int32Array(REQUEST_WORDS);
  for (const fields of REQUESTS) {
    pack(record, fields);
    assert.ok(native.ringPushForTest(words(ring), record));
  }
  assert.is(ring.count, REQUESTS.length);
  const out = new Int32Array(REQUEST_WORDS);
  REQUESTS.forEach((fields, index) => {
    assert.ok(ring.tryPop(out), `pop ${index}`);
    assertRequest(out, fields, `request ${index}`);
  });
  assert.is(ring.tryPop(out), false, 'drained');
});

trip('TypeScript pushes request records, C++ pops them', () => {
  const ring = Ring.create(8, REQUEST_WORDS);
  const record = new Int32Array(REQUEST_WORDS);
  for (const fields of REQUESTS) {
    pack(record, fields);
    assert.ok(ring.tryPush(record));
  }
  const out = new Int32Array(REQUEST_WORDS);
  REQUESTS.forEach((fields, index) => {
    out.fill(-1);
    assert.ok(native.ringPopForTest(words(ring), out), `pop ${index}`);
    assertRequest(out, fields, `request ${index}`);
  });
  assert.is(native.ringPopForTest(words(ring), out), false, 'drained');
  assert.is(ring.count, 0);
});

trip('completion records both ways', () => {
  const ring = Ring.create(4, COMPLETION_WORDS);
  const record = new Int32Array(COMPLETION_WORDS);
  const out = new Int32Array(COMPLETION_WORDS);
  const completions: [number, number][] = [[17, 0], [1023, 4095], [0, 28], [512, 5]];
  for (const [tag, errno] of completions) {
    packCompletion(record, tag, errno);
    assert.ok(native.ringPushForTest(words(ring), record));
    assert.ok(ring.tryPop(out));
    assert.equal([out[CompletionWord.TAG], out[CompletionWord.ERRNO]], [tag, errno], 'C++ → TypeScript');
    assert.ok(ring.tryPush(record));
    out.fill(-1);
    assert.ok(native.ringPopForTest(words(ring), out));
    assert.equal([out[CompletionWord.TAG], out[CompletionWord.ERRNO]], [tag, errno], 'TypeScript → C++');
  }
});

trip('records wrap around the cells, pushed and popped by either side in turn', () => {
  const capacity = 4;
  const ring = Ring.create(capacity, REQUEST_WORDS);
  const record = new Int32Array(REQUEST_WORDS);
  const out = new Int32Array(REQUEST_WORDS);
  const expected: RequestFields[] = [];
  // Keep three records in flight so every push and pop lands on a cell
  // another side last used; 10 rounds of the 4 cells.
  for (let i = 0; i < capacity * 10; i += 1) {
    const fields = { ...REQUESTS[i % REQUESTS.length]!, tag: i % 1024 };
    pack(record, fields);
    const pushed = i % 2 === 0 ? native.ringPushForTest(words(ring), record) : ring.tryPush(record);
    assert.ok(pushed, `push ${i}`);
    expected.push(fields);
    if (expected.length === capacity - 1) {
      const popped = i % 3 === 0 ? native.ringPopForTest(words(ring), out) : ring.tryPop(out);
      assert.ok(popped, `pop after push ${i}`);
      assertRequest(out, expected.shift()!, `record before push ${i}`);
    }
  }
  while (expected.length > 0) {
    assert.ok(native.ringPopForTest(words(ring), out));
    assertRequest(out, expected.shift()!, 'tail');
  }
});

trip('the 32-bit positions wrap the same way on both sides', () => {
  const capacity = 8;
  const ring = Ring.create(capacity, 1);
  const view = words(ring);
  // Move HEAD, TAIL and every cell's turn to just below 2^31 - 1, as ring.test.ts does.
  const start = 2 ** 31 - 5;
  view[RING_LAYOUT.HEAD] = start;
  view[RING_LAYOUT.TAIL] = start;
  for (let cell = 0; cell < capacity; cell += 1) {
    let position = start;
    while ((position & (capacity - 1)) !== cell) position += 1;
    view[RING_LAYOUT.HEADER_WORDS + cell] = position | 0;
  }
  const record = new Int32Array(1);
  const out = new Int32Array(1);
  for (let i = 0; i < 40; i += 1) {
    record[0] = 1000 + i;
    assert.ok(i % 2 === 0 ? native.ringPushForTest(view, record) : ring.tryPush(record), `push ${i}`);
    assert.ok(i % 3 === 0 ? ring.tryPop(out) : native.ringPopForTest(view, out), `pop ${i}`);
    assert.is(out[0], 1000 + i);
  }
  assert.ok(view[RING_LAYOUT.TAIL]! < 0, 'TAIL went past 2^31 - 1');
});

trip('a full ring refuses a push, an empty one a pop, on both sides', () => {
  const ring = Ring.create(4, REQUEST_WORDS);
  const record = new Int32Array(REQUEST_WORDS);
  const out = new Int32Array(REQUEST_WORDS);
  assert.is(native.ringPopForTest(words(ring), out), false, 'C++ pop of a new ring');
  pack(record, REQUESTS[0]!);
  for (let i = 0; i < 4; i += 1) assert.ok(native.ringPushForTest(words(ring), record), `C++ fill ${i}`);
  assert.is(native.ringPushForTest(words(ring), record), false, 'C++ push into a ring C++ filled');
  assert.is(ring.tryPush(record), false, 'TypeScript push into a ring C++ filled');
  for (let i = 0; i < 4; i += 1) assert.ok(ring.tryPop(out));
  for (let i = 0; i < 4; i += 1) assert.ok(ring.tryPush(record), `TypeScript fill ${i}`);
  assert.is(native.ringPushForTest(words(ring), record), false, 'C++ push into a ring TypeScript filled');
  assert.is(ring.tryPush(record), false, 'TypeScript push into a ring TypeScript filled');
  for (let i = 0; i < 4; i += 1) assert.ok(native.ringPopForTest(words(ring), out));
  assert.is(native.ringPopForTest(words(ring), out), false, 'C++ pop of a drained ring');
  assert.is(ring.tryPop(out), false, 'TypeScript pop of a drained ring');
  assert.is(ring.count, 0);
});

trip('the addon refuses what is not a ring, or a record too short', () => {
  const ring = Ring.create(4, REQUEST_WORDS);
  const record = new Int32Array(REQUEST_WORDS);
  assert.throws(() => native.ringPushForTest(new Int32Array(ring.buffer, 0, 60), record), /does not match its 60 words/);
  assert.throws(() => native.ringPushForTest(new Int32Array(10), record), /shorter than a ring header/);
  assert.throws(() => native.ringPushForTest(words(ring), new Int32Array(REQUEST_WORDS - 1)), /record holds 8 words/);
  assert.throws(() => native.ringPopForTest(words(ring), new Float64Array(REQUEST_WORDS) as unknown as Int32Array), /out must be an Int32Array/);
  assert.throws(() => native.ringPushForTest(new Uint32Array(ring.buffer) as unknown as Int32Array, record), /ring must be an Int32Array/);
  assert.is(ring.count, 0, 'nothing was pushed');
});

trip.run();

// ── under concurrency ───────────────────────────────────────────────────

const threads = suite('across threads');

const PRODUCER_COUNT = 2;
const RECORDS_PER_PRODUCER = 20_000;
const CONCURRENCY_TIMEOUT_MS = 30_000;
/** A producer that finds the ring full naps this long (Atomics.wait on a private word). */
const FULL_NAP_MS = 1;

// A producer thread: pushes [producer, i] through the C++ side ('native')
// or the TypeScript side ('ts'), napping while the ring is full, and gives
// up (an uncaught error) when the ring stays full past the deadline.
const PRODUCER_SCRIPT = `
  const { parentPort, workerData } = require('node:worker_threads');
  const { Ring } = require(workerData.ring_module);
  const native = require(workerData.addon);
  const words = new Int32Array(workerData.buffer);
  const ring = new Ring(workerData.buffer);
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const record = new Int32Array(2);
  const deadline = Date.now() + workerData.timeout_ms;
  for (let i = 0; i < workerData.count; i += 1) {
    record[0] = workerData.producer; record[1] = i;
    for (;;) {
      const pushed = workerData.side === 'native' ? native.ringPushForTest(words, record) : ring.tryPush(record);
      if (pushed) break;
      if (Date.now() > deadline) throw new Error('producer ' + workerData.producer + ': ring full at record ' + i);
      Atomics.wait(nap, 0, 0, ${FULL_NAP_MS});
    }
  }
  parentPort.postMessage('done');
`;

interface Producer {
  worker: Worker;
  done: Promise<void>;
  /** Set when the worker failed, so the consumer stops at once. */
  failure?: Error;
}

function startProducer(buffer: SharedArrayBuffer, producer: number, side: 'native' | 'ts'): Producer {
  const worker = new Worker(PRODUCER_SCRIPT, {
    eval: true,
    workerData: { buffer, producer, side, count: RECORDS_PER_PRODUCER, addon: ADDON_PATH, timeout_ms: CONCURRENCY_TIMEOUT_MS,
      ring_module: path.join(__dirname, '..', '..', 'src', 'shared', 'ring.js') },
  });
  const done = new Promise<void>((resolve, reject) => {
    worker.once('message', () => resolve());
    worker.once('error', reject);
    worker.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`producer ${producer} exited with ${code}`))));
  });
  const started: Producer = { worker, done };
  done.catch((error: Error) => { started.failure = error; });
  return started;
}

/**
 * Pops through `side` until every record arrived, checking each producer's
 * order; ends the producers whatever happens.
 */
async function consumeAll(ring: Ring, side: 'native' | 'ts', producers: Producer[]): Promise<void> {
  const next = new Array<number>(PRODUCER_COUNT).fill(0);
  const out = new Int32Array(2);
  const deadline = Date.now() + CONCURRENCY_TIMEOUT_MS;
  let received = 0;
  try {
    while (received < PRODUCER_COUNT * RECORDS_PER_PRODUCER) {
      const popped = side === 'native' ? native.ringPopForTest(words(ring), out) : ring.tryPop(out);
      if (!popped) {
        const failed = producers.find((p) => p.failure !== undefined);
        if (failed !== undefined) throw failed.failure!;
        assert.ok(Date.now() < deadline, `only ${received} records arrived in ${CONCURRENCY_TIMEOUT_MS} ms`);
        // Let the producers' 'exit' and 'error' events through now and then.
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      const [producer, index] = [out[0]!, out[1]!];
      assert.is(index, next[producer], `producer ${producer}: record ${index} arrived when ${next[producer]} was due`);
      next[producer] = index + 1;
      received += 1;
    }
    await Promise.all(producers.map((p) => p.done));
    assert.is(ring.count, 0);
  } finally {
    await Promise.all(producers.map((p) => p.worker.terminate()));
  }
}

threads('C++ producers in workers, a TypeScript consumer', async () => {
  const ring = Ring.create(64, 2);
  const producers = [0, 1].map((producer) => startProducer(ring.buffer, producer, 'native'));
  await consumeAll(ring, 'ts', producers);
});

threads('TypeScript producers in workers, a C++ consumer', async () => {
  const ring = Ring.create(64, 2);
  const producers = [0, 1].map((producer) => startProducer(ring.buffer, producer, 'ts'));
  await consumeAll(ring, 'native', producers);
});

threads.run();

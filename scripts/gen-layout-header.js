#!/usr/bin/env node
'use strict';
// Writes native/include/ublksnap-layout.h from the TypeScript layouts, so
// that C++ reading the same shared memory uses the same word offsets and
// field ranges (docs/style.md habit 2: one source generates the other).
//
// The flow:
//
//   src/shared/ring.ts            RING_LAYOUT, ringBytes()
//   src/shared/request-record.ts  REQUEST_RECORD_LAYOUT, COMPLETION_RECORD_LAYOUT,
//                                 IO_OP_VALUES, IO_FLAG_VALUES, *_FIELD_MAX
//   src/shared/volume-control.ts  VOLUME_CONTROL_LAYOUT
//   src/shared/cbt-map.ts         CBT_MAP_LAYOUT
//   src/shared/write-hold.ts      WRITE_HOLD_LAYOUT
//        │ npx tsc -p .            (the runtime tables end up in dist/)
//        ▼
//   node scripts/gen-layout-header.js        reads dist/src/shared/*.js
//        ▼
//   native/include/ublksnap-layout.h         checked in; the addon build never runs this script
//
// test/native/layout-header.test.ts calls generateLayoutHeader() and fails
// when the committed header differs. The output depends on the layout values
// only (no date, no paths of this machine), so regenerating is idempotent.
//
// Usage: node scripts/gen-layout-header.js [--check]
//   --check  write nothing; exit 1 when the committed header is stale.

const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const HEADER_PATH = path.join(ROOT, 'native', 'include', 'ublksnap-layout.h');
const COMPILED_SHARED = path.join(ROOT, 'dist', 'src', 'shared');
const INT32_MAX = 2 ** 31 - 1;
const INT32_MIN = -(2 ** 31);
/**
 * Ring sizes whose byte count the header's ring::Bytes() must reproduce
 * exactly as ring.ts ringBytes() computes it: static_asserts tie the C++
 * formula to the TypeScript one.
 */
const RING_SIZE_SAMPLES = [[1, 1], [4, 2], [64, 9], [4096, 9]];

function loadShared(name) {
  const file = path.join(COMPILED_SHARED, `${name}.js`);
  if (!fs.existsSync(file)) {
    throw new Error(`${path.relative(ROOT, file)} is missing: compile first (npx tsc -p .)`);
  }
  return require(file);
}

/** NAME_LIKE_THIS → kNameLikeThis (the addon's constant style). */
function constantName(name) {
  return 'k' + name.toLowerCase().split('_').map((part) => part[0].toUpperCase() + part.slice(1)).join('');
}

function int32(value, what) {
  if (!Number.isInteger(value) || value < INT32_MIN || value > INT32_MAX) {
    throw new Error(`${what} = ${value} does not fit an int32_t`);
  }
  return String(value);
}

function int64(value, what) {
  if (!Number.isSafeInteger(value)) throw new Error(`${what} = ${value} is not a safe integer`);
  return `int64_t{${value}}`;
}

/** One `constexpr` line per entry of a runtime table; `wide` names the int64_t ones. */
function constants(table, what, wide = new Set()) {
  return Object.entries(table).map(([name, value]) => (wide.has(name)
    ? `constexpr int64_t ${constantName(name)} = ${int64(value, `${what}.${name}`)};`
    : `constexpr int32_t ${constantName(name)} = ${int32(value, `${what}.${name}`)};`));
}

/** `{ns::kA, ns::kB, ...}`: an array of named words for the static_asserts. */
function qualifiedList(namespace, names) {
  return `{${names.map((name) => `${namespace}::${constantName(name)}`).join(', ')}}`;
}

/** The compiled modules' exports that the header is made of. */
function loadLayouts() {
  return {
    ...loadShared('ring'), ...loadShared('request-record'), ...loadShared('volume-control'),
    ...loadShared('cbt-map'), ...loadShared('write-hold'),
  };
}

/**
 * The header's text. `layouts` defaults to the compiled TypeScript tables;
 * a test passes a doctored copy to see the static_asserts refuse it.
 */
function generateLayoutHeader(layouts = loadLayouts()) {
  const {
    RING_LAYOUT, ringBytes, REQUEST_RECORD_LAYOUT, COMPLETION_RECORD_LAYOUT, IO_OP_VALUES, IO_FLAG_VALUES,
    REQUEST_FIELD_MAX, COMPLETION_FIELD_MAX, REQUEST_WORDS, COMPLETION_WORDS, IO_FLAGS_MASK,
    VOLUME_CONTROL_LAYOUT, CBT_MAP_LAYOUT, WRITE_HOLD_LAYOUT,
  } = layouts;
  const ring_header_words = ['HEAD', 'TAIL', 'CONSUMER_SLEEPERS', 'CONSUMER_DOORBELL', 'PRODUCER_SLEEPERS',
    'PRODUCER_DOORBELL', 'CAPACITY', 'RECORD_WORDS'];
  for (const name of ring_header_words) {
    if (!(name in RING_LAYOUT)) throw new Error(`RING_LAYOUT has no ${name}`);
  }
  const ring_samples = RING_SIZE_SAMPLES.map(([capacity, words]) =>
    `static_assert(ring::Bytes(${capacity}, ${words}) == ${int64(ringBytes(capacity, words), 'ringBytes')}, "ring.ts ringBytes(${capacity}, ${words})");`);

  const lines = [
    '// GENERATED FILE: do not edit. Written by scripts/gen-layout-header.js from',
    '// the runtime layout tables of',
    '//   src/shared/ring.ts            RING_LAYOUT, ringBytes()',
    '//   src/shared/request-record.ts  REQUEST_RECORD_LAYOUT, COMPLETION_RECORD_LAYOUT,',
    '//                                 IO_OP_VALUES, IO_FLAG_VALUES, REQUEST_FIELD_MAX,',
    '//                                 COMPLETION_FIELD_MAX',
    '//   src/shared/volume-control.ts  VOLUME_CONTROL_LAYOUT',
    '//   src/shared/cbt-map.ts         CBT_MAP_LAYOUT',
    '//   src/shared/write-hold.ts      WRITE_HOLD_LAYOUT',
    '// To change a layout, change the TypeScript, then run',
    '//   npx tsc -p . && node scripts/gen-layout-header.js',
    '// and commit both; test/native/layout-header.test.ts fails while they differ.',
    '//',
    '// The drawings and the Atomics protocols are in those files\' header comments.',
    '// Every word is an int32_t of a SharedArrayBuffer. JavaScript\'s Atomics are',
    '// sequentially consistent, so C++ uses __ATOMIC_SEQ_CST on the words the',
    '// protocol orders (positions, sequence words) and may copy record words',
    '// with relaxed atomics, as ring.ts copies them with plain accesses.',
    '// A native thread never waits on, nor notifies, the doorbell words: V8\'s',
    '// Atomics.wait/notify do not use the kernel futex (docs/style.md habit 15).',
    '#pragma once',
    '',
    '#include <cstddef>',
    '#include <cstdint>',
    '',
    'namespace ublksnap {',
    'namespace layout {',
    '',
    '// Ring (ring.ts): header word indices, then SEQUENCE[capacity] from',
    '// kHeaderWords, then RECORDS[capacity * record_words].',
    'namespace ring {',
    ...constants(RING_LAYOUT, 'RING_LAYOUT'),
    '',
    '// Word index of the sequence word of a cell, and of the first record word.',
    'constexpr int64_t SequenceIndex(int32_t cell) { return int64_t{kHeaderWords} + cell; }',
    'constexpr int64_t RecordIndex(int32_t capacity, int32_t record_words, int32_t cell) {',
    '  return int64_t{kHeaderWords} + capacity + int64_t{cell} * record_words;',
    '}',
    '// The byte size of a ring, as ringBytes() in ring.ts.',
    'constexpr int64_t Bytes(int32_t capacity, int32_t record_words) {',
    '  return (int64_t{kHeaderWords} + capacity + int64_t{capacity} * record_words) * kWordBytes;',
    '}',
    '}  // namespace ring',
    '',
    '// Request record (request-record.ts): word indices, then each field\'s',
    '// largest value (every field starts at 0; the offset spans OFFSET_LOW,',
    '// read as unsigned, and OFFSET_HIGH).',
    'namespace request {',
    ...constants(REQUEST_RECORD_LAYOUT, 'REQUEST_RECORD_LAYOUT'),
    `constexpr int32_t kWords = ${int32(REQUEST_WORDS, 'REQUEST_WORDS')};`,
    '',
    'namespace max {',
    ...constants(REQUEST_FIELD_MAX, 'REQUEST_FIELD_MAX', new Set(['OFFSET_BYTES'])),
    '}  // namespace max',
    '}  // namespace request',
    '',
    '// Completion record (request-record.ts).',
    'namespace completion {',
    ...constants(COMPLETION_RECORD_LAYOUT, 'COMPLETION_RECORD_LAYOUT'),
    `constexpr int32_t kWords = ${int32(COMPLETION_WORDS, 'COMPLETION_WORDS')};`,
    '',
    'namespace max {',
    ...constants(COMPLETION_FIELD_MAX, 'COMPLETION_FIELD_MAX'),
    '}  // namespace max',
    '}  // namespace completion',
    '',
    '// The OP word (IoOp).',
    'namespace io_op {',
    ...constants(IO_OP_VALUES, 'IO_OP_VALUES'),
    '}  // namespace io_op',
    '',
    '// The FLAGS word (IoFlags bits).',
    'namespace io_flags {',
    ...constants(IO_FLAG_VALUES, 'IO_FLAG_VALUES'),
    `constexpr int32_t kMask = ${int32(IO_FLAGS_MASK, 'IO_FLAGS_MASK')};`,
    '}  // namespace io_flags',
    '',
    '// A volume\'s control block (volume-control.ts): word indices, its size in',
    '// words, and the ARMED_AREA value that means no diff area.',
    'namespace volume_control {',
    ...constants(VOLUME_CONTROL_LAYOUT, 'VOLUME_CONTROL_LAYOUT'),
    '}  // namespace volume_control',
    '',
    '// A CBT map (cbt-map.ts): header word indices (BLOCK_SHIFT is log2 of the',
    '// tracking block in bytes) and the byte where ACTIVE[block_count] starts.',
    'namespace cbt_map {',
    ...constants(CBT_MAP_LAYOUT, 'CBT_MAP_LAYOUT'),
    '}  // namespace cbt_map',
    '',
    '// The test-only write hold (write-hold.ts).',
    'namespace write_hold {',
    ...constants(WRITE_HOLD_LAYOUT, 'WRITE_HOLD_LAYOUT'),
    '}  // namespace write_hold',
    '',
    '// What the compiler can check of the above.',
    'namespace detail {',
    '// Every value of words lies in [0, limit) and none repeats.',
    'template <size_t N>',
    'constexpr bool DistinctBelow(const int32_t (&words)[N], int32_t limit) {',
    '  for (size_t i = 0; i < N; ++i) {',
    '    if (words[i] < 0 || words[i] >= limit) return false;',
    '    for (size_t j = i + 1; j < N; ++j) {',
    '      if (words[i] == words[j]) return false;',
    '    }',
    '  }',
    '  return true;',
    '}',
    'constexpr bool IsPowerOfTwo(int64_t value) { return value > 0 && (value & (value - 1)) == 0; }',
    `constexpr int32_t kRingHeaderWords[] = ${qualifiedList('ring', ring_header_words)};`,
    `constexpr int32_t kRequestWords[] = ${qualifiedList('request', Object.keys(REQUEST_RECORD_LAYOUT))};`,
    `constexpr int32_t kCompletionWords[] = ${qualifiedList('completion', Object.keys(COMPLETION_RECORD_LAYOUT))};`,
    '}  // namespace detail',
    '',
    'static_assert(sizeof(int32_t) == ring::kWordBytes, "ring words are int32");',
    'static_assert(__atomic_always_lock_free(sizeof(int32_t), nullptr), "int32 atomics must be lock-free to share with JavaScript");',
    'static_assert(detail::DistinctBelow(detail::kRingHeaderWords, ring::kHeaderWords), "ring header words fit before SEQUENCE, once each");',
    'static_assert((ring::kTail - ring::kHead) * ring::kWordBytes >= ring::kCacheLineBytes, "HEAD and TAIL on separate cache lines");',
    'static_assert((ring::kConsumerSleepers - ring::kTail) * ring::kWordBytes >= ring::kCacheLineBytes, "TAIL and the doorbells on separate cache lines");',
    'static_assert(detail::IsPowerOfTwo(ring::kCapacityMax) && ring::kCapacityMax < (int64_t{1} << 30), "positions compare by wrapping difference");',
    'static_assert(request::kWords <= ring::kRecordWordsMax && completion::kWords <= ring::kRecordWordsMax, "records fit a ring");',
    'static_assert(sizeof(detail::kRequestWords) / sizeof(int32_t) == request::kWords, "every request word is named");',
    'static_assert(detail::DistinctBelow(detail::kRequestWords, request::kWords), "request words are distinct");',
    'static_assert(sizeof(detail::kCompletionWords) / sizeof(int32_t) == completion::kWords, "every completion word is named");',
    'static_assert(detail::DistinctBelow(detail::kCompletionWords, completion::kWords), "completion words are distinct");',
    'static_assert(request::kOffsetHigh == request::kOffsetLow + 1, "offset halves adjacent, low first");',
    'static_assert((request::max::kOffsetBytes >> 32) <= INT32_MAX, "OFFSET_HIGH fits its word");',
    'static_assert(request::max::kOp == io_op::kWriteZeroes, "OP is an IoOp");',
    'static_assert(request::max::kFlags == io_flags::kMask && io_flags::kMask == (io_flags::kFua | io_flags::kMayUnmap), "FLAGS holds the IoFlags bits");',
    'static_assert(completion::max::kTag == request::max::kTag, "a completion answers a request tag");',
    'static_assert(volume_control::kDetached < volume_control::kWords && volume_control::kArmedArea < volume_control::kWords, "control words fit the block");',
    'static_assert(cbt_map::kMapsByte >= (cbt_map::kBlockCount + 1) * 4, "the maps start after the header words");',
    'static_assert(write_hold::kArmed < write_hold::kWords, "the hold\'s ARMED word fits it");',
    ...ring_samples,
    '',
    '}  // namespace layout',
    '}  // namespace ublksnap',
    '',
  ];
  return lines.join('\n');
}

if (require.main === module) {
  const text = generateLayoutHeader();
  const current = fs.existsSync(HEADER_PATH) ? fs.readFileSync(HEADER_PATH, 'utf8') : null;
  const relative = path.relative(ROOT, HEADER_PATH);
  if (process.argv.includes('--check')) {
    console.log(current === text ? `${relative}: up to date` : `${relative}: stale (run node scripts/gen-layout-header.js)`);
    process.exit(current === text ? 0 : 1);
  }
  if (current === text) {
    console.log(`${relative}: unchanged`);
  } else {
    fs.mkdirSync(path.dirname(HEADER_PATH), { recursive: true });
    fs.writeFileSync(HEADER_PATH, text);
    console.log(`${relative}: written (${text.length} bytes)`);
  }
}

module.exports = { generateLayoutHeader, loadLayouts, HEADER_PATH };

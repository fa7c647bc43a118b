// GENERATED FILE: do not edit. Written by scripts/gen-layout-header.js from
// the runtime layout tables of
//   src/shared/ring.ts            RING_LAYOUT, ringBytes()
//   src/shared/request-record.ts  REQUEST_RECORD_LAYOUT, COMPLETION_RECORD_LAYOUT,
//                                 IO_OP_VALUES, IO_FLAG_VALUES, REQUEST_FIELD_MAX,
//                                 COMPLETION_FIELD_MAX
//   src/shared/volume-control.ts  VOLUME_CONTROL_LAYOUT
//   src/shared/cbt-map.ts         CBT_MAP_LAYOUT
//   src/shared/write-hold.ts      WRITE_HOLD_LAYOUT
// To change a layout, change the TypeScript, then run
//   npx tsc -p . && node scripts/gen-layout-header.js
// and commit both; test/native/layout-header.test.ts fails while they differ.
//
// The drawings and the Atomics protocols are in those files' header comments.
// Every word is an int32_t of a SharedArrayBuffer. JavaScript's Atomics are
// sequentially consistent, so C++ uses __ATOMIC_SEQ_CST on the words the
// protocol orders (positions, sequence words) and may copy record words
// with relaxed atomics, as ring.ts copies them with plain accesses.
// A native thread never waits on, nor notifies, the doorbell words: V8's
// Atomics.wait/notify do not use the kernel futex (docs/style.md habit 15).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ublksnap {
namespace layout {

// Ring (ring.ts): header word indices, then SEQUENCE[capacity] from
// kHeaderWords, then RECORDS[capacity * record_words].
namespace ring {
constexpr int32_t kHead = 0;
constexpr int32_t kTail = 16;
constexpr int32_t kConsumerSleepers = 32;
constexpr int32_t kConsumerDoorbell = 33;
constexpr int32_t kProducerSleepers = 34;
constexpr int32_t kProducerDoorbell = 35;
constexpr int32_t kCapacity = 36;
constexpr int32_t kRecordWords = 37;
constexpr int32_t kHeaderWords = 48;
constexpr int32_t kWordBytes = 4;
constexpr int32_t kCacheLineBytes = 64;
constexpr int32_t kCapacityMax = 1048576;
constexpr int32_t kRecordWordsMax = 64;

// Word index of the sequence word of a cell, and of the first record word.
constexpr int64_t SequenceIndex(int32_t cell) { return int64_t{kHeaderWords} + cell; }
constexpr int64_t RecordIndex(int32_t capacity, int32_t record_words, int32_t cell) {
  return int64_t{kHeaderWords} + capacity + int64_t{cell} * record_words;
}
// The byte size of a ring, as ringBytes() in ring.ts.
constexpr int64_t Bytes(int32_t capacity, int32_t record_words) {
  return (int64_t{kHeaderWords} + capacity + int64_t{capacity} * record_words) * kWordBytes;
}
}  // namespace ring

// Request record (request-record.ts): word indices, then each field's
// largest value (every field starts at 0; the offset spans OFFSET_LOW,
// read as unsigned, and OFFSET_HIGH).
namespace request {
constexpr int32_t kTag = 0;
constexpr int32_t kQueue = 1;
constexpr int32_t kOp = 2;
constexpr int32_t kFlags = 3;
constexpr int32_t kVolume = 4;
constexpr int32_t kSerial = 5;
constexpr int32_t kOffsetLow = 6;
constexpr int32_t kOffsetHigh = 7;
constexpr int32_t kLength = 8;
constexpr int32_t kWords = 9;

namespace max {
constexpr int32_t kTag = 1023;
constexpr int32_t kQueue = 2147483647;
constexpr int32_t kOp = 4;
constexpr int32_t kFlags = 3;
constexpr int32_t kVolume = 65535;
constexpr int32_t kSerial = 2147483647;
constexpr int64_t kOffsetBytes = int64_t{9007199254740991};
constexpr int32_t kLengthBytes = 33554432;
}  // namespace max
}  // namespace request

// Completion record (request-record.ts).
namespace completion {
constexpr int32_t kTag = 0;
constexpr int32_t kErrno = 1;
constexpr int32_t kWords = 2;

namespace max {
constexpr int32_t kTag = 1023;
constexpr int32_t kErrno = 4095;
}  // namespace max
}  // namespace completion

// The OP word (IoOp).
namespace io_op {
constexpr int32_t kRead = 0;
constexpr int32_t kWrite = 1;
constexpr int32_t kFlush = 2;
constexpr int32_t kDiscard = 3;
constexpr int32_t kWriteZeroes = 4;
}  // namespace io_op

// The FLAGS word (IoFlags bits).
namespace io_flags {
constexpr int32_t kNone = 0;
constexpr int32_t kFua = 1;
constexpr int32_t kMayUnmap = 2;
constexpr int32_t kMask = 3;
}  // namespace io_flags

// A volume's control block (volume-control.ts): word indices, its size in
// words, and the ARMED_AREA value that means no diff area.
namespace volume_control {
constexpr int32_t kFrozen = 0;
constexpr int32_t kWritesInFlight = 1;
constexpr int32_t kArmedArea = 2;
constexpr int32_t kDetached = 6;
constexpr int32_t kWords = 8;
constexpr int32_t kNoArea = -1;
}  // namespace volume_control

// A CBT map (cbt-map.ts): header word indices (BLOCK_SHIFT is log2 of the
// tracking block in bytes) and the byte where ACTIVE[block_count] starts.
namespace cbt_map {
constexpr int32_t kActiveNumber = 0;
constexpr int32_t kBlockShift = 2;
constexpr int32_t kBlockCount = 3;
constexpr int32_t kMapsByte = 64;
}  // namespace cbt_map

// The test-only write hold (write-hold.ts).
namespace write_hold {
constexpr int32_t kArmed = 0;
constexpr int32_t kWords = 4;
}  // namespace write_hold

// What the compiler can check of the above.
namespace detail {
// Every value of words lies in [0, limit) and none repeats.
template <size_t N>
constexpr bool DistinctBelow(const int32_t (&words)[N], int32_t limit) {
  for (size_t i = 0; i < N; ++i) {
    if (words[i] < 0 || words[i] >= limit) return false;
    for (size_t j = i + 1; j < N; ++j) {
      if (words[i] == words[j]) return false;
    }
  }
  return true;
}
constexpr bool IsPowerOfTwo(int64_t value) { return value > 0 && (value & (value - 1)) == 0; }
constexpr int32_t kRingHeaderWords[] = {ring::kHead, ring::kTail, ring::kConsumerSleepers, ring::kConsumerDoorbell, ring::kProducerSleepers, ring::kProducerDoorbell, ring::kCapacity, ring::kRecordWords};
constexpr int32_t kRequestWords[] = {request::kTag, request::kQueue, request::kOp, request::kFlags, request::kVolume, request::kSerial, request::kOffsetLow, request::kOffsetHigh, request::kLength};
constexpr int32_t kCompletionWords[] = {completion::kTag, completion::kErrno};
}  // namespace detail

static_assert(sizeof(int32_t) == ring::kWordBytes, "ring words are int32");
static_assert(__atomic_always_lock_free(sizeof(int32_t), nullptr), "int32 atomics must be lock-free to share with JavaScript");
static_assert(detail::DistinctBelow(detail::kRingHeaderWords, ring::kHeaderWords), "ring header words fit before SEQUENCE, once each");
static_assert((ring::kTail - ring::kHead) * ring::kWordBytes >= ring::kCacheLineBytes, "HEAD and TAIL on separate cache lines");
static_assert((ring::kConsumerSleepers - ring::kTail) * ring::kWordBytes >= ring::kCacheLineBytes, "TAIL and the doorbells on separate cache lines");
static_assert(detail::IsPowerOfTwo(ring::kCapacityMax) && ring::kCapacityMax < (int64_t{1} << 30), "positions compare by wrapping difference");
static_assert(request::kWords <= ring::kRecordWordsMax && completion::kWords <= ring::kRecordWordsMax, "records fit a ring");
static_assert(sizeof(detail::kRequestWords) / sizeof(int32_t) == request::kWords, "every request word is named");
static_assert(detail::DistinctBelow(detail::kRequestWords, request::kWords), "request words are distinct");
static_assert(sizeof(detail::kCompletionWords) / sizeof(int32_t) == completion::kWords, "every completion word is named");
static_assert(detail::DistinctBelow(detail::kCompletionWords, completion::kWords), "completion words are distinct");
static_assert(request::kOffsetHigh == request::kOffsetLow + 1, "offset halves adjacent, low first");
static_assert((request::max::kOffsetBytes >> 32) <= INT32_MAX, "OFFSET_HIGH fits its word");
static_assert(request::max::kOp == io_op::kWriteZeroes, "OP is an IoOp");
static_assert(request::max::kFlags == io_flags::kMask && io_flags::kMask == (io_flags::kFua | io_flags::kMayUnmap), "FLAGS holds the IoFlags bits");
static_assert(completion::max::kTag == request::max::kTag, "a completion answers a request tag");
static_assert(volume_control::kDetached < volume_control::kWords && volume_control::kArmedArea < volume_control::kWords, "control words fit the block");
static_assert(cbt_map::kMapsByte >= (cbt_map::kBlockCount + 1) * 4, "the maps start after the header words");
static_assert(write_hold::kArmed < write_hold::kWords, "the hold's ARMED word fits it");
static_assert(ring::Bytes(1, 1) == int64_t{200}, "ring.ts ringBytes(1, 1)");
static_assert(ring::Bytes(4, 2) == int64_t{240}, "ring.ts ringBytes(4, 2)");
static_assert(ring::Bytes(64, 9) == int64_t{2752}, "ring.ts ringBytes(64, 9)");
static_assert(ring::Bytes(4096, 9) == int64_t{164032}, "ring.ts ringBytes(4096, 9)");

}  // namespace layout
}  // namespace ublksnap

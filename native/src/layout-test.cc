// ringPushForTest and ringPopForTest: one push and one pop of a ring.ts
// ring, written in C++ from the generated layout header alone, so that a
// test can send records from JavaScript to C++ and back and compare them
// word by word (test/native/layout-roundtrip.test.ts; docs/style.md habit 2).
//
// Design notes
// - The protocol is ring.ts tryPush/tryPop, Vyukov's bounded MPMC queue:
//     SEQUENCE[c] == p        the cell is free for the producer of p
//     SEQUENCE[c] == p + 1    the record of p is published for its consumer
//     SEQUENCE[c] == p + cap  freed again, for the producer of p + cap
//   Positions are free-running int32 counters compared by their wrapping
//   difference. Every word the protocol orders (HEAD, TAIL, SEQUENCE) is
//   touched with __ATOMIC_SEQ_CST, as JavaScript's Atomics; record words are
//   copied with relaxed atomics (ring.ts copies them with plain accesses:
//   the sequence store that follows publishes them).
// - No word offset is written here: every one comes from
//   native/include/ublksnap-layout.h, which scripts/gen-layout-header.js
//   writes from the TypeScript tables. A layout change that forgets to
//   regenerate the header fails layout-header.test.ts; one that the header
//   follows but this file mishandles fails the round trip.
// - The doorbells are left alone: a native thread neither wakes nor is woken
//   by Atomics.wait (docs/style.md habit 15). The test pops with tryPop, which
//   does not sleep.
// - The arguments are Int32Arrays, since Node 20's Node-API cannot read a
//   SharedArrayBuffer's address, only a view's. The ring view must cover its
//   whole buffer; its header must describe a ring of exactly that size.
#include <cstdint>
#include <string>

#include "../include/ublksnap-layout.h"
#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

namespace ring = layout::ring;

constexpr const char* kPushSignature = "ringPushForTest(ring, record)";
constexpr const char* kPopSignature = "ringPopForTest(ring, out)";
// A CAS lost to another thread retries; a test ring has a handful of
// threads at most, so this many losses in a row is a bug, not contention.
constexpr int kCasRetriesMax = 1 << 20;

struct RingView {
  int32_t* words = nullptr;
  int32_t capacity = 0;
  int32_t record_words = 0;
};

int32_t LoadWord(const int32_t* word) { return __atomic_load_n(word, __ATOMIC_SEQ_CST); }
void StoreWord(int32_t* word, int32_t value) { __atomic_store_n(word, value, __ATOMIC_SEQ_CST); }

// Position arithmetic wraps at 2^32, as `| 0` does in ring.ts.
int32_t WrappingAdd(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
}
int32_t WrappingSub(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) - static_cast<uint32_t>(b));
}

// An Int32Array argument: its first word and its length in words.
bool ReadInt32Array(const Napi::CallbackInfo& info, size_t index, const char* signature,
                    const char* name, int32_t** words, size_t* length) {
  napi_typedarray_type type = napi_int8_array;
  void* data = nullptr;
  napi_status status = napi_invalid_arg;
  if (info[index].IsTypedArray()) {
    status = napi_get_typedarray_info(info.Env(), info[index], &type, length, &data, nullptr, nullptr);
  }
  if (status != napi_ok || type != napi_int32_array) {
    ThrowTypeError(info.Env(), std::string(signature) + ": " + name + " must be an Int32Array");
    return false;
  }
  *words = static_cast<int32_t*>(data);
  return true;
}

// The ring argument, checked against its own header the way ring.ts's
// constructor checks a buffer it attaches to.
bool ReadRing(const Napi::CallbackInfo& info, const char* signature, RingView* view) {
  size_t length = 0;
  if (!ReadInt32Array(info, 0, signature, "ring", &view->words, &length)) return false;
  if (length < static_cast<size_t>(ring::kHeaderWords)) {
    ThrowTypeError(info.Env(), std::string(signature) + ": ring is shorter than a ring header");
    return false;
  }
  view->capacity = LoadWord(view->words + ring::kCapacity);
  view->record_words = LoadWord(view->words + ring::kRecordWords);
  bool capacity_ok = layout::detail::IsPowerOfTwo(view->capacity) && view->capacity <= ring::kCapacityMax;
  bool record_words_ok = view->record_words >= 1 && view->record_words <= ring::kRecordWordsMax;
  if (!capacity_ok || !record_words_ok ||
      static_cast<int64_t>(length) * ring::kWordBytes != ring::Bytes(view->capacity, view->record_words)) {
    ThrowTypeError(info.Env(), std::string(signature) + ": ring's header (capacity " +
                                   std::to_string(view->capacity) + ", record words " +
                                   std::to_string(view->record_words) + ") does not match its " +
                                   std::to_string(length) + " words");
    return false;
  }
  return true;
}

// A record argument of at least the ring's record size.
bool ReadRecord(const Napi::CallbackInfo& info, const char* signature, const char* name,
                const RingView& view, int32_t** record) {
  size_t length = 0;
  if (!ReadInt32Array(info, 1, signature, name, record, &length)) return false;
  if (length < static_cast<size_t>(view.record_words)) {
    ThrowTypeError(info.Env(), std::string(signature) + ": " + name + " holds " + std::to_string(length) +
                                   " words, the ring's records " + std::to_string(view.record_words));
    return false;
  }
  return true;
}

int32_t* CellRecord(const RingView& view, int32_t cell) {
  return view.words + ring::RecordIndex(view.capacity, view.record_words, cell);
}

// ring.ts tryPush. 1 pushed, 0 full, -1 CAS retries exhausted.
int TryPush(const RingView& view, const int32_t* source) {
  int32_t* words = view.words;
  const int32_t mask = view.capacity - 1;
  int32_t position = LoadWord(words + ring::kTail);
  for (int attempt = 0; attempt < kCasRetriesMax; ++attempt) {
    const int32_t cell = position & mask;
    const int32_t turn = WrappingSub(LoadWord(words + ring::SequenceIndex(cell)), position);
    if (turn == 0) {
      int32_t seen = position;
      if (__atomic_compare_exchange_n(words + ring::kTail, &seen, WrappingAdd(position, 1), false,
                                      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        int32_t* record = CellRecord(view, cell);
        for (int32_t w = 0; w < view.record_words; ++w) __atomic_store_n(record + w, source[w], __ATOMIC_RELAXED);
        StoreWord(words + ring::SequenceIndex(cell), WrappingAdd(position, 1));
        return 1;
      }
      position = seen;
    } else if (turn < 0) {
      return 0;
    } else {
      position = LoadWord(words + ring::kTail);
    }
  }
  return -1;
}

// ring.ts tryPop. 1 popped, 0 empty, -1 CAS retries exhausted.
int TryPop(const RingView& view, int32_t* target) {
  int32_t* words = view.words;
  const int32_t mask = view.capacity - 1;
  int32_t position = LoadWord(words + ring::kHead);
  for (int attempt = 0; attempt < kCasRetriesMax; ++attempt) {
    const int32_t cell = position & mask;
    const int32_t turn = WrappingSub(LoadWord(words + ring::SequenceIndex(cell)), WrappingAdd(position, 1));
    if (turn == 0) {
      int32_t seen = position;
      if (__atomic_compare_exchange_n(words + ring::kHead, &seen, WrappingAdd(position, 1), false,
                                      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        const int32_t* record = CellRecord(view, cell);
        for (int32_t w = 0; w < view.record_words; ++w) target[w] = __atomic_load_n(record + w, __ATOMIC_RELAXED);
        StoreWord(words + ring::SequenceIndex(cell), WrappingAdd(position, view.capacity));
        return 1;
      }
      position = seen;
    } else if (turn < 0) {
      return 0;
    } else {
      position = LoadWord(words + ring::kHead);
    }
  }
  return -1;
}

Napi::Value Finish(Napi::Env env, int outcome, const char* signature) {
  if (outcome < 0) {
    Napi::Error::New(env, std::string(signature) + ": lost " + std::to_string(kCasRetriesMax) +
                              " compare-exchanges in a row").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Boolean::New(env, outcome == 1);
}

Napi::Value RingPushForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RingView view;
  int32_t* record = nullptr;
  if (!CheckArgCount(info, 2, 2, kPushSignature) || !ReadRing(info, kPushSignature, &view) ||
      !ReadRecord(info, kPushSignature, "record", view, &record)) {
    return env.Undefined();
  }
  return Finish(env, TryPush(view, record), kPushSignature);
}

Napi::Value RingPopForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RingView view;
  int32_t* out = nullptr;
  if (!CheckArgCount(info, 2, 2, kPopSignature) || !ReadRing(info, kPopSignature, &view) ||
      !ReadRecord(info, kPopSignature, "out", view, &out)) {
    return env.Undefined();
  }
  return Finish(env, TryPop(view, out), kPopSignature);
}

}  // namespace

void InitLayoutTest(Napi::Env env, Napi::Object exports) {
  exports.Set("ringPushForTest", Napi::Function::New(env, RingPushForTest, "ringPushForTest"));
  exports.Set("ringPopForTest", Napi::Function::New(env, RingPopForTest, "ringPopForTest"));
}

}  // namespace ublksnap

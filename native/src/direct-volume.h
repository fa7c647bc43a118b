// Serving a live volume's reads and writes straight from a ublk queue, with
// no JavaScript on the request's path, whenever nothing but the bytes and
// the CBT mark can be needed.
//
// Why: under the per-request JavaScript path (record → actor handler →
// readSync/writeSync → completion ring → microtask → commit) the serving
// thread spent 2.5-4× the CPU of a minimal C server per 4 KiB request
// (bench/README.md, "ublk"). A request that needs no copy-before-write is
// a pread or a pwrite plus a CBT mark: that is done here, and everything
// else still goes to the actor, unchanged.
//
// Served here:
//   READ    of an attached volume: pread into the tag's slot. Reads never
//           take the write gate (src/cow/volume-requests.ts).
//   WRITE   while the volume's gate is open and no diff area is armed (no
//           snapshot taken, or the taken one broken): the same steps as
//           src/cow/volume-requests.ts writeInsideGate, in the same order —
//           enter the gate, mark the CBT, pwrite, fdatasync for FUA, leave
//           the gate — so a take's quiesce sees these writes as it sees the
//           actor's. A write that meets a frozen gate or an armed area is
//           declined before it touched anything.
// Declined (the request goes to JavaScript exactly as the kernel sent it):
//   every other op; a volume marked detached; an armed test write hold;
//   anything outside the volume or the slot; and any failure or short
//   transfer — the actor redoes the request and answers it through the one
//   error table (src/shared/errors.ts). Redoing is safe: a read has no side
//   effect, and a write that failed here left only a CBT mark (marking too
//   much is always allowed) and bytes of an unacknowledged write.
//
// Layout: the control block, the CBT map and the write hold are the
// SharedArrayBuffers the actors use, at the offsets of the generated
// native/include/ublksnap-layout.h.
//
// The one thing native code cannot do is wake a JavaScript waiter (V8's
// Atomics.wait is not the kernel futex): when a write here leaves the gate
// empty while a take has it frozen, TakeDrainedWhileFrozen() says so and
// the JavaScript host notifies (volume-control.ts notifyGateDrained). The
// take's wait also looks again every few milliseconds (waitForZero), so a
// missed notification costs that, never the drain timeout.
//
// Mapped writes (devices created with UBLK_F_NEED_GET_DATA): the kernel
// first says a WRITE is there and waits for the address its data should go
// to. When the write could be served here and every page it covers is
// already in the page cache (mincore), that address is the volume's own
// bytes in a shared mapping of the volume: the kernel copies the data
// straight into the page cache, and nothing is left to do but commit — one
// copy per byte, as the loop driver, instead of two (into the slot, then
// pwrite). The gate is entered and the CBT marked *before* the address is
// handed out (BeginMappedWrite), and the gate is left only when the data
// is in (FinishMappedWrite) or the kernel gave up on the copy
// (AbandonMappedWrite), so a take's quiesce waits for these writes too.
// Pages not in the cache go the slot way: a fault there would read them
// from the disk first (or, on a failing disk, fail the copy). A copy that
// failed anyway (a full filesystem, an I/O error, a shrunk file) turns
// mapped writes off for this volume; the request comes back and takes the
// slot way, where the error is answered through the actor as any other.
// While mapped writes are in flight the mapping must stay (the kernel
// writes into it): Detach is only called once MappedPending() is 0.
//
// One thread serves (the queue's own: an I/O actor's, or a native queue
// thread, which QueueThread guards with a mutex against serveDirect).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace ublksnap {

struct DirectVolumeConfig {
  int fd = -1;                      // the volume's descriptor; Attach keeps its own duplicate
  uint64_t capacity_bytes = 0;
  int32_t* control = nullptr;       // the volume's control block
  uint8_t* cbt = nullptr;           // the volume's CBT map
  uint64_t cbt_bytes = 0;
  int32_t* write_hold = nullptr;    // tests only; null in production
};

struct DirectCounts {
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t declined = 0;            // requests of a direct queue that went to JavaScript
  uint64_t redone = 0;              // of those, requests that failed here first (JavaScript redid them)
  uint64_t mapped_writes = 0;       // writes the kernel copied straight into the volume's pages
  uint64_t mapped_failed = 0;       // mapped copies the kernel could not finish (mapped writes then stop)
};

class DirectVolume {
 public:
  DirectVolume() = default;
  ~DirectVolume() { Detach(); }
  DirectVolume(const DirectVolume&) = delete;
  DirectVolume& operator=(const DirectVolume&) = delete;

  // Returns 0 or the errno of dup(); the caller validated the buffers' sizes.
  int Attach(const DirectVolumeConfig& config);
  void Detach();
  bool attached() const { return fd_ >= 0; }

  // Serves one request if it can, into or from `slot` (slot_bytes long).
  // True: *result is what to commit (the byte count). False: untouched,
  // the request is JavaScript's.
  bool Serve(uint8_t ublk_op, uint32_t ublk_flags, uint64_t offset, uint64_t length, uint8_t* slot,
             uint64_t slot_bytes, int32_t* result);

  // Mapped writes (see above). Begin: the address the kernel should copy
  // this write's data to, with the gate entered and the CBT marked; or
  // nullptr (the slot way, nothing touched). Finish: the data is in
  // (`arrived_bytes` of `length`: fewer when the kernel mapped only part);
  // returns what to commit. Abandon: the kernel will not copy (the request
  // was requeued, the queue aborted); leaves the gate.
  uint8_t* BeginMappedWrite(uint64_t offset, uint64_t length);
  int32_t FinishMappedWrite(uint32_t ublk_flags, uint64_t length, uint64_t arrived_bytes);
  void AbandonMappedWrite();
  uint32_t MappedPending() const { return mapped_pending_.load(std::memory_order_acquire); }
  bool mapped() const { return map_ != nullptr && !map_failed_; }

  // True once after a write here emptied a frozen gate (see above). Any
  // thread: a native queue thread serves, the JavaScript thread takes it.
  bool TakeDrainedWhileFrozen() { return drained_while_frozen_.exchange(false, std::memory_order_acq_rel); }
  bool DrainedWhileFrozen() const { return drained_while_frozen_.load(std::memory_order_acquire); }

  DirectCounts counts() const { return counts_; }

 private:
  bool Read(uint64_t offset, uint64_t length, uint8_t* slot);
  // *tried: the gate was entered (a failure after that is a redo, not a decline).
  bool Write(uint64_t offset, uint64_t length, bool fua, const uint8_t* slot, bool* tried);
  bool EnterGate();
  void LeaveGate();
  void MarkCbt(uint64_t offset, uint64_t length);
  // Attached, a non-empty range inside the volume, and the volume not marked detached.
  bool Serves(uint64_t offset, uint64_t length) const;
  bool WritesHeld() const;
  bool Resident(uint64_t offset, uint64_t length) const;
  bool Sync();
  void Map();

  int fd_ = -1;
  DirectVolumeConfig config_;
  uint8_t* map_ = nullptr;          // the volume, MAP_SHARED (nullptr: no mapped writes)
  size_t map_bytes_ = 0;
  bool map_failed_ = false;
  std::atomic<uint32_t> mapped_pending_{0};
  std::atomic<bool> drained_while_frozen_{false};
  DirectCounts counts_;
};

}  // namespace ublksnap

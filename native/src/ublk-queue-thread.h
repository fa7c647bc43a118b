// QueueThread: one ublk queue hosted by a native thread of its own, the
// other way of serving a queue (UblkQueue's `native_thread` option; the
// default is the caller's event loop, see ublk-queue.cc and
// src/frontends/ublk/session.ts for which is faster and why).
//
//   kernel ──task work──► queue thread (owns the io_uring: FETCH, COMMIT_AND_FETCH)
//                            │ request ring (records)       ▲ commit ring (tag, result)
//                            ▼ + write(to_js eventfd)       │ + write(to_native eventfd)
//   JS thread (an I/O actor): uv_poll on to_js ─► onRequests ─► commit() … submit()
//
// Doorbells (src/shared/ring.ts "who may wait where"): native → JS is the
// to_js eventfd the JS event loop polls; JS → native is the to_native
// eventfd, read by an IORING_OP_READ queued in the thread's own io_uring,
// so the thread's one io_uring_enter wakes on a kernel request or a commit
// alike. No Atomics wait crosses the line.
//
// Rules kept: the thread that made the ring fetched every tag and is the
// only one that commits (the kernel's daemon-task rule); the kernel's
// buffer for tag t is slot t of the caller's slab (zero copy, as before);
// the JS thread sees the same contract as the event-loop host: records
// from index 0 per callback, commit(tag, result) per request, one submit()
// per batch.
//
// Both rings are single-producer single-consumer with capacity ≥ depth:
// a tag is in at most one of them at a time (delivered once, committed
// once, fetched again only after its commit), so neither can be full.
// Nothing here allocates after Open.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include "ublk-queue-core.h"

namespace ublksnap {

class QueueThread {
 public:
  QueueThread() = default;
  ~QueueThread() { Close(); }
  QueueThread(const QueueThread&) = delete;
  QueueThread& operator=(const QueueThread&) = delete;

  // Starts the queue thread, which opens the queue (FETCH of every tag) and
  // serves; returns once the open finished, with its result. The records
  // in `config` are the caller's: Receive() fills them.
  QueueError Open(const QueueConfig& config);
  // Stops the thread (it closes the queue itself) and joins it; idempotent.
  void Close();

  bool is_open() const { return thread_.joinable(); }
  // Readable when requests wait: the caller's event loop polls it.
  int event_fd() const { return to_js_fd_; }
  uint32_t queue_depth() const { return config_.queue_depth; }

  // Caller's thread: clears the doorbell, copies waiting requests into the
  // records from index 0; returns how many.
  uint32_t Receive();
  // Caller's thread: hands a delivered tag's result to the queue thread.
  CommitStatus Commit(uint32_t tag, int32_t result);
  // Caller's thread: rings the queue thread once for every commit since
  // the last Submit; returns how many.
  int Submit();
  unsigned Unsubmitted() const { return unsignalled_commits_; }
  QueueStats stats() const;
  // Caller's thread: the volume the queue thread serves without JavaScript
  // (direct-volume.h), or none. Once it returns, the queue thread no longer
  // touches the previous one (they share direct_mutex_).
  void ServeDirect(DirectVolume* direct);
  // Caller's thread: the direct volume's counts, read under the same mutex.
  DirectCounts DirectCountsOf(const DirectVolume& direct);

 private:
  struct CommitEntry {
    uint32_t tag;
    int32_t result;
  };
  // An index word alone on its cache line: producer and consumer do not share lines.
  struct alignas(64) Index {
    std::atomic<uint32_t> value{0};
  };

  void Run();
  void ServeLoop();
  void ForwardRequests();
  void TakeCommits();
  void Ring(int fd);

  QueueConfig config_;           // records: the caller's
  QueueCore core_;               // the queue thread's alone after Open
  std::thread thread_;
  int to_js_fd_ = -1;
  int to_native_fd_ = -1;
  uint64_t doorbell_counter_ = 0;  // the queue thread's READ target
  std::atomic<bool> stopping_{false};

  // Open's hand-shake.
  std::mutex open_mutex_;
  std::condition_variable open_done_;
  bool open_finished_ = false;
  QueueError open_error_;

  // Request ring: queue thread → caller. capacity_ records of kRequestWords.
  uint32_t capacity_ = 0;
  std::unique_ptr<int32_t[]> request_records_;
  std::unique_ptr<int32_t[]> staging_;   // QueueCore::Report's output, on the queue thread
  Index request_head_;                   // caller consumes
  Index request_tail_;                   // queue thread produces
  // Commit ring: caller → queue thread.
  std::unique_ptr<CommitEntry[]> commits_;
  Index commit_head_;                    // queue thread consumes
  Index commit_tail_;                    // caller produces
  // Held by the queue thread while it serves directly, by the caller while
  // it changes the core's direct volume or reads its counts. Uncontended
  // but for that.
  std::mutex direct_mutex_;

  // Caller's side.
  std::unique_ptr<uint8_t[]> owned_;     // per tag: delivered to JS, not yet committed
  unsigned unsignalled_commits_ = 0;
  uint64_t delivered_ = 0;
  uint64_t committed_ = 0;
  // Published by the queue thread for stats().
  std::atomic<uint32_t> aborted_{0};
  std::atomic<uint32_t> failed_{0};
  std::atomic<int32_t> last_error_{0};
  std::atomic<uint64_t> wakeups_{0};
  std::atomic<uint32_t> lost_commits_{0};  // commits the core refused: a bug, counted not hidden
};

}  // namespace ublksnap

// One ublk queue on a native thread of its own. See ublk-queue-thread.h.
#include "ublk-queue-thread.h"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ublksnap {
namespace {

// PR_SET_IO_FLUSHER (Linux 5.6); older C headers lack the name.
#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

// The queue thread sleeps only in io_uring_enter: let the kernel run task
// work there and nowhere else (no IPIs to a running thread).
constexpr uint32_t kThreadRingSetupFlags =
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
// io_uring_enter failures in a row (other than EINTR, EAGAIN, EBUSY) after
// which the thread stops serving: the ring is broken, spinning helps no one.
constexpr int kEnterErrorsMax = 100;
// pthread names are at most 15 characters and the NUL.
constexpr size_t kThreadNameBytes = 16;

uint32_t PowerOfTwoAtLeast(uint32_t value) {
  uint32_t result = 1;
  while (result < value) result <<= 1;
  return result;
}

// A bug in the rings' accounting: crash loudly (docs/style.md habit 8: a bug asserts).
void Check(bool condition, const char* what) {
  if (condition) return;
  fprintf(stderr, "ublksnap: queue thread invariant broken: %s\n", what);
  abort();
}

}  // namespace

QueueError QueueThread::Open(const QueueConfig& config) {
  Check(!thread_.joinable(), "Open on an open queue");
  config_ = config;
  capacity_ = PowerOfTwoAtLeast(config.queue_depth);
  request_records_.reset(new int32_t[capacity_ * kRequestWords]);
  staging_.reset(new int32_t[config.queue_depth * kRequestWords]);
  commits_.reset(new CommitEntry[capacity_]);
  owned_.reset(new uint8_t[config.queue_depth]());
  stopping_.store(false);
  open_finished_ = false;
  QueueError error;
  to_js_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (to_js_fd_ < 0) error.error = errno;
  to_native_fd_ = error.error == 0 ? eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) : -1;
  if (error.error == 0 && to_native_fd_ < 0) error.error = errno;
  if (error.error != 0) {
    error.syscall = "eventfd";
    error.message = std::string("eventfd queue thread doorbell: ") + strerror(error.error);
    Close();
    return error;
  }
  thread_ = std::thread(&QueueThread::Run, this);
  std::unique_lock<std::mutex> lock(open_mutex_);
  open_done_.wait(lock, [this] { return open_finished_; });
  error = open_error_;
  lock.unlock();
  if (error.error != 0) Close();  // the thread has already ended: join it
  return error;
}

void QueueThread::Run() {
  // Signals belong to Node's threads; a ublk thread must not take them.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  // Memory reclaim may write back through this very device: this thread
  // must not wait for reclaim that waits for it. Best effort, as for the
  // JS host (whose session logs a refusal once).
  prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
  char name[kThreadNameBytes];
  snprintf(name, sizeof name, "ublk-q%u.%u", config_.dev_id, static_cast<unsigned>(config_.queue_id));
  pthread_setname_np(pthread_self(), name);

  QueueConfig core_config = config_;
  core_config.records = staging_.get();
  core_config.ring_setup_flags = kThreadRingSetupFlags;
  core_config.completion_eventfd = false;
  QueueError error = core_.Open(core_config);
  if (error.error == 0 && !core_.ArmDoorbell(to_native_fd_, &doorbell_counter_)) {
    error.error = EAGAIN;
    error.syscall = "io_uring sqe";
    error.message = "io_uring sqe: no room for the commit doorbell";
  }
  {
    std::lock_guard<std::mutex> lock(open_mutex_);
    open_error_ = error;
    open_finished_ = true;
  }
  open_done_.notify_one();
  if (error.error == 0) ServeLoop();
  // This thread made the ring: it also ends it (cancelling the FETCHes).
  core_.Close();
}

void QueueThread::ServeLoop() {
  int errors_in_a_row = 0;
  while (!stopping_.load(std::memory_order_acquire)) {
    int entered = core_.SubmitAndWait();
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    if (entered < 0 && entered != -EINTR && entered != -EAGAIN && entered != -EBUSY) {
      last_error_.store(-entered, std::memory_order_relaxed);
      // Harvest below may free the ring; a ring that keeps failing is given up.
      if (++errors_in_a_row >= kEnterErrorsMax) return;
    } else {
      errors_in_a_row = 0;
    }
    core_.Harvest();
    // The commit doorbell fired (or the stop): re-arm it before sleeping again.
    if (core_.TakeDoorbell()) Check(core_.ArmDoorbell(to_native_fd_, &doorbell_counter_), "doorbell SQE");
    ForwardRequests();
    TakeCommits();
    QueueStats stats = core_.stats();
    aborted_.store(stats.aborted, std::memory_order_relaxed);
    failed_.store(stats.failed, std::memory_order_relaxed);
    if (stats.last_error != 0) last_error_.store(stats.last_error, std::memory_order_relaxed);
  }
}

void QueueThread::ForwardRequests() {
  uint32_t count = 0;
  bool drained = false;
  {
    std::lock_guard<std::mutex> lock(direct_mutex_);
    count = core_.Report();  // serves what the direct volume can, commits queued for the next enter
    drained = core_.direct() != nullptr && core_.direct()->DrainedWhileFrozen();
  }
  // A direct write emptied a frozen gate: the caller's thread must notify
  // the take (UblkQueue::OnReadable takes the flag), so ring even with no record.
  if (count == 0) {
    if (drained) Ring(to_js_fd_);
    return;
  }
  uint32_t tail = request_tail_.value.load(std::memory_order_relaxed);
  uint32_t head = request_head_.value.load(std::memory_order_acquire);
  Check(tail - head + count <= capacity_, "request ring full (more requests than tags?)");
  for (uint32_t index = 0; index < count; index += 1) {
    const int32_t* from = staging_.get() + index * kRequestWords;
    int32_t* to = request_records_.get() + ((tail + index) & (capacity_ - 1)) * kRequestWords;
    memcpy(to, from, kRequestWords * sizeof(int32_t));
  }
  request_tail_.value.store(tail + count, std::memory_order_release);
  Ring(to_js_fd_);
}

void QueueThread::TakeCommits() {
  uint32_t head = commit_head_.value.load(std::memory_order_relaxed);
  uint32_t tail = commit_tail_.value.load(std::memory_order_acquire);
  for (; head != tail; head += 1) {
    const CommitEntry& entry = commits_[head & (capacity_ - 1)];
    // The caller checked ownership; the core checks it again against the kernel's view.
    if (core_.Commit(entry.tag, entry.result) != CommitStatus::kOk) lost_commits_.fetch_add(1, std::memory_order_relaxed);
  }
  commit_head_.value.store(head, std::memory_order_release);
}

void QueueThread::Ring(int fd) {
  uint64_t one = 1;
  // EAGAIN only at a counter of 2^64-2: impossible. The reader drains it.
  ssize_t ignored = write(fd, &one, sizeof one);
  static_cast<void>(ignored);
}

uint32_t QueueThread::Receive() {
  if (!is_open()) return 0;
  uint64_t counter = 0;
  // Cleared before looking: a record pushed after this read rings again.
  ssize_t ignored = read(to_js_fd_, &counter, sizeof counter);
  static_cast<void>(ignored);
  uint32_t head = request_head_.value.load(std::memory_order_relaxed);
  uint32_t tail = request_tail_.value.load(std::memory_order_acquire);
  uint32_t count = tail - head;
  Check(count <= config_.queue_depth, "more requests waiting than tags");
  for (uint32_t index = 0; index < count; index += 1) {
    const int32_t* from = request_records_.get() + ((head + index) & (capacity_ - 1)) * kRequestWords;
    int32_t* to = config_.records + index * kRequestWords;
    memcpy(to, from, kRequestWords * sizeof(int32_t));
    owned_[static_cast<uint32_t>(to[kWordTag])] = 1;
  }
  request_head_.value.store(tail, std::memory_order_release);
  delivered_ += count;
  return count;
}

CommitStatus QueueThread::Commit(uint32_t tag, int32_t result) {
  if (!is_open()) return CommitStatus::kClosed;
  if (tag >= config_.queue_depth) return CommitStatus::kBadTag;
  if (owned_[tag] == 0) return CommitStatus::kNotOwned;
  owned_[tag] = 0;
  uint32_t tail = commit_tail_.value.load(std::memory_order_relaxed);
  Check(tail - commit_head_.value.load(std::memory_order_acquire) < capacity_, "commit ring full");
  commits_[tail & (capacity_ - 1)] = CommitEntry{tag, result};
  commit_tail_.value.store(tail + 1, std::memory_order_release);
  unsignalled_commits_ += 1;
  committed_ += 1;
  return CommitStatus::kOk;
}

int QueueThread::Submit() {
  if (unsignalled_commits_ == 0) return 0;
  int count = static_cast<int>(unsignalled_commits_);
  unsignalled_commits_ = 0;
  Ring(to_native_fd_);
  return count;
}

QueueStats QueueThread::stats() const {
  QueueStats stats;
  stats.delivered = delivered_;
  stats.committed = committed_;
  stats.in_flight = static_cast<uint32_t>(delivered_ - committed_);
  stats.aborted = aborted_.load(std::memory_order_relaxed);
  stats.failed = failed_.load(std::memory_order_relaxed) + lost_commits_.load(std::memory_order_relaxed);
  stats.last_error = last_error_.load(std::memory_order_relaxed);
  stats.wakeups = wakeups_.load(std::memory_order_relaxed);
  return stats;
}

void QueueThread::Close() {
  if (thread_.joinable()) {
    stopping_.store(true, std::memory_order_release);
    Ring(to_native_fd_);
    thread_.join();
  }
  if (to_js_fd_ >= 0) close(to_js_fd_);
  if (to_native_fd_ >= 0) close(to_native_fd_);
  to_js_fd_ = -1;
  to_native_fd_ = -1;
}

void QueueThread::ServeDirect(DirectVolume* direct) {
  std::lock_guard<std::mutex> lock(direct_mutex_);
  core_.ServeDirect(direct);
}

DirectCounts QueueThread::DirectCountsOf(const DirectVolume& direct) {
  std::lock_guard<std::mutex> lock(direct_mutex_);
  return direct.counts();
}

}  // namespace ublksnap

// A minimal io_uring on raw system calls. See ublk-ring.h.
#include "ublk-ring.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace ublksnap {
namespace {

// SQEs are 128 bytes with IORING_SETUP_SQE128, else 64.
constexpr size_t kSqe128Bytes = 128;

unsigned LoadAcquire(const unsigned* index) { return __atomic_load_n(index, __ATOMIC_ACQUIRE); }
void StoreRelease(unsigned* index, unsigned value) { __atomic_store_n(index, value, __ATOMIC_RELEASE); }

}  // namespace

int IoRing::Setup(unsigned entries, uint32_t setup_flags) {
  io_uring_params params;
  memset(&params, 0, sizeof params);
  params.flags = setup_flags;
  int fd = static_cast<int>(syscall(__NR_io_uring_setup, entries, &params));
  if (fd < 0) return errno;
  fd_ = fd;
  features_ = params.features;
  sq_entries_ = params.sq_entries;
  sqe_bytes_ = (setup_flags & IORING_SETUP_SQE128) != 0 ? kSqe128Bytes : sizeof(io_uring_sqe);
  int error = MapRings(params);
  if (error != 0) Close();
  return error;
}

int IoRing::MapRings(const io_uring_params& params) {
  // Every kernel with ublk (6.0+) has IORING_FEAT_SINGLE_MMAP (5.4): one
  // mapping holds both rings, sized for the larger.
  if ((params.features & IORING_FEAT_SINGLE_MMAP) == 0) return ENOSYS;
  size_t sq_bytes = params.sq_off.array + params.sq_entries * sizeof(unsigned);
  size_t cq_bytes = params.cq_off.cqes + params.cq_entries * sizeof(io_uring_cqe);
  ring_map_bytes_ = sq_bytes > cq_bytes ? sq_bytes : cq_bytes;
  void* rings = mmap(nullptr, ring_map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                     fd_, IORING_OFF_SQ_RING);
  if (rings == MAP_FAILED) return errno;
  ring_map_ = rings;
  sqe_map_bytes_ = params.sq_entries * sqe_bytes_;
  void* sqes = mmap(nullptr, sqe_map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                    fd_, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) return errno;
  sqe_map_ = sqes;

  char* base = static_cast<char*>(rings);
  sq_head_ = reinterpret_cast<unsigned*>(base + params.sq_off.head);
  sq_tail_ = reinterpret_cast<unsigned*>(base + params.sq_off.tail);
  sq_mask_ = *reinterpret_cast<unsigned*>(base + params.sq_off.ring_mask);
  sq_array_ = reinterpret_cast<unsigned*>(base + params.sq_off.array);
  sq_local_tail_ = *sq_tail_;
  cq_head_ = reinterpret_cast<unsigned*>(base + params.cq_off.head);
  cq_tail_ = reinterpret_cast<unsigned*>(base + params.cq_off.tail);
  cq_mask_ = *reinterpret_cast<unsigned*>(base + params.cq_off.ring_mask);
  cqes_ = reinterpret_cast<io_uring_cqe*>(base + params.cq_off.cqes);
  return 0;
}

void IoRing::Close() {
  if (sqe_map_ != nullptr) munmap(sqe_map_, sqe_map_bytes_);
  if (ring_map_ != nullptr) munmap(ring_map_, ring_map_bytes_);
  sqe_map_ = nullptr;
  ring_map_ = nullptr;
  if (fd_ >= 0) close(fd_);  // the kernel cancels what is still in flight
  fd_ = -1;
}

io_uring_sqe* IoRing::NextSqe() {
  unsigned head = LoadAcquire(sq_head_);
  if (sq_local_tail_ - head >= sq_entries_) return nullptr;
  unsigned index = sq_local_tail_ & sq_mask_;
  auto* sqe = reinterpret_cast<io_uring_sqe*>(static_cast<char*>(sqe_map_) + index * sqe_bytes_);
  memset(sqe, 0, sqe_bytes_);
  sq_array_[index] = index;  // identity map: slot i holds SQE i
  sq_local_tail_ += 1;
  return sqe;
}

void IoRing::Publish() {
  // The SQE bytes must be visible before the tail that hands them over.
  std::atomic_thread_fence(std::memory_order_release);
  StoreRelease(sq_tail_, sq_local_tail_);
}

unsigned IoRing::Unsubmitted() const { return *sq_tail_ - LoadAcquire(sq_head_); }

int IoRing::Enter(unsigned to_submit, unsigned min_complete, unsigned enter_flags,
                  const void* arg, size_t arg_bytes) {
  long result = syscall(__NR_io_uring_enter, fd_, to_submit, min_complete, enter_flags, arg, arg_bytes);
  return result < 0 ? -errno : static_cast<int>(result);
}

int IoRing::Register(unsigned opcode, const void* arg, unsigned count) {
  long result = syscall(__NR_io_uring_register, fd_, opcode, arg, count);
  return result < 0 ? -errno : static_cast<int>(result);
}

const io_uring_cqe* IoRing::PeekCqe() const {
  unsigned head = *cq_head_;
  if (head == LoadAcquire(cq_tail_)) return nullptr;
  return &cqes_[head & cq_mask_];
}

void IoRing::CqAdvance() {
  // Release: our reads of the CQE happen before the kernel may reuse it.
  StoreRelease(cq_head_, *cq_head_ + 1);
}

}  // namespace ublksnap

// A minimal io_uring on raw system calls (no liburing): setup, the mmapped
// submission and completion rings, register and enter.
//
// Why not liburing: the addon must build on hosts whose liburing lacks
// SQE128 / URING_CMD (bookworm has 2.3) and must not add a runtime library.
// ublk needs little: URING_CMD SQEs, a fixed file, an eventfd, and a wait
// with a timeout.
//
// Memory ordering: the kernel reads the SQ tail and writes the SQ head and
// the CQ tail; we own the SQ tail and the CQ head. So we load the kernel's
// indices with acquire and publish ours with release (plus a store fence
// before the SQ tail, so every SQE byte is visible before the kernel can see
// the new tail).
//
// Not thread-safe: one thread drives a ring (ublk also requires that the
// queue's commands come from one task).
#pragma once

#include <linux/io_uring.h>

#include <cstddef>
#include <cstdint>

namespace ublksnap {

class IoRing {
 public:
  IoRing() = default;
  ~IoRing() { Close(); }
  IoRing(const IoRing&) = delete;
  IoRing& operator=(const IoRing&) = delete;

  // io_uring_setup with at least `entries` SQEs and the IORING_SETUP_* flags
  // (SQE128 makes every SQE 128 bytes). Returns 0 or an errno.
  int Setup(unsigned entries, uint32_t setup_flags);
  // Unmaps and closes; idempotent.
  void Close();

  int fd() const { return fd_; }
  unsigned sq_entries() const { return sq_entries_; }
  bool has_ext_arg() const { return (features_ & IORING_FEAT_EXT_ARG) != 0; }

  // A zeroed SQE to fill, or nullptr when the SQ is full. It belongs to the
  // kernel only after Publish().
  io_uring_sqe* NextSqe();
  // Makes every SQE handed out by NextSqe visible to the kernel.
  void Publish();
  // SQEs published but not yet consumed by io_uring_enter.
  unsigned Unsubmitted() const;

  // io_uring_enter; returns the count (>= 0) or -errno. arg/arg_bytes are
  // for IORING_ENTER_EXT_ARG.
  int Enter(unsigned to_submit, unsigned min_complete, unsigned enter_flags,
            const void* arg = nullptr, size_t arg_bytes = 0);
  // io_uring_register; returns 0 (or the kernel's count) or -errno.
  int Register(unsigned opcode, const void* arg, unsigned count);

  // The oldest unreaped CQE, or nullptr. Stays valid until CqAdvance.
  const io_uring_cqe* PeekCqe() const;
  void CqAdvance();

 private:
  int MapRings(const io_uring_params& params);

  int fd_ = -1;
  uint32_t features_ = 0;
  unsigned sq_entries_ = 0;
  size_t sqe_bytes_ = sizeof(io_uring_sqe);

  void* ring_map_ = nullptr;   // SQ and CQ rings (IORING_FEAT_SINGLE_MMAP)
  size_t ring_map_bytes_ = 0;
  void* sqe_map_ = nullptr;    // the SQE array
  size_t sqe_map_bytes_ = 0;

  unsigned* sq_head_ = nullptr;   // written by the kernel
  unsigned* sq_tail_ = nullptr;   // written by us
  unsigned sq_mask_ = 0;
  unsigned* sq_array_ = nullptr;
  unsigned sq_local_tail_ = 0;    // SQEs handed out, published or not

  unsigned* cq_head_ = nullptr;   // written by us
  unsigned* cq_tail_ = nullptr;   // written by the kernel
  unsigned cq_mask_ = 0;
  io_uring_cqe* cqes_ = nullptr;
};

}  // namespace ublksnap

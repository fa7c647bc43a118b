// One ublk queue, without Node-API: /dev/ublkcN, its mmapped request
// descriptors, a 64-byte-SQE io_uring with ublkcN as fixed file 0 and an
// eventfd that the kernel signals on every completion, and the per-tag
// ownership that keeps commits honest.
//
// The thread that calls Open becomes the queue's daemon task for the kernel:
// every later call must come from that same thread (the kernel refuses
// commands from other tasks, and delivers requests as task work to it).
//
// Tag life cycle:
//   kKernel  --CQE res 0-->  kReady  --Report-->  kOwned  --Commit-->  kKernel
//   kKernel  --CQE -ENODEV or error-->  kDone (never fetched again)
// With UBLK_F_NEED_GET_DATA a WRITE first arrives without its data:
//   kKernel  --CQE NEED_GET_DATA-->  kReady  --Report: NEED_GET_DATA-->  kGetData
//   kGetData --CQE res 0-->  kReady (the data is in: slot, or the volume itself)
// where Report hands the kernel the address for the data: the direct
// volume's mapped bytes when it takes the write (direct-volume.h, "Mapped
// writes"; committed in Report, no record), else the tag's slot (the write
// then goes on as any request).
// Nothing here allocates after Open.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "direct-volume.h"
#include "ublk-ring.h"
#include "ublk-uapi.h"

namespace ublksnap {

// The request record written for JavaScript, in 32-bit words.
enum RequestWord : uint32_t {
  kWordTag = 0,
  kWordOp = 1,           // UBLK_IO_OP_*: the low 8 bits of op_flags
  kWordFlags = 2,        // UBLK_IO_F_* bits in their own positions
  kWordNrSectors = 3,    // unsigned: read with >>> 0
  kWordStartLow = 4,     // unsigned low 32 bits of the start sector
  kWordStartHigh = 5,    // high 32 bits
  kRequestWords = 6,
};

struct QueueConfig {
  uint32_t dev_id = 0;
  uint16_t queue_id = 0;
  uint16_t queue_depth = 0;
  uint64_t slot_bytes = 0;
  uint8_t* slots = nullptr;      // slot 0; slot t at slots + t * slot_bytes
  int32_t* records = nullptr;    // queue_depth * kRequestWords words
  bool ioctl_opcodes = true;     // UBLK_U_IO_* rather than the legacy numbers
  // IORING_SETUP_* flags of the queue ring. An event-loop host needs 0 (task
  // work must interrupt epoll_wait); a thread that sleeps in io_uring_enter
  // can take COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN (fewer IPIs).
  uint32_t ring_setup_flags = 0;
  // Register an eventfd the kernel signals on every completion (event_fd()):
  // only a host that polls it from an event loop needs one.
  bool completion_eventfd = true;
};

struct QueueError {
  int error = 0;          // errno; 0 = success
  std::string syscall;
  std::string message;
};

struct QueueStats {
  uint64_t delivered = 0;   // requests reported to JavaScript
  uint64_t committed = 0;   // commits queued
  uint32_t in_flight = 0;   // tags JavaScript owns now
  uint32_t aborted = 0;     // tags ended by UBLK_IO_RES_ABORT
  uint32_t failed = 0;      // tags ended by another error CQE
  int32_t last_error = 0;   // the errno of the last such CQE
  uint64_t wakeups = 0;     // a queue thread's returns from io_uring_enter (0 on an event loop)
};

enum class CommitStatus { kOk, kBadTag, kNotOwned, kClosed, kNoSqe };

class QueueCore {
 public:
  QueueCore() = default;
  ~QueueCore() { Close(); }
  QueueCore(const QueueCore&) = delete;
  QueueCore& operator=(const QueueCore&) = delete;

  // Opens, maps, sets up the ring and submits FETCH_REQ for every tag in
  // one io_uring_enter. On failure everything is released again.
  QueueError Open(const QueueConfig& config);
  // Releases everything in the order DEL_DEV needs; idempotent.
  void Close();

  bool is_open() const { return ring_.fd() >= 0; }
  int event_fd() const { return event_fd_; }
  uint32_t queue_depth() const { return config_.queue_depth; }

  // Clears the eventfd's counter (non-blocking).
  void DrainEventFd();
  // Moves every CQE into the tags' states (no JavaScript involved).
  void Harvest();
  // Serves what the direct volume can (committing it, no system call) and
  // writes one record per other ready tag, from 0; returns how many records.
  uint32_t Report();
  // The volume whose requests Report serves without JavaScript, or none
  // (nullptr). Only a thread that runs JavaScript may host one: see
  // DirectVolume::TakeDrainedWhileFrozen.
  void ServeDirect(DirectVolume* direct) { direct_ = direct; }
  DirectVolume* direct() const { return direct_; }
  // Queues COMMIT_AND_FETCH_REQ for an owned tag; no system call.
  CommitStatus Commit(uint32_t tag, int32_t result);
  // Submits every queued SQE; returns the count or -errno.
  int Submit();
  // Submits every queued SQE and sleeps in the same io_uring_enter until at
  // least one completion is there (the native queue thread's only wait).
  // Returns the count submitted or -errno (EINTR: a signal, just call again).
  int SubmitAndWait();
  // Queues an 8-byte READ of `fd` (an eventfd) into `counter`: its
  // completion wakes SubmitAndWait. Harvest notes it (TakeDoorbell); the
  // caller re-arms it after each. Returns false when the SQ is full.
  bool ArmDoorbell(int fd, uint64_t* counter);
  // True once per doorbell completion seen by Harvest since the last call.
  bool TakeDoorbell() {
    bool rang = doorbell_rang_;
    doorbell_rang_ = false;
    return rang;
  }
  unsigned Unsubmitted() const { return is_open() ? ring_.Unsubmitted() : 0; }

  QueueStats stats() const { return stats_; }

 private:
  enum TagState : uint8_t { kKernel, kReady, kOwned, kGetData, kDone };

  QueueError OpenCharDevice();
  QueueError MapDescriptors();
  QueueError SetupRing();
  QueueError FetchAll();
  // True while any tag's FETCH or COMMIT_AND_FETCH is still with the kernel.
  bool KernelHoldsAny() const;
  void PrepareIo(uint32_t opcode_number, uint32_t tag, int32_t result, const uint8_t* buffer);
  bool ServeDirectly(uint32_t tag, const uapi::IoDesc& desc);
  void EndTag(uint32_t tag, int32_t result);  // kDone after an abort or error CQE
  // A WRITE waits for its data's address: the volume's bytes or the slot.
  void GetData(uint32_t tag, const uapi::IoDesc& desc);
  // The CQE of a mapped write's GET_DATA: finished and committed (true), or
  // abandoned (the kernel put the request back), and the CQE is a request
  // like any other (false).
  bool SettleMappedWrite(uint32_t tag, const uapi::IoDesc& desc);
  void AbandonMappedWrites();
  bool MappedWriteStartsAt(uint64_t offset) const;
  uint8_t* SlotAddress(uint32_t tag) const { return config_.slots + tag * config_.slot_bytes; }

  QueueConfig config_;
  IoRing ring_;
  int char_fd_ = -1;
  int event_fd_ = -1;
  const uapi::IoDesc* descriptors_ = nullptr;
  size_t descriptor_map_bytes_ = 0;
  std::unique_ptr<TagState[]> states_;
  std::unique_ptr<uint16_t[]> ready_;   // tags harvested, not yet reported
  std::unique_ptr<int32_t[]> results_;  // their CQE results (kIoResOk, kIoResNeedGetData, or -errno for a mapped write)
  // Per tag in kGetData: the volume its data goes to (nullptr: the slot), and the bytes asked for.
  std::unique_ptr<DirectVolume*[]> mapped_volume_;
  std::unique_ptr<uint64_t[]> mapped_bytes_;
  std::unique_ptr<uint64_t[]> mapped_offset_;
  uint32_t ready_count_ = 0;
  bool doorbell_rang_ = false;
  DirectVolume* direct_ = nullptr;
  QueueStats stats_;
};

}  // namespace ublksnap

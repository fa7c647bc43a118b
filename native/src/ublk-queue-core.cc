// One ublk queue, without Node-API. See ublk-queue-core.h.
#include "ublk-queue-core.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ublksnap {
namespace {

// /dev/ublkcN may still be held by udev right after ADD_DEV: retry EBUSY
// this many times, this far apart (1 s in all).
constexpr int kOpenBusyRetries = 100;
constexpr useconds_t kOpenBusyPollUs = 10 * 1000;
// io_uring_enter in Submit: how often EAGAIN/EBUSY is retried before the
// rest is left queued for the next Submit.
constexpr int kSubmitBusyRetries = 8;
// The ring holds a FETCH or COMMIT per tag plus room for a second batch.
constexpr unsigned kRingEntriesPerTag = 2;
// The only file of the ring: /dev/ublkcN as fixed file 0.
constexpr int kCharDeviceFixedIndex = 0;
// user_data of the doorbell READ: above every tag (tags are < 2^16).
constexpr uint64_t kDoorbellUserData = uint64_t{1} << 32;
// Flags a kernel may lack (COOP_TASKRUN 5.19, SINGLE_ISSUER 6.0,
// DEFER_TASKRUN 6.1): without them the ring still works, with more IPIs.
constexpr uint32_t kOptionalSetupFlags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;

size_t RoundUp(size_t value, size_t multiple) { return (value + multiple - 1) / multiple * multiple; }

unsigned PowerOfTwoAtLeast(unsigned value) {
  unsigned result = 1;
  while (result < value) result <<= 1;
  return result;
}

QueueError Error(int error_number, const char* syscall, const std::string& subject) {
  QueueError error;
  error.error = error_number;
  error.syscall = syscall;
  error.message = std::string(syscall) + " " + subject + ": " + strerror(error_number);
  return error;
}

}  // namespace

QueueError QueueCore::Open(const QueueConfig& config) {
  config_ = config;
  states_.reset(new TagState[config.queue_depth]);
  ready_.reset(new uint16_t[config.queue_depth]);
  results_.reset(new int32_t[config.queue_depth]);
  mapped_volume_.reset(new DirectVolume*[config.queue_depth]);
  mapped_bytes_.reset(new uint64_t[config.queue_depth]);
  mapped_offset_.reset(new uint64_t[config.queue_depth]);
  for (uint32_t tag = 0; tag < config.queue_depth; tag += 1) {
    states_[tag] = kKernel;
    mapped_volume_[tag] = nullptr;
  }
  ready_count_ = 0;
  stats_ = QueueStats();
  QueueError error = OpenCharDevice();
  if (error.error == 0) error = MapDescriptors();
  if (error.error == 0) error = SetupRing();
  if (error.error == 0) error = FetchAll();
  if (error.error != 0) Close();
  return error;
}

QueueError QueueCore::OpenCharDevice() {
  std::string path = uapi::kCharDevicePrefix + std::to_string(config_.dev_id);
  for (int attempt = 0;; attempt += 1) {
    char_fd_ = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (char_fd_ >= 0) return QueueError();
    int error = errno;
    if (error == EINTR) continue;  // a signal: open again
    // EBUSY: udev (or a previous server that has not let go) holds it.
    if (error != EBUSY || attempt >= kOpenBusyRetries) return Error(error, "open", path);
    usleep(kOpenBusyPollUs);
  }
}

QueueError QueueCore::MapDescriptors() {
  const size_t page_bytes = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  // Each queue's area is sized for the largest depth; the mapping itself
  // must be exactly this queue's depth, rounded to pages.
  const size_t area_bytes = RoundUp(uapi::kMaxQueueDepth * sizeof(uapi::IoDesc), page_bytes);
  descriptor_map_bytes_ = RoundUp(config_.queue_depth * sizeof(uapi::IoDesc), page_bytes);
  off_t offset = static_cast<off_t>(uapi::kDescriptorMmapOffsetBytes + config_.queue_id * area_bytes);
  void* map = mmap(nullptr, descriptor_map_bytes_, PROT_READ, MAP_SHARED | MAP_POPULATE, char_fd_, offset);
  if (map == MAP_FAILED) return Error(errno, "mmap", "descriptors of queue " + std::to_string(config_.queue_id));
  descriptors_ = static_cast<const uapi::IoDesc*>(map);
  return QueueError();
}

QueueError QueueCore::SetupRing() {
  // Never SQPOLL (commands must come from this task). An event-loop host
  // asks for no flags: task work must interrupt its thread while it sleeps
  // in libuv's epoll_wait, not wait for an io_uring_enter.
  // The ring holds a FETCH or COMMIT per tag, room for a second batch, and the doorbell.
  const unsigned entries = PowerOfTwoAtLeast(kRingEntriesPerTag * config_.queue_depth + 1);
  int error = ring_.Setup(entries, config_.ring_setup_flags);
  if (error == EINVAL && (config_.ring_setup_flags & kOptionalSetupFlags) != 0) {
    error = ring_.Setup(entries, config_.ring_setup_flags & ~kOptionalSetupFlags);  // an older kernel
  }
  if (error != 0) return Error(error, "io_uring_setup", "queue ring");
  int files[1] = {char_fd_};
  int registered = ring_.Register(IORING_REGISTER_FILES, files, 1);
  if (registered < 0) return Error(-registered, "io_uring_register", "FILES");
  if (!config_.completion_eventfd) return QueueError();
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) return Error(errno, "eventfd", "queue");
  if (!config_.completion_eventfd) return QueueError();
  registered = ring_.Register(IORING_REGISTER_EVENTFD, &event_fd_, 1);
  if (registered < 0) return Error(-registered, "io_uring_register", "EVENTFD");
  return QueueError();
}

void QueueCore::PrepareIo(uint32_t opcode_number, uint32_t tag, int32_t result, const uint8_t* buffer) {
  io_uring_sqe* sqe = ring_.NextSqe();  // callers checked there is room
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->flags = IOSQE_FIXED_FILE;
  sqe->fd = kCharDeviceFixedIndex;
  sqe->cmd_op = config_.ioctl_opcodes ? uapi::IoctlIoOpcode(static_cast<uint8_t>(opcode_number)) : opcode_number;
  sqe->user_data = tag;
  auto* cmd = reinterpret_cast<uapi::IoCmd*>(&sqe->addr3);
  cmd->q_id = config_.queue_id;
  cmd->tag = static_cast<uint16_t>(tag);
  cmd->result = result;
  // The kernel copies WRITE data into, and READ data out of, this buffer.
  cmd->addr = reinterpret_cast<uintptr_t>(buffer);
}

QueueError QueueCore::FetchAll() {
  for (uint32_t tag = 0; tag < config_.queue_depth; tag += 1) PrepareIo(uapi::kIoFetchReq, tag, 0, SlotAddress(tag));
  ring_.Publish();
  int submitted = 0;
  do {
    submitted = ring_.Enter(config_.queue_depth, 0, 0);
  } while (submitted == -EINTR);  // a signal before any was submitted: again
  if (submitted < 0) return Error(-submitted, "io_uring_enter", "FETCH_REQ");
  if (static_cast<unsigned>(submitted) != config_.queue_depth) {
    return Error(EAGAIN, "io_uring_enter", "FETCH_REQ (" + std::to_string(submitted) + " of " +
                                               std::to_string(config_.queue_depth) + " submitted)");
  }
  // A FETCH the kernel refuses completes at once (wrong depth, queue taken).
  const io_uring_cqe* cqe = ring_.PeekCqe();
  if (cqe != nullptr && cqe->res < 0) {
    return Error(-cqe->res, "FETCH_REQ", "tag " + std::to_string(cqe->user_data));
  }
  return QueueError();
}

void QueueCore::DrainEventFd() {
  uint64_t count = 0;
  // EAGAIN: nothing signalled since the last read; fine either way.
  ssize_t ignored = read(event_fd_, &count, sizeof count);
  static_cast<void>(ignored);
}

void QueueCore::Harvest() {
  if (!is_open()) return;
  for (const io_uring_cqe* cqe = ring_.PeekCqe(); cqe != nullptr; cqe = ring_.PeekCqe()) {
    uint64_t user_data = cqe->user_data;
    uint32_t tag = static_cast<uint32_t>(user_data);
    int32_t result = cqe->res;
    ring_.CqAdvance();
    if (user_data == kDoorbellUserData) {
      doorbell_rang_ = true;  // its result (8 or -errno) does not matter: the caller looks at its own state
      continue;
    }
    if (tag >= config_.queue_depth || (states_[tag] != kKernel && states_[tag] != kGetData)) continue;  // not ours: ignore
    // A mapped write's CQE goes to Report whatever it says: only there
    // (under a native thread's direct mutex) is its volume touched.
    bool mapped = states_[tag] == kGetData && mapped_volume_[tag] != nullptr;
    if (result == uapi::kIoResOk || result == uapi::kIoResNeedGetData || mapped) {
      states_[tag] = kReady;
      results_[tag] = result;
      ready_[ready_count_] = static_cast<uint16_t>(tag);
      ready_count_ += 1;
    } else {
      EndTag(tag, result);
    }
  }
}

void QueueCore::EndTag(uint32_t tag, int32_t result) {
  states_[tag] = kDone;
  if (result == -ENODEV) {
    stats_.aborted += 1;  // UBLK_IO_RES_ABORT: the device is stopping
  } else {
    stats_.failed += 1;
    stats_.last_error = result < 0 ? -result : EPROTO;
  }
}

uint32_t QueueCore::Report() {
  uint32_t count = 0;
  for (uint32_t index = 0; index < ready_count_; index += 1) {
    uint32_t tag = ready_[index];
    // The descriptor was written before its CQE, which Harvest read with acquire.
    const uapi::IoDesc& desc = descriptors_[tag];
    int32_t result = results_[tag];
    if (mapped_volume_[tag] != nullptr) {
      if (SettleMappedWrite(tag, desc)) continue;
      if (result < 0) {
        EndTag(tag, result);
        continue;
      }
    }
    if (result == uapi::kIoResNeedGetData) {
      GetData(tag, desc);
      continue;
    }
    states_[tag] = kOwned;
    stats_.in_flight += 1;
    if (direct_ != nullptr && ServeDirectly(tag, desc)) continue;
    int32_t* record = config_.records + count * kRequestWords;
    record[kWordTag] = static_cast<int32_t>(tag);
    record[kWordOp] = static_cast<int32_t>(desc.op_flags & uapi::kIoOpMask);
    record[kWordFlags] = static_cast<int32_t>(desc.op_flags & ~uapi::kIoOpMask);
    record[kWordNrSectors] = static_cast<int32_t>(desc.nr_sectors);
    record[kWordStartLow] = static_cast<int32_t>(static_cast<uint32_t>(desc.start_sector));
    record[kWordStartHigh] = static_cast<int32_t>(static_cast<uint32_t>(desc.start_sector >> 32));
    count += 1;
  }
  ready_count_ = 0;
  stats_.delivered += count;
  return count;
}

bool QueueCore::ServeDirectly(uint32_t tag, const uapi::IoDesc& desc) {
  int32_t result = 0;
  uint64_t offset = desc.start_sector << uapi::kSectorShift;
  uint64_t length = uint64_t{desc.nr_sectors} << uapi::kSectorShift;
  if (!direct_->Serve(static_cast<uint8_t>(desc.op_flags & uapi::kIoOpMask), desc.op_flags & ~uapi::kIoOpMask, offset,
                      length, SlotAddress(tag), config_.slot_bytes, &result)) {
    return false;
  }
  // Owned by this thread since above; one SQE per tag always fits.
  return Commit(tag, result) == CommitStatus::kOk;
}

void QueueCore::GetData(uint32_t tag, const uapi::IoDesc& desc) {
  uint64_t offset = desc.start_sector << uapi::kSectorShift;
  uint64_t length = uint64_t{desc.nr_sectors} << uapi::kSectorShift;
  const uint8_t* buffer = nullptr;
  if (direct_ != nullptr && (desc.op_flags & uapi::kIoOpMask) == uapi::kIoOpWrite && !MappedWriteStartsAt(offset)) {
    buffer = direct_->BeginMappedWrite(offset, length);
  }
  if (buffer != nullptr) {
    mapped_volume_[tag] = direct_;
    mapped_offset_[tag] = offset;
    mapped_bytes_[tag] = length;
  } else {
    buffer = SlotAddress(tag);  // the kernel keeps a request within the slot (max_sectors)
  }
  // One SQE per tag is ever queued, and the ring has two per tag.
  PrepareIo(uapi::kIoNeedGetData, tag, 0, buffer);
  ring_.Publish();
  states_[tag] = kGetData;
}

bool QueueCore::SettleMappedWrite(uint32_t tag, const uapi::IoDesc& desc) {
  DirectVolume* volume = mapped_volume_[tag];
  mapped_volume_[tag] = nullptr;
  // Only the data of a GET_DATA completes with OK on a WRITE: a new write
  // on this tag would first come as NEED_GET_DATA. Anything else means the
  // kernel could not copy and put the request back (to this tag or another).
  if (results_[tag] != uapi::kIoResOk || (desc.op_flags & uapi::kIoOpMask) != uapi::kIoOpWrite) {
    volume->AbandonMappedWrite();
    return false;
  }
  // The kernel lowers nr_sectors when it copied only part.
  uint64_t arrived = std::min(uint64_t{desc.nr_sectors} << uapi::kSectorShift, mapped_bytes_[tag]);
  int32_t result = volume->FinishMappedWrite(desc.op_flags & ~uapi::kIoOpMask, mapped_bytes_[tag], arrived);
  states_[tag] = kOwned;
  stats_.in_flight += 1;
  // Settled even if the commit could not be queued (it always can: one SQE
  // per tag): the request must never be served a second time from the slot.
  static_cast<void>(Commit(tag, result));
  return true;
}

// A write at the start of a mapped write still waiting for its copy is
// either a racing write to the same place or that same write, put back by
// the kernel after its copy failed and sent to another tag (which then
// keeps the old GET_DATA until the kernel reuses it): either way the slot.
// Only called with a direct volume: the only one mapped writes can be pending on
// (serveDirect refuses another while they are).
bool QueueCore::MappedWriteStartsAt(uint64_t offset) const {
  if (direct_->MappedPending() == 0) return false;
  for (uint32_t tag = 0; tag < config_.queue_depth; tag += 1) {
    if (mapped_volume_[tag] != nullptr && mapped_offset_[tag] == offset) return true;
  }
  return false;
}

void QueueCore::AbandonMappedWrites() {
  if (mapped_volume_ == nullptr) return;
  for (uint32_t tag = 0; tag < config_.queue_depth; tag += 1) {
    if (mapped_volume_[tag] == nullptr) continue;
    mapped_volume_[tag]->AbandonMappedWrite();
    mapped_volume_[tag] = nullptr;
  }
}

CommitStatus QueueCore::Commit(uint32_t tag, int32_t result) {
  if (!is_open()) return CommitStatus::kClosed;
  if (tag >= config_.queue_depth) return CommitStatus::kBadTag;
  if (states_[tag] != kOwned) return CommitStatus::kNotOwned;
  // At most one SQE per tag is ever queued, and the ring has two per tag.
  if (ring_.sq_entries() - ring_.Unsubmitted() == 0) return CommitStatus::kNoSqe;
  PrepareIo(uapi::kIoCommitAndFetchReq, tag, result, SlotAddress(tag));
  ring_.Publish();
  states_[tag] = kKernel;
  stats_.in_flight -= 1;
  stats_.committed += 1;
  return CommitStatus::kOk;
}

int QueueCore::Submit() {
  if (!is_open()) return 0;
  int total = 0;
  int busy_retries = 0;
  for (unsigned pending = ring_.Unsubmitted(); pending > 0; pending = ring_.Unsubmitted()) {
    int submitted = ring_.Enter(pending, 0, 0);
    if (submitted > 0) {
      total += submitted;
      continue;
    }
    if (submitted == -EINTR) continue;  // a signal before submitting: again
    bool busy = submitted == -EAGAIN || submitted == -EBUSY || submitted == 0;
    // EAGAIN: no memory for requests now; EBUSY: completions back up. Reap
    // them (Harvest keeps them for the next report) and try again.
    if (!busy) return submitted;
    if (++busy_retries > kSubmitBusyRetries) break;  // left queued for the next Submit
    Harvest();
  }
  return total;
}

bool QueueCore::KernelHoldsAny() const {
  if (states_ == nullptr) return false;
  for (uint32_t tag = 0; tag < config_.queue_depth; ++tag) {
    if (states_[tag] == kKernel || states_[tag] == kGetData) return true;
  }
  return false;
}

int QueueCore::SubmitAndWait() {
  if (!is_open()) return -EBADF;
  unsigned pending = ring_.Unsubmitted();
  int submitted = ring_.Enter(pending, 1, IORING_ENTER_GETEVENTS);
  // EBUSY/EAGAIN: completions back up or no memory; the caller harvests and calls again.
  return submitted;
}

bool QueueCore::ArmDoorbell(int fd, uint64_t* counter) {
  if (!is_open() || ring_.sq_entries() - ring_.Unsubmitted() == 0) return false;
  io_uring_sqe* sqe = ring_.NextSqe();
  if (sqe == nullptr) return false;
  sqe->opcode = IORING_OP_READ;
  sqe->fd = fd;
  sqe->addr = reinterpret_cast<uintptr_t>(counter);
  sqe->len = sizeof *counter;
  sqe->off = 0;
  sqe->user_data = kDoorbellUserData;
  ring_.Publish();
  return true;
}

void QueueCore::Close() {
  if (event_fd_ >= 0) {
    if (ring_.fd() >= 0) ring_.Register(IORING_UNREGISTER_EVENTFD, nullptr, 0);
    close(event_fd_);
    event_fd_ = -1;
  }
  // The registered file holds a reference to /dev/ublkcN: drop it, then the
  // ring, the descriptor mapping and the fd, so DEL_DEV can finish. But
  // unregistering waits until no command uses the file: with FETCHes still
  // held by the kernel (a hand-over to the next daemon: no STOP_DEV aborted
  // them) it would wait forever. Closing the ring cancels those, and the
  // ring's teardown drops the file after them.
  if (ring_.fd() >= 0 && !KernelHoldsAny()) ring_.Register(IORING_UNREGISTER_FILES, nullptr, 0);
  ring_.Close();
  // No copy can come any more: the mapped writes still waiting leave their gates.
  AbandonMappedWrites();
  if (descriptors_ != nullptr) munmap(const_cast<uapi::IoDesc*>(descriptors_), descriptor_map_bytes_);
  descriptors_ = nullptr;
  if (char_fd_ >= 0) close(char_fd_);
  char_fd_ = -1;
}

}  // namespace ublksnap

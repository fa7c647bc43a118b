// Serving a live volume's requests without JavaScript. See direct-volume.h.
#include "direct-volume.h"

#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "../include/ublksnap-layout.h"
#include "ublk-uapi.h"

namespace ublksnap {
namespace {

namespace control = layout::volume_control;
namespace cbt_map = layout::cbt_map;

// The words JavaScript orders with Atomics: sequentially consistent here too.
int32_t Load(const int32_t* word) { return __atomic_load_n(word, __ATOMIC_SEQ_CST); }

// mincore looks at this many pages per call (a stack vector; no allocation).
constexpr size_t kResidencyPagesPerCall = 256;
// A volume past this is not mapped (address space; 64-bit user space has 128 TiB).
constexpr uint64_t kMapBytesMax = uint64_t{16} << 40;

bool FaultsCannotFail(int fd) {
  struct stat status;
  if (fstat(fd, &status) != 0) return false;
  if (S_ISBLK(status.st_mode)) return true;
  struct statfs filesystem;
  return S_ISREG(status.st_mode) && fstatfs(fd, &filesystem) == 0 && filesystem.f_type == TMPFS_MAGIC;
}

size_t PageBytes() {
  static const size_t bytes = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return bytes;
}

}  // namespace

int DirectVolume::Attach(const DirectVolumeConfig& config) {
  Detach();
  // Our own descriptor: the engine closes its own at detach, and a number
  // reused by another open must never receive this queue's writes.
  int fd = dup(config.fd);
  if (fd < 0) return errno;
  fd_ = fd;
  config_ = config;
  counts_ = DirectCounts();
  drained_while_frozen_.store(false, std::memory_order_relaxed);
  Map();
  return 0;
}

// Mapped writes need a volume opened for writing (PROT_WRITE on a
// read-only descriptor fails with EACCES) where a write fault on a page in
// the cache cannot fail: a block device (no allocation behind its pages)
// or a tmpfs file (a page in the cache is already allocated and charged).
// On a disk filesystem it can (a hole, a delayed allocation or a shared
// extent needs blocks, and the disk may be full), and a failed copy leaves
// its tag with the kernel until the kernel reuses it, holding the gate.
// Without a mapping every write takes the slot way, which is always correct.
void DirectVolume::Map() {
  map_failed_ = false;
  if (config_.capacity_bytes == 0 || config_.capacity_bytes > kMapBytesMax || !FaultsCannotFail(fd_)) return;
  void* map = mmap(nullptr, config_.capacity_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (map == MAP_FAILED) return;
  map_ = static_cast<uint8_t*>(map);
  map_bytes_ = config_.capacity_bytes;
}

void DirectVolume::Detach() {
  // Callers wait for MappedPending() == 0: the kernel may still copy into the mapping.
  if (map_ != nullptr) munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  config_ = DirectVolumeConfig();
}

bool DirectVolume::Serves(uint64_t offset, uint64_t length) const {
  return fd_ >= 0 && length > 0 && offset <= config_.capacity_bytes && length <= config_.capacity_bytes - offset &&
         Load(config_.control + control::kDetached) == 0;
}

bool DirectVolume::WritesHeld() const {
  return config_.write_hold != nullptr && Load(config_.write_hold + layout::write_hold::kArmed) != 0;
}

bool DirectVolume::Serve(uint8_t ublk_op, uint32_t ublk_flags, uint64_t offset, uint64_t length, uint8_t* slot,
                         uint64_t slot_bytes, int32_t* result) {
  bool served = false;
  bool tried = false;
  if (length <= slot_bytes && Serves(offset, length)) {
    if (ublk_op == uapi::kIoOpRead) {
      tried = true;
      served = Read(offset, length, slot);
    } else if (ublk_op == uapi::kIoOpWrite) {
      served = Write(offset, length, (ublk_flags & uapi::kIoFlagFua) != 0, slot, &tried);
    }
  }
  if (!served) {
    counts_.declined += 1;
    if (tried) counts_.redone += 1;
    return false;
  }
  *result = static_cast<int32_t>(length);  // length <= slot_bytes < 2^31 (the queue's limit)
  return true;
}

bool DirectVolume::Read(uint64_t offset, uint64_t length, uint8_t* slot) {
  for (uint64_t done = 0; done < length;) {
    ssize_t n = pread(fd_, slot + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;  // an error or end of file: the actor answers it
    done += static_cast<uint64_t>(n);
  }
  counts_.reads += 1;
  counts_.bytes_read += length;
  return true;
}

bool DirectVolume::Write(uint64_t offset, uint64_t length, bool fua, const uint8_t* slot, bool* tried) {
  if (WritesHeld() || !EnterGate()) return false;
  *tried = true;
  MarkCbt(offset, length);
  bool written = true;
  for (uint64_t done = 0; done < length;) {
    ssize_t n = pwrite(fd_, slot + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      written = false;
      break;
    }
    done += static_cast<uint64_t>(n);
  }
  if (written && fua) written = Sync();
  LeaveGate();
  if (!written) return false;
  counts_.writes += 1;
  counts_.bytes_written += length;
  return true;
}

bool DirectVolume::Sync() {
  int synced;
  do {
    synced = fdatasync(fd_);
  } while (synced < 0 && errno == EINTR);
  return synced == 0;
}

uint8_t* DirectVolume::BeginMappedWrite(uint64_t offset, uint64_t length) {
  if (!mapped() || !Serves(offset, length) || WritesHeld() || !Resident(offset, length) || !EnterGate()) {
    return nullptr;
  }
  MarkCbt(offset, length);
  mapped_pending_.fetch_add(1, std::memory_order_acq_rel);
  return map_ + offset;
}

int32_t DirectVolume::FinishMappedWrite(uint32_t ublk_flags, uint64_t length, uint64_t arrived_bytes) {
  int32_t result = static_cast<int32_t>(arrived_bytes);  // <= the queue's max I/O < 2^31
  if (arrived_bytes < length) {
    // The kernel could copy only part (a fault past that point): commit
    // what is in; the rest comes back as a new request and goes the slot way.
    map_failed_ = true;
    counts_.mapped_failed += 1;
  }
  if ((ublk_flags & uapi::kIoFlagFua) != 0 && !Sync()) result = -EIO;
  if (result > 0) {
    counts_.writes += 1;
    counts_.mapped_writes += 1;
    counts_.bytes_written += static_cast<uint64_t>(result);
  }
  LeaveGate();
  // Last: once no mapped write is pending, the owner may detach this volume.
  mapped_pending_.fetch_sub(1, std::memory_order_acq_rel);
  return result;
}

void DirectVolume::AbandonMappedWrite() {
  map_failed_ = true;
  counts_.mapped_failed += 1;
  LeaveGate();
  mapped_pending_.fetch_sub(1, std::memory_order_acq_rel);
}

// True when every page of the range is in the page cache: the kernel's
// copy then only finds the page (a tmpfs page, a cached file or device
// block), and never reads from a disk or allocates under the fault.
bool DirectVolume::Resident(uint64_t offset, uint64_t length) const {
  const size_t page = PageBytes();
  uint64_t first = offset / page * page;
  uint64_t end = offset + length;
  unsigned char vector[kResidencyPagesPerCall];
  while (first < end) {
    uint64_t bytes = std::min<uint64_t>(end - first, kResidencyPagesPerCall * page);
    if (mincore(map_ + first, bytes, vector) != 0) return false;
    size_t pages = (bytes + page - 1) / page;
    for (size_t index = 0; index < pages; index += 1) {
      if ((vector[index] & 1) == 0) return false;
    }
    first += bytes;
  }
  return true;
}

// The writer side of the gate protocol (volume-control.ts), plus: no diff
// area armed. Arming happens only while the gate is frozen and empty, so
// inside the gate ARMED_AREA cannot change under this write.
bool DirectVolume::EnterGate() {
  int32_t* words = config_.control;
  if (Load(words + control::kFrozen) != 0 || Load(words + control::kArmedArea) != control::kNoArea) return false;
  __atomic_add_fetch(words + control::kWritesInFlight, 1, __ATOMIC_SEQ_CST);
  if (Load(words + control::kFrozen) == 0 && Load(words + control::kArmedArea) == control::kNoArea) return true;
  LeaveGate();
  return false;
}

void DirectVolume::LeaveGate() {
  int32_t* words = config_.control;
  if (__atomic_sub_fetch(words + control::kWritesInFlight, 1, __ATOMIC_SEQ_CST) == 0 &&
      Load(words + control::kFrozen) == 1) {
    drained_while_frozen_.store(true, std::memory_order_release);
  }
}

// As CbtMap.mark: ACTIVE[block] = the active number, for every tracking
// block the range touches. Plain stores, as there: racing writers store the
// same value, and the number changes only at take, with writers quiesced.
void DirectVolume::MarkCbt(uint64_t offset, uint64_t length) {
  const auto* header = reinterpret_cast<const int32_t*>(config_.cbt);
  const int32_t shift = header[cbt_map::kBlockShift];
  const uint64_t block_count = static_cast<uint32_t>(header[cbt_map::kBlockCount]);
  const uint64_t first = offset >> shift;
  const uint64_t end = std::min(((offset + length - 1) >> shift) + 1, block_count);
  if (first >= end) return;
  const auto number = static_cast<uint8_t>(Load(header + cbt_map::kActiveNumber));
  std::memset(config_.cbt + cbt_map::kMapsByte + first, number, end - first);
}

}  // namespace ublksnap

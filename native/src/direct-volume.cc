// Serving a live volume's requests without JavaScript. See direct-volume.h.
#include "direct-volume.h"

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
  return 0;
}

void DirectVolume::Detach() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  config_ = DirectVolumeConfig();
}

bool DirectVolume::Serve(uint8_t ublk_op, uint32_t ublk_flags, uint64_t offset, uint64_t length, uint8_t* slot,
                         uint64_t slot_bytes, int32_t* result) {
  bool served = false;
  bool tried = false;
  if (fd_ >= 0 && length > 0 && length <= slot_bytes && offset <= config_.capacity_bytes &&
      length <= config_.capacity_bytes - offset && Load(config_.control + control::kDetached) == 0) {
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
  if (config_.write_hold != nullptr && Load(config_.write_hold + layout::write_hold::kArmed) != 0) return false;
  if (!EnterGate()) return false;
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
  if (written && fua) {
    int synced;
    do {
      synced = fdatasync(fd_);
    } while (synced < 0 && errno == EINTR);
    written = synced == 0;
  }
  LeaveGate();
  if (!written) return false;
  counts_.writes += 1;
  counts_.bytes_written += length;
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

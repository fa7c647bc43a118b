// fileExtents(fd): where a file's data lies on the device under its file
// system, by FS_IOC_FIEMAP. markdirtyblock --file marks these places in a
// volume's change map, as upstream's tool does for a file rewritten after a
// backup.
//
// Design notes
// - FIEMAP_FLAG_SYNC writes the file's dirty pages back first: a delayed
//   allocation has no physical place until then, and its extent would come
//   back flagged UNKNOWN|DELALLOC instead of where the data will be.
// - The kernel fills at most kExtentsPerCall extents per call; the loop asks
//   again from the end of the last one until an extent is flagged LAST or
//   none come back. kExtentsMax bounds the whole answer: a file more
//   fragmented than that is refused (E2BIG) rather than answered in part.
// - Every extent is returned with its flags, unfiltered: the caller decides
//   what an UNKNOWN or INLINE extent means for it.
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <vector>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

constexpr const char* kFileExtentsSignature = "fileExtents(fd)";
// Extents asked for per ioctl: 56 bytes each, so one call's buffer is ~28 KiB.
constexpr uint32_t kExtentsPerCall = 512;
// The most extents one answer holds (~56 MiB of records at worst); past it
// the file is refused with E2BIG instead of half-described.
constexpr size_t kExtentsMax = 1u << 20;

Napi::Value FileExtents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  if (!CheckArgCount(info, 1, 1, kFileExtentsSignature) ||
      !ReadFd(info, 0, kFileExtentsSignature, &fd)) {
    return env.Undefined();
  }
  // One buffer for the header and kExtentsPerCall records, reused by every call.
  std::vector<uint8_t> buffer(sizeof(struct fiemap) + kExtentsPerCall * sizeof(struct fiemap_extent));
  auto* map = reinterpret_cast<struct fiemap*>(buffer.data());
  Napi::Array extents = Napi::Array::New(env);
  uint32_t count = 0;
  uint64_t next_logical = 0;
  bool last_seen = false;
  while (!last_seen) {
    std::fill(buffer.begin(), buffer.end(), 0);
    map->fm_start = next_logical;
    map->fm_length = FIEMAP_MAX_OFFSET - next_logical;
    map->fm_flags = FIEMAP_FLAG_SYNC;
    map->fm_extent_count = kExtentsPerCall;
    if (ioctl(fd, FS_IOC_FIEMAP, map) != 0) {
      // EOPNOTSUPP: the file system has no FIEMAP (tmpfs); EBADR: a flag it refuses.
      ThrowErrno(env, errno, "ioctl");
      return env.Undefined();
    }
    if (map->fm_mapped_extents == 0) break;
    for (uint32_t index = 0; index < map->fm_mapped_extents; ++index) {
      const struct fiemap_extent& extent = map->fm_extents[index];
      if (count >= kExtentsMax) {
        ThrowErrno(env, E2BIG, "ioctl");
        return env.Undefined();
      }
      // Offsets past 2^53 would round in a JavaScript number; no device is that large.
      if (extent.fe_physical + extent.fe_length > kSafeIntegerMax ||
          extent.fe_logical + extent.fe_length > kSafeIntegerMax) {
        ThrowErrno(env, EOVERFLOW, "ioctl");
        return env.Undefined();
      }
      Napi::Object record = Napi::Object::New(env);
      record.Set("logical_bytes", Napi::Number::New(env, static_cast<double>(extent.fe_logical)));
      record.Set("physical_bytes", Napi::Number::New(env, static_cast<double>(extent.fe_physical)));
      record.Set("length_bytes", Napi::Number::New(env, static_cast<double>(extent.fe_length)));
      record.Set("flags", Napi::Number::New(env, extent.fe_flags));
      extents.Set(count++, record);
      next_logical = extent.fe_logical + extent.fe_length;
      if ((extent.fe_flags & FIEMAP_EXTENT_LAST) != 0) last_seen = true;
    }
  }
  return extents;
}

}  // namespace

void InitFiemap(Napi::Env env, Napi::Object exports) {
  exports.Set("fileExtents", Napi::Function::New(env, FileExtents, "fileExtents"));
  exports.Set("FIEMAP_EXTENT_UNKNOWN", Napi::Number::New(env, FIEMAP_EXTENT_UNKNOWN));
  exports.Set("FIEMAP_EXTENT_DELALLOC", Napi::Number::New(env, FIEMAP_EXTENT_DELALLOC));
  exports.Set("FIEMAP_EXTENT_DATA_INLINE", Napi::Number::New(env, FIEMAP_EXTENT_DATA_INLINE));
  exports.Set("FIEMAP_EXTENT_NOT_ALIGNED", Napi::Number::New(env, FIEMAP_EXTENT_NOT_ALIGNED));
}

}  // namespace ublksnap

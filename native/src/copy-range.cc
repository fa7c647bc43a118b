// copyRange: copy_file_range(2), a copy of a range of one file into another
// inside the kernel. Copy-before-write uses it where the area does not clone
// (tmpfs, ext4): the kernel moves the old bytes from the volume's page cache
// to the storage's once, where a read into a buffer and a write out of it
// move them twice and cross into user space twice (a 1 GiB copy in 1 MiB
// runs on tmpfs: 0.13 s of CPU against 0.18 s).
//
// The kernel may copy less than asked; this loops until the range is done
// or the source ends (then it returns the bytes it copied, which the caller
// checks). A volume that is a block device is EINVAL, two filesystems that
// cannot copy between them EXDEV, an old kernel ENOSYS or EOPNOTSUPP: the
// caller falls back to reading and writing.
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

constexpr const char* kCopyRangeSignature =
    "copyRange(dest_fd, dest_offset_bytes, src_fd, src_offset_bytes, length_bytes)";

Napi::Value CopyRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FileRangeArgs args;
  if (!ReadFileRangeArgs(info, kCopyRangeSignature, &args)) return env.Undefined();
  auto src_offset = static_cast<off_t>(args.src_offset_bytes);
  auto dest_offset = static_cast<off_t>(args.dest_offset_bytes);
  uint64_t copied = 0;
  while (copied < args.length_bytes) {
    ssize_t n = copy_file_range(args.src_fd, &src_offset, args.dest_fd, &dest_offset, args.length_bytes - copied, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowErrno(env, errno, "copy_file_range");
      return env.Undefined();
    }
    if (n == 0) break;  // the source ended
    copied += static_cast<uint64_t>(n);
  }
  return Napi::Number::New(env, static_cast<double>(copied));
}

}  // namespace

void InitCopyRange(Napi::Env env, Napi::Object exports) {
  exports.Set("copyRange", Napi::Function::New(env, CopyRange, "copyRange"));
}

}  // namespace ublksnap

// cloneRange: FICLONERANGE, the ioctl that makes a range of one file share
// the extents of a range of another on a filesystem with shared extents
// (XFS with reflink=1, Btrfs, bcachefs). Copy-before-write uses it to save a
// chunk of a file volume into a difference storage on the same filesystem
// without moving its bytes: the later write to the volume gets new blocks
// from the filesystem, the storage keeps the old ones.
//
// Node has no such call: fs.copyFile with COPYFILE_FICLONE clones whole
// files only. The kernel asks for offsets and a length aligned to the
// filesystem block, except a range that ends at the source's end of file;
// anything else is EINVAL, a filesystem without shared extents EOPNOTSUPP,
// two filesystems EXDEV. The caller decides what to do with each.
#include <linux/fs.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstdint>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

constexpr const char* kCloneRangeSignature =
    "cloneRange(dest_fd, dest_offset_bytes, src_fd, src_offset_bytes, length_bytes)";

Napi::Value CloneRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FileRangeArgs args;
  if (!ReadFileRangeArgs(info, kCloneRangeSignature, &args)) return env.Undefined();
  // A zero length means "to the end of the source" to the kernel: never
  // what a caller of a range clone meant.
  if (args.length_bytes == 0) {
    ThrowTypeError(env, std::string(kCloneRangeSignature) + ": length_bytes must be > 0");
    return env.Undefined();
  }
  struct file_clone_range range {};
  range.src_fd = args.src_fd;
  range.src_offset = args.src_offset_bytes;
  range.src_length = args.length_bytes;
  range.dest_offset = args.dest_offset_bytes;
  if (ioctl(args.dest_fd, FICLONERANGE, &range) != 0) ThrowErrno(env, errno, "ioctl");
  return env.Undefined();
}

}  // namespace

void InitClone(Napi::Env env, Napi::Object exports) {
  exports.Set("cloneRange", Napi::Function::New(env, CloneRange, "cloneRange"));
}

}  // namespace ublksnap

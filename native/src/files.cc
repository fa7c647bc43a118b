// Calls on an open file descriptor: fallocate, fdatasync, seekData,
// fileInfo, duplicateFd.
//
// fallocate grows and punches the diff storage; fdatasync makes a FLUSH
// durable; seekData finds written data (lseek SEEK_DATA: on tmpfs, pages
// fallocated but never written read as a hole); fileInfo lets the engine
// refuse a diff storage that lives on a volume of the same snapshot (st_dev of the storage file against st_rdev of
// a block-device volume, or dev+ino against a file volume). duplicateFd
// moves an NBD connection's socket from the thread that negotiated it to the
// I/O actor that serves its transmission: the copy outlives the original,
// which its thread's event loop closes. socketPair gives a TLS connection,
// whose encryption cannot leave the thread that negotiated it, a plain
// local stream to the I/O actor (src/frontends/nbd/tls-relay.ts).
#include <fcntl.h>
#include <sys/socket.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

constexpr const char* kFallocateSignature = "fallocate(fd, offset_bytes, length_bytes, mode)";
constexpr const char* kFdatasyncSignature = "fdatasync(fd)";
constexpr const char* kFileInfoSignature = "fileInfo(fd)";
constexpr const char* kDuplicateFdSignature = "duplicateFd(fd)";
constexpr const char* kSocketPairSignature = "socketPair()";

// The mode is an int in the kernel's prototype; a larger number cannot be a
// valid combination of flags.
constexpr uint64_t kFallocateModeMax = INT32_MAX;

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  uint64_t mode = 0;
  if (!CheckArgCount(info, 4, 4, kFallocateSignature) ||
      !ReadFd(info, 0, kFallocateSignature, &fd) ||
      !ReadSafeUint(info, 1, kFallocateSignature, "offset_bytes", &offset_bytes) ||
      !ReadSafeUint(info, 2, kFallocateSignature, "length_bytes", &length_bytes) ||
      !ReadSafeUint(info, 3, kFallocateSignature, "mode", &mode)) {
    return env.Undefined();
  }
  if (mode > kFallocateModeMax) {
    ThrowTypeError(env, std::string(kFallocateSignature) + ": mode must be a combination of FALLOC_FL_* flags");
    return env.Undefined();
  }
  // Both operands are below 2^53, so neither they nor their sum overflow
  // off_t. A zero length and unknown mode bits are left to the kernel, which
  // answers EINVAL and EOPNOTSUPP.
  if (fallocate(fd, static_cast<int>(mode), static_cast<off_t>(offset_bytes),
                static_cast<off_t>(length_bytes)) != 0) {
    ThrowErrno(env, errno, "fallocate");
  }
  return env.Undefined();
}

Napi::Value Fdatasync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  if (!CheckArgCount(info, 1, 1, kFdatasyncSignature) ||
      !ReadFd(info, 0, kFdatasyncSignature, &fd)) {
    return env.Undefined();
  }
  if (fdatasync(fd) != 0) ThrowErrno(env, errno, "fdatasync");
  return env.Undefined();
}

constexpr const char* kSeekDataSignature = "seekData(fd, offset_bytes)";

// The offset of the first data at or after offset_bytes, or -1 when only
// a hole follows (ENXIO).
Napi::Value SeekData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  uint64_t offset_bytes = 0;
  if (!CheckArgCount(info, 2, 2, kSeekDataSignature) ||
      !ReadFd(info, 0, kSeekDataSignature, &fd) ||
      !ReadSafeUint(info, 1, kSeekDataSignature, "offset_bytes", &offset_bytes)) {
    return env.Undefined();
  }
  off_t found = lseek(fd, static_cast<off_t>(offset_bytes), SEEK_DATA);
  if (found >= 0) return Napi::Number::New(env, static_cast<double>(found));
  if (errno == ENXIO) return Napi::Number::New(env, -1);
  ThrowErrno(env, errno, "lseek");
  return env.Undefined();
}

const char* FileKind(mode_t mode) {
  if (S_ISREG(mode)) return "file";
  if (S_ISBLK(mode)) return "block";
  return "other";
}

Napi::Value FileInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  if (!CheckArgCount(info, 1, 1, kFileInfoSignature) ||
      !ReadFd(info, 0, kFileInfoSignature, &fd)) {
    return env.Undefined();
  }
  struct stat status {};
  if (fstat(fd, &status) != 0) {
    ThrowErrno(env, errno, "fstat");
    return env.Undefined();
  }
  // A size past 2^53 would round silently in a JavaScript number: refuse it
  // the way stat(2) refuses a size its caller cannot hold.
  if (static_cast<uint64_t>(status.st_size) > kSafeIntegerMax) {
    ThrowErrno(env, EOVERFLOW, "fstat");
    return env.Undefined();
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("kind", Napi::String::New(env, FileKind(status.st_mode)));
  // st_size is 0 for a block device: its size comes from blockDeviceInfo.
  result.Set("size_bytes", Napi::Number::New(env, static_cast<double>(status.st_size)));
  result.Set("dev_major", Napi::Number::New(env, major(status.st_dev)));
  result.Set("dev_minor", Napi::Number::New(env, minor(status.st_dev)));
  result.Set("rdev_major", Napi::Number::New(env, major(status.st_rdev)));
  result.Set("rdev_minor", Napi::Number::New(env, minor(status.st_rdev)));
  // Inode numbers are 64-bit and some file systems use the high bits
  // (overlayfs with xino): a BigInt keeps every one exact.
  result.Set("ino", Napi::BigInt::New(env, static_cast<uint64_t>(status.st_ino)));
  // The filesystem's preferred I/O size: its block for XFS, ext4 and
  // Btrfs, the unit a range clone must be aligned to.
  result.Set("block_bytes", Napi::Number::New(env, static_cast<double>(status.st_blksize)));
  return result;
}

Napi::Value DuplicateFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  if (!CheckArgCount(info, 1, 1, kDuplicateFdSignature) ||
      !ReadFd(info, 0, kDuplicateFdSignature, &fd)) {
    return env.Undefined();
  }
  // Close-on-exec like every descriptor Node opens: no child inherits it.
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    ThrowErrno(env, errno, "fcntl");
    return env.Undefined();
  }
  return Napi::Number::New(env, copy);
}

Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgCount(info, 0, 0, kSocketPairSignature)) return env.Undefined();
  int fds[2] = {-1, -1};
  // A stream pair, close-on-exec like every descriptor Node opens.
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    ThrowErrno(env, errno, "socketpair");
    return env.Undefined();
  }
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(uint32_t{0}, Napi::Number::New(env, fds[0]));
  result.Set(uint32_t{1}, Napi::Number::New(env, fds[1]));
  return result;
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  exports.Set("fdatasync", Napi::Function::New(env, Fdatasync, "fdatasync"));
  exports.Set("seekData", Napi::Function::New(env, SeekData, "seekData"));
  exports.Set("fileInfo", Napi::Function::New(env, FileInfo, "fileInfo"));
  exports.Set("duplicateFd", Napi::Function::New(env, DuplicateFd, "duplicateFd"));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("FALLOC_FL_KEEP_SIZE", Napi::Number::New(env, FALLOC_FL_KEEP_SIZE));
  exports.Set("FALLOC_FL_PUNCH_HOLE", Napi::Number::New(env, FALLOC_FL_PUNCH_HOLE));
  exports.Set("FALLOC_FL_ZERO_RANGE", Napi::Number::New(env, FALLOC_FL_ZERO_RANGE));
}

}  // namespace ublksnap

// blockDeviceInfo(fd): the geometry of a block device volume.
//
//   size_bytes            BLKGETSIZE64
//   logical_block_bytes   BLKSSZGET   the smallest unit the device addresses
//                                     (O_DIRECT offsets and lengths are multiples)
//   physical_block_bytes  BLKPBSZGET  the unit it writes without read-modify-write
//   min_io_bytes          BLKIOMIN    the preferred minimum request
//   opt_io_bytes          BLKIOOPT    the preferred request, 0 when not reported
//   discard_supported     /sys/dev/block/MAJ:MIN/queue/discard_max_bytes > 0
//
// There is no ioctl for discard support; sysfs is where lsblk reads it too.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

constexpr const char* kBlockDeviceInfoSignature = "blockDeviceInfo(fd)";

// discard_max_bytes holds one decimal u64 and a newline.
constexpr size_t kSysfsNumberBytesMax = 32;

// Where reading a sysfs number failed: the call, its errno, the file.
struct SysfsFailure {
  const char* syscall = "open";
  int error_number = 0;
  std::string path;
};

// Reads one decimal number from a sysfs file.
bool ReadSysfsNumber(const std::string& path, uint64_t* value, SysfsFailure* failure) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *failure = {"open", errno, path};
    return false;
  }
  char text[kSysfsNumberBytesMax] = {};
  ssize_t read_bytes = read(fd, text, sizeof text - 1);
  int read_errno = errno;
  close(fd);
  if (read_bytes < 0) {
    *failure = {"read", read_errno, path};
    return false;
  }
  char* end = nullptr;
  errno = 0;
  *value = std::strtoull(text, &end, 10);
  // Not a number at all, or one past u64: the kernel changed the format.
  if (end == text || errno != 0) {
    *failure = {"read", errno != 0 ? errno : EINVAL, path};
    return false;
  }
  return true;
}

// A partition's sysfs directory has no queue/ of its own: its queue is its
// parent disk's, one level up from where /sys/dev/block/MAJ:MIN points.
bool ReadDiscardMaxBytes(dev_t device, uint64_t* value, SysfsFailure* failure) {
  std::string base = "/sys/dev/block/" + std::to_string(major(device)) + ":" +
                     std::to_string(minor(device));
  if (ReadSysfsNumber(base + "/queue/discard_max_bytes", value, failure)) return true;
  if (failure->error_number != ENOENT) return false;
  return ReadSysfsNumber(base + "/../queue/discard_max_bytes", value, failure);
}

// One ioctl that fills a T. Throws and returns false on failure.
template <typename T>
bool Query(Napi::Env env, int fd, unsigned long request, const char* request_name, T* value) {
  if (ioctl(fd, request, value) == 0) return true;
  Napi::Error error = ErrnoError(env, errno, "ioctl", request_name);
  error.ThrowAsJavaScriptException();
  return false;
}

struct Geometry {
  uint64_t size_bytes = 0;
  int logical_block_bytes = 0;
  unsigned int physical_block_bytes = 0;
  unsigned int min_io_bytes = 0;
  unsigned int opt_io_bytes = 0;
};

bool QueryGeometry(Napi::Env env, int fd, Geometry* geometry) {
  return Query(env, fd, BLKGETSIZE64, "BLKGETSIZE64", &geometry->size_bytes) &&
         Query(env, fd, BLKSSZGET, "BLKSSZGET", &geometry->logical_block_bytes) &&
         Query(env, fd, BLKPBSZGET, "BLKPBSZGET", &geometry->physical_block_bytes) &&
         Query(env, fd, BLKIOMIN, "BLKIOMIN", &geometry->min_io_bytes) &&
         Query(env, fd, BLKIOOPT, "BLKIOOPT", &geometry->opt_io_bytes);
}

Napi::Value BlockDeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  if (!CheckArgCount(info, 1, 1, kBlockDeviceInfoSignature) ||
      !ReadFd(info, 0, kBlockDeviceInfoSignature, &fd)) {
    return env.Undefined();
  }
  struct stat status {};
  if (fstat(fd, &status) != 0) {
    ThrowErrno(env, errno, "fstat");
    return env.Undefined();
  }
  // Refuse before any ioctl: on a character device the same request number
  // could mean something else to its driver.
  if (!S_ISBLK(status.st_mode)) {
    ThrowErrno(env, ENOTBLK, "ioctl");
    return env.Undefined();
  }
  Geometry geometry;
  if (!QueryGeometry(env, fd, &geometry)) return env.Undefined();
  if (geometry.size_bytes > kSafeIntegerMax) {
    ThrowErrno(env, EOVERFLOW, "ioctl");
    return env.Undefined();
  }
  uint64_t discard_max_bytes = 0;
  SysfsFailure failure;
  if (!ReadDiscardMaxBytes(status.st_rdev, &discard_max_bytes, &failure)) {
    ThrowErrnoWithPath(env, failure.error_number, failure.syscall, failure.path);
    return env.Undefined();
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("size_bytes", Napi::Number::New(env, static_cast<double>(geometry.size_bytes)));
  result.Set("logical_block_bytes", Napi::Number::New(env, geometry.logical_block_bytes));
  result.Set("physical_block_bytes", Napi::Number::New(env, geometry.physical_block_bytes));
  result.Set("min_io_bytes", Napi::Number::New(env, geometry.min_io_bytes));
  result.Set("opt_io_bytes", Napi::Number::New(env, geometry.opt_io_bytes));
  result.Set("discard_supported", Napi::Boolean::New(env, discard_max_bytes > 0));
  return result;
}

}  // namespace

void InitBlockDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("blockDeviceInfo", Napi::Function::New(env, BlockDeviceInfo, "blockDeviceInfo"));
}

}  // namespace ublksnap

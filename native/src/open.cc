// Opening volumes and diff storage: openExclusive, openTmpfile.
//
// openExclusive(path, { write, direct }) opens a volume — a block device or
// a regular file; anything else fails EISDIR or ENOTBLK — and claims it so
// that no one else (another daemon, a second attach, mkfs, a mount) writes
// it behind the engine's back:
//   - a block device is opened with O_EXCL, the kernel's exclusive open: a
//     second exclusive open, a mount, or a holder such as dm fails EBUSY;
//   - anything else (a regular file volume) is opened and then locked with
//     flock(LOCK_EX | LOCK_NB); a second openExclusive of the same file, from
//     this process or another, fails with code "EWOULDBLOCK" (the name
//     flock(2) documents; the same number as EAGAIN on Linux). The lock is
//     advisory: it stops other ublksnap daemons, not an unrelated writer.
// The claim ends when the fd is closed (fs.closeSync).
//
// openTmpfile(dir, { direct }) makes the unnamed file a diff storage lives
// in: O_TMPFILE, so the file disappears with its last fd even after a crash,
// and O_EXCL, so it can never be linked into the directory later.
//
// Every fd is O_CLOEXEC, so a tool the daemon spawns never inherits a volume.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

constexpr const char* kOpenExclusiveSignature = "openExclusive(path, { write, direct })";
constexpr const char* kOpenTmpfileSignature = "openTmpfile(dir_path, { direct })";

// An unnamed diff storage file is private to the daemon.
constexpr mode_t kTmpfileMode = 0600;

// Closes fd on an error path, keeping the errno of the call that failed.
void CloseKeepingErrno(int fd) {
  int saved_errno = errno;
  close(fd);
  errno = saved_errno;
}

// O_NONBLOCK was for the open only (see OpenExclusive): volume I/O blocks.
bool ClearNonblock(int fd) {
  int status_flags = fcntl(fd, F_GETFL);
  if (status_flags < 0) return false;
  return fcntl(fd, F_SETFL, status_flags & ~O_NONBLOCK) == 0;
}

// Checks that fd is a volume — a block device or a regular file — and makes
// it exclusive: O_EXCL already did for a block device, flock does for a
// file. Returns false with errno set and *failed_syscall named (EWOULDBLOCK
// from flock when another open file holds the lock).
bool Claim(int fd, const char** failed_syscall) {
  struct stat status {};
  *failed_syscall = "fstat";
  if (fstat(fd, &status) != 0) return false;
  // Anything else is refused now rather than failing later in the engine;
  // reported as the open's failure, with the errno the kernel would pick.
  *failed_syscall = "open";
  if (S_ISDIR(status.st_mode)) {
    errno = EISDIR;
    return false;
  }
  if (!S_ISBLK(status.st_mode) && !S_ISREG(status.st_mode)) {
    errno = ENOTBLK;
    return false;
  }
  *failed_syscall = "fcntl";
  if (!ClearNonblock(fd)) return false;
  if (S_ISBLK(status.st_mode)) return true;
  *failed_syscall = "flock";
  return flock(fd, LOCK_EX | LOCK_NB) == 0;
}

Napi::Value OpenExclusive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  Napi::Object options;
  bool write = false;
  bool direct = false;
  if (!CheckArgCount(info, 1, 2, kOpenExclusiveSignature) ||
      !ReadPath(info, 0, kOpenExclusiveSignature, "path", &path) ||
      !ReadOptions(info, 1, kOpenExclusiveSignature, {"write", "direct"}, &options) ||
      !ReadBoolOption(env, options, "write", kOpenExclusiveSignature, &write) ||
      !ReadBoolOption(env, options, "direct", kOpenExclusiveSignature, &direct)) {
    return env.Undefined();
  }
  // O_EXCL without O_CREAT means "exclusive" for a block device and is
  // ignored for other files (open(2)), so it is safe to pass before we know
  // what path names; checking first would race with a swap of the path.
  // O_NONBLOCK keeps a FIFO given by mistake from blocking the open forever
  // (Claim refuses it, then clears O_NONBLOCK on a real volume).
  int flags = (write ? O_RDWR : O_RDONLY) | O_EXCL | O_NONBLOCK | O_CLOEXEC | (direct ? O_DIRECT : 0);
  int fd = open(path.c_str(), flags);
  if (fd < 0) {
    ThrowErrnoWithPath(env, errno, "open", path);
    return env.Undefined();
  }
  const char* failed_syscall = nullptr;
  if (!Claim(fd, &failed_syscall)) {
    CloseKeepingErrno(fd);
    int error_number = errno;
    Napi::Error error = ErrnoError(env, error_number, failed_syscall, path);
    error.Set("path", Napi::String::New(env, path));
    // flock(2) names this case EWOULDBLOCK; keep its name (see the top).
    if (error_number == EWOULDBLOCK) error.Set("code", Napi::String::New(env, "EWOULDBLOCK"));
    error.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value OpenTmpfile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dir_path;
  Napi::Object options;
  bool direct = false;
  if (!CheckArgCount(info, 1, 2, kOpenTmpfileSignature) ||
      !ReadPath(info, 0, kOpenTmpfileSignature, "dir_path", &dir_path) ||
      !ReadOptions(info, 1, kOpenTmpfileSignature, {"direct"}, &options) ||
      !ReadBoolOption(env, options, "direct", kOpenTmpfileSignature, &direct)) {
    return env.Undefined();
  }
  int flags = O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC | (direct ? O_DIRECT : 0);
  int fd = open(dir_path.c_str(), flags, kTmpfileMode);
  // EOPNOTSUPP: the file system has no O_TMPFILE; EISDIR: the kernel is
  // older than O_TMPFILE. Both reach the caller by name.
  if (fd < 0) {
    ThrowErrnoWithPath(env, errno, "open", dir_path);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitOpen(Napi::Env env, Napi::Object exports) {
  exports.Set("openExclusive", Napi::Function::New(env, OpenExclusive, "openExclusive"));
  exports.Set("openTmpfile", Napi::Function::New(env, OpenTmpfile, "openTmpfile"));
}

}  // namespace ublksnap

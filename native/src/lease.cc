// File leases: setLease(fd, type) and getLease(fd), fcntl F_SETLEASE and
// F_GETLEASE, with the F_RDLCK / F_WRLCK / F_UNLCK constants.
//
// The engine holds a write lease on each regular-file volume to notice
// another process opening it (src/engine/writer-watch.ts has the design).
// The kernel tells the holder with a signal, SIGIO unless F_SETSIG says
// otherwise, sent to the process that took the lease; the JavaScript side
// listens for it before it takes the first lease (SIGIO's default action
// ends the process). While the break is pending, F_GETLEASE answers the
// type the lease must fall to: F_RDLCK for an opener that reads, F_UNLCK
// for one that writes or truncates.
#include <fcntl.h>

#include <cerrno>
#include <cstdint>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

constexpr const char* kSetLeaseSignature = "setLease(fd, type)";
constexpr const char* kGetLeaseSignature = "getLease(fd)";

Napi::Value SetLease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  uint64_t type = 0;
  if (!CheckArgCount(info, 2, 2, kSetLeaseSignature) ||
      !ReadFd(info, 0, kSetLeaseSignature, &fd) ||
      !ReadSafeUint(info, 1, kSetLeaseSignature, "type", &type)) {
    return env.Undefined();
  }
  if (type != F_RDLCK && type != F_WRLCK && type != F_UNLCK) {
    ThrowTypeError(env, std::string(kSetLeaseSignature) + ": type must be F_RDLCK, F_WRLCK or F_UNLCK");
    return env.Undefined();
  }
  // EAGAIN: another descriptor has the file open (a write lease needs the
  // only one); EINVAL: not a regular file, or a filesystem without leases;
  // EACCES: not the owner and no CAP_LEASE.
  if (fcntl(fd, F_SETLEASE, static_cast<int>(type)) != 0) ThrowErrno(env, errno, "fcntl(F_SETLEASE)");
  return env.Undefined();
}

Napi::Value GetLease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  if (!CheckArgCount(info, 1, 1, kGetLeaseSignature) || !ReadFd(info, 0, kGetLeaseSignature, &fd)) {
    return env.Undefined();
  }
  const int type = fcntl(fd, F_GETLEASE);
  if (type < 0) {
    ThrowErrno(env, errno, "fcntl(F_GETLEASE)");
    return env.Undefined();
  }
  return Napi::Number::New(env, type);
}

}  // namespace

void InitLease(Napi::Env env, Napi::Object exports) {
  exports.Set("setLease", Napi::Function::New(env, SetLease, "setLease"));
  exports.Set("getLease", Napi::Function::New(env, GetLease, "getLease"));
  exports.Set("F_RDLCK", Napi::Number::New(env, F_RDLCK));
  exports.Set("F_WRLCK", Napi::Number::New(env, F_WRLCK));
  exports.Set("F_UNLCK", Napi::Number::New(env, F_UNLCK));
}

}  // namespace ublksnap

// The errno name table and the builders of the errors the addon throws.
// See errors.h for the shape of an error.
#include "errors.h"

#include "addon.h"
#include "args.h"

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace ublksnap {
namespace {

// Room for a strerror_r message; glibc's longest is under 50 bytes.
constexpr size_t kStrerrorBytesMax = 128;

// The names the storage code meets, plus the usual neighbours. Written as a
// switch over the macros, not a table of numbers, so each name is bound to
// this platform's value. Aliases with the same number on Linux are left out
// (EWOULDBLOCK = EAGAIN, ENOTSUP = EOPNOTSUPP, EDEADLOCK = EDEADLK): a switch
// cannot hold both, and Node names them the same way.
#define UBLKSNAP_ERRNO_NAMES(X)                                               \
  X(EPERM) X(ENOENT) X(ESRCH) X(EINTR) X(EIO) X(ENXIO) X(E2BIG) X(ENOEXEC)    \
  X(EBADF) X(ECHILD) X(EAGAIN) X(ENOMEM) X(EACCES) X(EFAULT) X(ENOTBLK)       \
  X(EBUSY) X(EEXIST) X(EXDEV) X(ENODEV) X(ENOTDIR) X(EISDIR) X(EINVAL)        \
  X(ENFILE) X(EMFILE) X(ENOTTY) X(ETXTBSY) X(EFBIG) X(ENOSPC) X(ESPIPE)       \
  X(EROFS) X(EMLINK) X(EPIPE) X(EDOM) X(ERANGE) X(EDEADLK) X(ENAMETOOLONG)    \
  X(ENOLCK) X(ENOSYS) X(ENOTEMPTY) X(ELOOP) X(ENODATA) X(ETIME) X(EOVERFLOW)  \
  X(EBADFD) X(EILSEQ) X(ENOTSOCK) X(EMSGSIZE) X(EPROTO) X(EOPNOTSUPP)         \
  X(EADDRINUSE) X(ENETDOWN) X(ENETUNREACH) X(ECONNRESET) X(ENOBUFS)           \
  X(ENOTCONN) X(ETIMEDOUT) X(ECONNREFUSED) X(EHOSTUNREACH) X(EALREADY)        \
  X(EINPROGRESS) X(ESTALE) X(EDQUOT) X(ENOMEDIUM) X(EMEDIUMTYPE)              \
  X(ECANCELED) X(EREMOTEIO)

const char* KnownErrnoName(int error_number) {
  switch (error_number) {
#define UBLKSNAP_ERRNO_CASE(name) \
  case name:                      \
    return #name;
    UBLKSNAP_ERRNO_NAMES(UBLKSNAP_ERRNO_CASE)
#undef UBLKSNAP_ERRNO_CASE
    default:
      return nullptr;
  }
}

// strerror itself may use a shared buffer for unknown numbers, and these
// functions run on several worker threads at once: use the GNU strerror_r,
// which returns either a static string or the caller's buffer.
std::string ErrorText(int error_number) {
  char buffer[kStrerrorBytesMax];
  return std::string(strerror_r(error_number, buffer, sizeof buffer));
}

}  // namespace

std::string ErrnoName(int error_number) {
  const char* name = KnownErrnoName(error_number);
  if (name != nullptr) return name;
  return "E" + std::to_string(error_number);
}

Napi::Error ErrnoError(Napi::Env env, int error_number, const char* syscall,
                       const std::string& subject) {
  std::string message = syscall;
  if (!subject.empty()) message += " " + subject;
  message += ": " + ErrorText(error_number);
  return ErrnoErrorWithMessage(env, error_number, syscall, message);
}

Napi::Error ErrnoErrorWithMessage(Napi::Env env, int error_number, const char* syscall,
                                  const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, ErrnoName(error_number)));
  error.Set("errno", Napi::Number::New(env, error_number));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

void ThrowErrno(Napi::Env env, int error_number, const char* syscall) {
  ErrnoError(env, error_number, syscall, std::string()).ThrowAsJavaScriptException();
}

void ThrowErrnoWithPath(Napi::Env env, int error_number, const char* syscall,
                        const std::string& path) {
  Napi::Error error = ErrnoError(env, error_number, syscall, path);
  error.Set("path", Napi::String::New(env, path));
  error.ThrowAsJavaScriptException();
}

void ThrowTypeError(Napi::Env env, const std::string& message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
}

namespace {

constexpr const char* kErrnoNameSignature = "errnoName(errno)";

// The errno names are also wanted where a number arrives without a name
// (an io_uring completion carries -errno): one table serves both.
Napi::Value ErrnoNameFunction(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t error_number = 0;
  if (!CheckArgCount(info, 1, 1, kErrnoNameSignature) ||
      !ReadSafeUint(info, 0, kErrnoNameSignature, "errno", &error_number)) {
    return env.Undefined();
  }
  if (error_number > INT32_MAX) {
    ThrowTypeError(env, std::string(kErrnoNameSignature) + ": errno must fit an int");
    return env.Undefined();
  }
  return Napi::String::New(env, ErrnoName(static_cast<int>(error_number)));
}

}  // namespace

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("errnoName", Napi::Function::New(env, ErrnoNameFunction, "errnoName"));
}

}  // namespace ublksnap

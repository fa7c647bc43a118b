// Errors thrown by the addon, in the shape Node's own fs errors have.
//
// Two kinds, as docs/style.md habit 8 asks:
//   - a bad argument (wrong count, wrong type, negative, unsafe integer) is a
//     bug of the caller: a TypeError with a message naming the signature;
//   - a failed system call is an operating error: an Error carrying
//       code     the errno name ("ENOENT", "EBUSY", ...; "E<number>" if the
//                table does not know it),
//       errno    the positive errno number (Node's fs uses negative numbers;
//                we keep the kernel's sign so it compares with errno.h),
//       syscall  the system call that failed ("open", "ioctl", ...),
//       path     the path, for calls that took one,
//     and the message "<syscall> <subject>: <strerror>", where the subject is
//     the path or the ioctl request name, and is left out when there is none.
//
// Every function here only records a pending JavaScript exception (C++
// exceptions are disabled); the caller returns to JavaScript right after.
#pragma once

#include <napi.h>

#include <string>

namespace ublksnap {

// The errno name for error_number ("EBUSY"), or "E<number>" if unknown.
std::string ErrnoName(int error_number);

// Builds (does not throw) the Error for a failed system call. subject is the
// path or the request name that the message mentions; may be empty.
Napi::Error ErrnoError(Napi::Env env, int error_number, const char* syscall,
                       const std::string& subject);

// Builds an Error with the same fields as ErrnoError but a message of the
// caller's own, for failures a reader needs explained in words (a missing
// driver, a timeout).
Napi::Error ErrnoErrorWithMessage(Napi::Env env, int error_number, const char* syscall,
                                  const std::string& message);

// Throws the Error for a failed system call that took no path.
void ThrowErrno(Napi::Env env, int error_number, const char* syscall);

// Throws the Error for a failed system call on path; sets error.path.
void ThrowErrnoWithPath(Napi::Env env, int error_number, const char* syscall,
                        const std::string& path);

// Throws a TypeError for a bad argument.
void ThrowTypeError(Napi::Env env, const std::string& message);

}  // namespace ublksnap

// Calls about the calling thread: its name, its scheduling niceness, and
// whether it is an I/O flusher.
//
// The grow actor fallocates the difference storage in the background; on
// tmpfs that allocates and accounts every page it reserves, about as much
// CPU as the copies themselves. Run at a higher nice value, it takes the CPU the foreground
// (volume writes, image reads) leaves, and still gets all of it when a
// store task waits for room, because the waiting threads are then idle.
// Linux applies setpriority(PRIO_PROCESS, tid) to one thread only.
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

constexpr const char* kSetThreadNiceSignature = "setThreadNice(nice)";
// The kernel's range of nice values is [-20, 19]; raising it needs no privilege.
constexpr uint64_t kNiceMax = 19;

Napi::Value SetThreadNice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t nice = 0;
  if (!CheckArgCount(info, 1, 1, kSetThreadNiceSignature) ||
      !ReadSafeUint(info, 0, kSetThreadNiceSignature, "nice", &nice)) {
    return env.Undefined();
  }
  if (nice > kNiceMax) {
    ThrowTypeError(env, std::string(kSetThreadNiceSignature) + ": nice must be in [0, 19]");
    return env.Undefined();
  }
  const auto thread_id = static_cast<id_t>(syscall(SYS_gettid));
  if (setpriority(PRIO_PROCESS, thread_id, static_cast<int>(nice)) != 0) {
    ThrowErrno(env, errno, "setpriority");
  }
  return env.Undefined();
}

constexpr const char* kSetThreadNameSignature = "setThreadName(name)";
// The kernel keeps a thread's name (comm) in 16 bytes, the last one NUL.
constexpr size_t kThreadNameCharsMax = 15;

// Names the calling thread, as top -H, ps -L, perf and /proc/PID/task/TID/comm
// show it: every worker of a Node process is otherwise called "node", and a
// profile could not say which actor burns the CPU.
Napi::Value SetThreadName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!CheckArgCount(info, 1, 1, kSetThreadNameSignature) ||
      !ReadPath(info, 0, kSetThreadNameSignature, "name", &name)) {
    return env.Undefined();
  }
  if (name.size() > kThreadNameCharsMax) {
    ThrowTypeError(env, std::string(kSetThreadNameSignature) + ": name must be at most 15 bytes");
    return env.Undefined();
  }
  int error = pthread_setname_np(pthread_self(), name.c_str());
  if (error != 0) ThrowErrno(env, error, "pthread_setname_np");
  return env.Undefined();
}

// PR_SET_IO_FLUSHER (Linux 5.6); older C headers lack the name.
#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

// Marks the calling thread as an I/O flusher (PF_MEMALLOC_NOIO |
// PF_LOCAL_THROTTLE): its allocations never recurse into writeback to the
// very device it serves. Per thread, so each queue thread calls it.
Napi::Value SetIoFlusher(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgCount(info, 0, 0, "setIoFlusher()")) return env.Undefined();
  if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0) return Napi::Boolean::New(env, true);
  int error = errno;
  // EPERM: needs CAP_SYS_RESOURCE; EINVAL: kernel older than 5.6. Both: not marked.
  if (error == EPERM || error == EINVAL) return Napi::Boolean::New(env, false);
  ThrowErrno(env, error, "prctl");
  return env.Undefined();
}

}  // namespace

void InitThread(Napi::Env env, Napi::Object exports) {
  exports.Set("setThreadName", Napi::Function::New(env, SetThreadName, "setThreadName"));
  exports.Set("setThreadNice", Napi::Function::New(env, SetThreadNice, "setThreadNice"));
  exports.Set("setIoFlusher", Napi::Function::New(env, SetIoFlusher, "setIoFlusher"));
}

}  // namespace ublksnap

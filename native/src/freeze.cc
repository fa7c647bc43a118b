// Filesystem freeze and thaw (FIFREEZE / FITHAW on the mount point): what
// blksnap's take does to filesystems on a device before it switches the
// copy-on-write state, so an image is clean without the user running
// fsfreeze.
//
// Both return Promises and run on libuv's thread pool: FIFREEZE writes the
// filesystem's dirty data back through the device first, which may take
// seconds and which, for a device this process serves, needs the I/O
// actors to answer while the main thread waits. The caller bounds the wait
// (a freeze can hang on a broken device) and thaws a freeze that finished
// after it gave up.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

class FreezeWorker : public Napi::AsyncWorker {
 public:
  FreezeWorker(Napi::Env env, std::string mount_point, bool freeze)
      : Napi::AsyncWorker(env, freeze ? "ublksnap.freezeFilesystem" : "ublksnap.thawFilesystem"),
        mount_point_(std::move(mount_point)),
        freeze_(freeze),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Start() {
    Napi::Promise promise = deferred_.Promise();
    Queue();
    return promise;
  }

  void Execute() override {
    const int fd = open(mount_point_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      error_ = errno;
      syscall_ = "open";
      return;
    }
    if (ioctl(fd, freeze_ ? FIFREEZE : FITHAW, 0) != 0) {
      // EBUSY: already frozen (freeze) or not frozen (thaw); EOPNOTSUPP:
      // the filesystem cannot freeze. The caller decides what each means.
      error_ = errno;
      syscall_ = "ioctl";
    }
    close(fd);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (error_ == 0) {
      deferred_.Resolve(env.Undefined());
      return;
    }
    const std::string subject = std::string(freeze_ ? "FIFREEZE " : "FITHAW ") + mount_point_;
    deferred_.Reject(ErrnoError(env, error_, syscall_, subject).Value());
  }

 private:
  std::string mount_point_;
  bool freeze_;
  Napi::Promise::Deferred deferred_;
  int error_ = 0;
  const char* syscall_ = "";
};

Napi::Value Run(const Napi::CallbackInfo& info, bool freeze, const char* signature) {
  Napi::Env env = info.Env();
  std::string mount_point;
  if (!ReadPath(info, 0, signature, "mount_point", &mount_point)) return env.Undefined();
  auto* worker = new FreezeWorker(env, std::move(mount_point), freeze);
  return worker->Start();
}

Napi::Value FreezeFilesystem(const Napi::CallbackInfo& info) {
  return Run(info, true, "freezeFilesystem(mount_point: string)");
}

Napi::Value ThawFilesystem(const Napi::CallbackInfo& info) {
  return Run(info, false, "thawFilesystem(mount_point: string)");
}

}  // namespace

void InitFreeze(Napi::Env env, Napi::Object exports) {
  exports.Set("freezeFilesystem", Napi::Function::New(env, FreezeFilesystem, "freezeFilesystem"));
  exports.Set("thawFilesystem", Napi::Function::New(env, ThawFilesystem, "thawFilesystem"));
}

}  // namespace ublksnap

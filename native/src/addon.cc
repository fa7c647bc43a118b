// ublksnap native addon: the system calls Node does not offer.
#include <napi.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

namespace {

Napi::Value Fdatasync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "fdatasync(fd): fd must be a number").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fdatasync(fd) != 0) {
    Napi::Error error = Napi::Error::New(env, std::strerror(errno));
    error.Set("errno", Napi::Number::New(env, errno));
    error.Set("syscall", Napi::String::New(env, "fdatasync"));
    error.ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("fdatasync", Napi::Function::New(env, Fdatasync));
  return exports;
}

}  // namespace

NODE_API_MODULE(ublksnap, Init)

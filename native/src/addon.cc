// ublksnap native addon: the system calls Node does not offer.
//
// Everything here is synchronous (the callers are worker threads whose whole
// job is to wait for the disk, so an async wrapper would only add a thread
// hop), except the ublk control commands, which may block for seconds and so
// return Promises. Each concern lives in its own file (see addon.h); this file only
// registers them.
#include <napi.h>

#include "addon.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ublksnap::InitLayoutTest(env, exports);
  ublksnap::InitErrors(env, exports);
  ublksnap::InitFiles(env, exports);
  ublksnap::InitClone(env, exports);
  ublksnap::InitCopyRange(env, exports);
  ublksnap::InitPopulate(env, exports);
  ublksnap::InitFiemap(env, exports);
  ublksnap::InitOpen(env, exports);
  ublksnap::InitBlockDevice(env, exports);
  ublksnap::InitLease(env, exports);
  ublksnap::InitMemory(env, exports);
  ublksnap::InitThread(env, exports);
  ublksnap::InitFreeze(env, exports);
  ublksnap::InitUblkControl(env, exports);
  ublksnap::InitUblkQueue(env, exports);
  return exports;
}

}  // namespace

// A Node-API module is context-aware: worker threads may load it too.
NODE_API_MODULE(ublksnap, Init)

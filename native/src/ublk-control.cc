// The ublk control commands as Promises (ADD_DEV, SET_PARAMS, START_DEV, ...).
//
// Each command runs in a napi AsyncWorker on the libuv thread pool: a
// control command may block for long (START_DEV reads the partition table
// through our own queues; DEL_DEV waits until /dev/ublkcN is released), so
// it must never run on a JavaScript thread. ublk-control-cmd.cc does the
// work; this file checks arguments, converts values and settles Promises.
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <memory>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "ublk-control-cmd.h"
#include "ublk-uapi.h"

namespace ublksnap {
namespace {

// A timeout longer than this (about 24 days) is surely a unit mistake.
constexpr uint64_t kTimeoutMsMax = INT32_MAX;
// The kernel's device ids are ints; -1 asks it to choose.
constexpr uint64_t kDeviceIdMax = INT32_MAX;
constexpr uint64_t kShiftMax = 31;
constexpr uint64_t kSectorBytes = uint64_t{1} << uapi::kSectorShift;

class ControlWorker : public Napi::AsyncWorker {
 public:
  ControlWorker(Napi::Env env, const ControlRequest& request, std::unique_ptr<ControlBuffers> buffers)
      : Napi::AsyncWorker(env, ControlCommandName(request.command)),
        request_(request),
        buffers_(std::move(buffers)),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  ~ControlWorker() override {
    // A command that timed out may still complete in the kernel and write
    // into its buffers: they must outlive it, so they are leaked (< 200 bytes).
    if (outcome_.timed_out) static_cast<void>(buffers_.release());
  }

  Napi::Promise Start() {
    Napi::Promise promise = deferred_.Promise();
    Queue();
    return promise;
  }

  void Execute() override { outcome_ = RunControlCommand(request_, buffers_.get()); }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (outcome_.error != 0) {
      deferred_.Reject(MakeError(env).Value());
      return;
    }
    deferred_.Resolve(ResultValue(env));
  }

 private:
  Napi::Error MakeError(Napi::Env env) const {
    if (outcome_.message.empty()) return ErrnoError(env, outcome_.error, outcome_.syscall.c_str(), "");
    return ErrnoErrorWithMessage(env, outcome_.error, outcome_.syscall.c_str(), outcome_.message);
  }

  Napi::Value ResultValue(Napi::Env env) const {
    switch (request_.command) {
      case ControlCommand::kGetFeatures: return Napi::BigInt::New(env, buffers_->features);
      case ControlCommand::kAddDevice:
      case ControlCommand::kGetDeviceInfo: return DeviceInfoObject(env, buffers_->info);
      default: return env.Undefined();
    }
  }

  static Napi::Object DeviceInfoObject(Napi::Env env, const uapi::DevInfo& info) {
    Napi::Object result = Napi::Object::New(env);
    result.Set("dev_id", Napi::Number::New(env, info.dev_id));
    result.Set("queue_count", Napi::Number::New(env, info.nr_hw_queues));
    result.Set("queue_depth", Napi::Number::New(env, info.queue_depth));
    result.Set("max_io_bytes", Napi::Number::New(env, info.max_io_buf_bytes));
    result.Set("flags", Napi::BigInt::New(env, info.flags));
    result.Set("state", Napi::Number::New(env, info.state));
    result.Set("server_pid", Napi::Number::New(env, info.ublksrv_pid));
    return result;
  }

  ControlRequest request_;
  std::unique_ptr<ControlBuffers> buffers_;
  Napi::Promise::Deferred deferred_;
  ControlOutcome outcome_;
};

Napi::Value StartCommand(Napi::Env env, const ControlRequest& request, std::unique_ptr<ControlBuffers> buffers) {
  // The AsyncWorker deletes itself after OnOK.
  auto* worker = new ControlWorker(env, request, std::move(buffers));
  return worker->Start();
}

bool ReadTimeout(const Napi::CallbackInfo& info, size_t index, const char* signature, uint32_t* timeout_ms) {
  uint64_t value = 0;
  if (!ReadSafeUint(info, index, signature, "timeout_ms", &value)) return false;
  if (value == 0 || value > kTimeoutMsMax) {
    ThrowTypeError(info.Env(), std::string(signature) + ": timeout_ms must be in [1, 2^31-1]");
    return false;
  }
  *timeout_ms = static_cast<uint32_t>(value);
  return true;
}

bool ReadDeviceId(const Napi::CallbackInfo& info, size_t index, const char* signature, uint32_t* dev_id) {
  uint64_t value = 0;
  if (!ReadSafeUint(info, index, signature, "dev_id", &value)) return false;
  if (value > kDeviceIdMax) {
    ThrowTypeError(info.Env(), std::string(signature) + ": dev_id must be in [0, 2^31-1]");
    return false;
  }
  *dev_id = static_cast<uint32_t>(value);
  return true;
}

// ── commands without a payload: (dev_id, timeout_ms) or (timeout_ms) ──

// The JavaScript name of a command that takes (dev_id, timeout_ms).
const char* DeviceCommandSignature(ControlCommand command) {
  switch (command) {
    case ControlCommand::kGetDeviceInfo: return "ublkGetDeviceInfo(dev_id, timeout_ms)";
    case ControlCommand::kStartDevice: return "ublkStartDevice(dev_id, timeout_ms)";
    case ControlCommand::kStopDevice: return "ublkStopDevice(dev_id, timeout_ms)";
    case ControlCommand::kDeleteDevice: return "ublkDeleteDevice(dev_id, timeout_ms)";
    case ControlCommand::kStartUserRecovery: return "ublkStartUserRecovery(dev_id, timeout_ms)";
    case ControlCommand::kEndUserRecovery: return "ublkEndUserRecovery(dev_id, timeout_ms)";
    default: return "ublk command(dev_id, timeout_ms)";
  }
}

template <ControlCommand kCommand>
Napi::Value DeviceCommand(const Napi::CallbackInfo& info) {
  const std::string signature = DeviceCommandSignature(kCommand);
  Napi::Env env = info.Env();
  ControlRequest request;
  request.command = kCommand;
  if (!CheckArgCount(info, 2, 2, signature.c_str()) || !ReadDeviceId(info, 0, signature.c_str(), &request.dev_id) ||
      !ReadTimeout(info, 1, signature.c_str(), &request.timeout_ms)) {
    return env.Undefined();
  }
  return StartCommand(env, request, std::make_unique<ControlBuffers>());
}

constexpr const char* kGetFeaturesSignature = "ublkGetFeatures(timeout_ms)";

Napi::Value GetFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ControlRequest request;
  request.command = ControlCommand::kGetFeatures;
  request.dev_id = 0;  // not a device command; the kernel ignores it
  if (!CheckArgCount(info, 1, 1, kGetFeaturesSignature) ||
      !ReadTimeout(info, 0, kGetFeaturesSignature, &request.timeout_ms)) {
    return env.Undefined();
  }
  return StartCommand(env, request, std::make_unique<ControlBuffers>());
}

// ── ADD_DEV ─────────────────────────────────────────────────────────────

constexpr const char* kAddDeviceSignature = "ublkAddDevice(spec, timeout_ms)";

bool ReadAddSpec(Napi::Env env, const Napi::Object& spec, uapi::DevInfo* dev) {
  const char* s = kAddDeviceSignature;
  uint64_t queue_count = 0, queue_depth = 0, max_io_bytes = 0, dev_id = 0;
  bool dev_id_present = false;
  Napi::Value raw_dev_id = spec.Get("dev_id");
  if (env.IsExceptionPending()) return false;
  bool any_id = raw_dev_id.IsNumber() && raw_dev_id.As<Napi::Number>().DoubleValue() == -1;
  if (!any_id && !ReadUintProperty(env, spec, "dev_id", s, 0, kDeviceIdMax, &dev_id, &dev_id_present)) return false;
  if (!ReadUintProperty(env, spec, "queue_count", s, 1, uapi::kMaxQueueCount, &queue_count) ||
      !ReadUintProperty(env, spec, "queue_depth", s, 1, uapi::kMaxQueueDepth, &queue_depth) ||
      !ReadUintProperty(env, spec, "max_io_bytes", s, kSectorBytes, UINT32_MAX, &max_io_bytes) ||
      !ReadUint64BigIntProperty(env, spec, "flags", s, &dev->flags)) {
    return false;
  }
  if (max_io_bytes % kSectorBytes != 0) {
    ThrowTypeError(env, std::string(s) + ": max_io_bytes must be a multiple of 512");
    return false;
  }
  dev->dev_id = dev_id_present ? static_cast<uint32_t>(dev_id) : uapi::kAnyDeviceId;
  dev->nr_hw_queues = static_cast<uint16_t>(queue_count);
  dev->queue_depth = static_cast<uint16_t>(queue_depth);
  dev->max_io_buf_bytes = static_cast<uint32_t>(max_io_bytes);
  dev->ublksrv_pid = getpid();
  return true;
}

Napi::Value AddDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object spec;
  auto buffers = std::make_unique<ControlBuffers>();
  ControlRequest request;
  request.command = ControlCommand::kAddDevice;
  if (!CheckArgCount(info, 2, 2, kAddDeviceSignature) || !ReadObject(info, 0, kAddDeviceSignature, "spec", &spec) ||
      !ReadAddSpec(env, spec, &buffers->info) || !ReadTimeout(info, 1, kAddDeviceSignature, &request.timeout_ms)) {
    return env.Undefined();
  }
  request.dev_id = buffers->info.dev_id;
  return StartCommand(env, request, std::move(buffers));
}

// ── SET_PARAMS ──────────────────────────────────────────────────────────

constexpr const char* kSetParamsSignature = "ublkSetParams(dev_id, params, timeout_ms)";

bool ReadBasicParams(Napi::Env env, const Napi::Object& object, uapi::ParamBasic* basic) {
  const char* s = kSetParamsSignature;
  uint64_t capacity = 0, logical = 0, physical = 0, io_min = 0, io_opt = 0, max_sectors = 0;
  bool read_only = false, volatile_cache = false, fua = false;
  if (!ReadUintProperty(env, object, "capacity_sectors", s, 0, kSafeIntegerMax, &capacity) ||
      !ReadUintProperty(env, object, "logical_block_shift", s, uapi::kSectorShift, kShiftMax, &logical) ||
      !ReadUintProperty(env, object, "physical_block_shift", s, uapi::kSectorShift, kShiftMax, &physical) ||
      !ReadUintProperty(env, object, "io_min_shift", s, 0, kShiftMax, &io_min) ||
      !ReadUintProperty(env, object, "io_opt_shift", s, 0, kShiftMax, &io_opt) ||
      !ReadUintProperty(env, object, "max_sectors", s, 1, UINT32_MAX, &max_sectors) ||
      !ReadBoolProperty(env, object, "read_only", s, &read_only) ||
      !ReadBoolProperty(env, object, "volatile_cache", s, &volatile_cache) ||
      !ReadBoolProperty(env, object, "fua", s, &fua)) {
    return false;
  }
  basic->attrs = (read_only ? uapi::kAttrReadOnly : 0) | (volatile_cache ? uapi::kAttrVolatileCache : 0) |
                 (fua ? uapi::kAttrFua : 0);
  basic->logical_bs_shift = static_cast<uint8_t>(logical);
  basic->physical_bs_shift = static_cast<uint8_t>(physical);
  basic->io_min_shift = static_cast<uint8_t>(io_min);
  basic->io_opt_shift = static_cast<uint8_t>(io_opt);
  basic->max_sectors = static_cast<uint32_t>(max_sectors);
  basic->dev_sectors = capacity;
  return true;
}

bool ReadDiscardParams(Napi::Env env, const Napi::Object& object, uapi::ParamDiscard* discard) {
  const char* s = kSetParamsSignature;
  uint64_t granularity = 0, alignment = 0, max_discard = 0, max_zeroes = 0, segments = 0;
  if (!ReadUintProperty(env, object, "granularity_bytes", s, 0, UINT32_MAX, &granularity) ||
      !ReadUintProperty(env, object, "alignment_bytes", s, 0, UINT32_MAX, &alignment) ||
      !ReadUintProperty(env, object, "max_discard_sectors", s, 0, UINT32_MAX, &max_discard) ||
      !ReadUintProperty(env, object, "max_write_zeroes_sectors", s, 0, UINT32_MAX, &max_zeroes) ||
      !ReadUintProperty(env, object, "max_discard_segments", s, 0, UINT16_MAX, &segments)) {
    return false;
  }
  discard->discard_granularity = static_cast<uint32_t>(granularity);
  discard->discard_alignment = static_cast<uint32_t>(alignment);
  discard->max_discard_sectors = static_cast<uint32_t>(max_discard);
  discard->max_write_zeroes_sectors = static_cast<uint32_t>(max_zeroes);
  discard->max_discard_segments = static_cast<uint16_t>(segments);
  return true;
}

bool ReadParams(Napi::Env env, const Napi::Object& object, uapi::Params* params) {
  params->len = uapi::kParamsSetBytes;
  params->types = uapi::kParamTypeBasic;
  if (!ReadBasicParams(env, object, &params->basic)) return false;
  Napi::Value discard = object.Get("discard");
  if (env.IsExceptionPending()) return false;
  if (discard.IsUndefined()) return true;
  if (discard.Type() != napi_object || discard.IsArray()) {
    ThrowTypeError(env, std::string(kSetParamsSignature) + ": params.discard must be an object or undefined");
    return false;
  }
  params->types |= uapi::kParamTypeDiscard;
  return ReadDiscardParams(env, discard.As<Napi::Object>(), &params->discard);
}

Napi::Value SetParams(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object object;
  auto buffers = std::make_unique<ControlBuffers>();
  ControlRequest request;
  request.command = ControlCommand::kSetParams;
  if (!CheckArgCount(info, 3, 3, kSetParamsSignature) ||
      !ReadDeviceId(info, 0, kSetParamsSignature, &request.dev_id) ||
      !ReadObject(info, 1, kSetParamsSignature, "params", &object) || !ReadParams(env, object, &buffers->params) ||
      !ReadTimeout(info, 2, kSetParamsSignature, &request.timeout_ms)) {
    return env.Undefined();
  }
  return StartCommand(env, request, std::move(buffers));
}

// ── synchronous helpers ─────────────────────────────────────────────────

Napi::Value ControlAvailable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgCount(info, 0, 0, "ublkControlAvailable()")) return env.Undefined();
  Napi::Object result = Napi::Object::New(env);
  int error = ProbeControlDevice();
  result.Set("available", Napi::Boolean::New(env, error == 0));
  if (error != 0) {
    result.Set("reason", Napi::String::New(env, UnavailableMessage(error)));
    result.Set("code", Napi::String::New(env, ErrnoName(error)));
  }
  return result;
}

// The struct sizes the addon was built with, for a test against the
// documented numbers.
Napi::Value LayoutSizes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object sizes = Napi::Object::New(env);
  sizes.Set("ctrl_cmd", Napi::Number::New(env, sizeof(uapi::CtrlCmd)));
  sizes.Set("ctrl_dev_info", Napi::Number::New(env, sizeof(uapi::DevInfo)));
  sizes.Set("io_desc", Napi::Number::New(env, sizeof(uapi::IoDesc)));
  sizes.Set("io_cmd", Napi::Number::New(env, sizeof(uapi::IoCmd)));
  sizes.Set("param_basic", Napi::Number::New(env, sizeof(uapi::ParamBasic)));
  sizes.Set("param_discard", Napi::Number::New(env, sizeof(uapi::ParamDiscard)));
  sizes.Set("param_devt", Napi::Number::New(env, sizeof(uapi::ParamDevt)));
  sizes.Set("params_set_bytes", Napi::Number::New(env, uapi::kParamsSetBytes));
  sizes.Set("add_dev_opcode", Napi::Number::New(env, uapi::IoctlReadWriteOpcode(uapi::kCmdAddDev)));
  sizes.Set("fetch_req_opcode", Napi::Number::New(env, uapi::IoctlIoOpcode(uapi::kIoFetchReq)));
  return sizes;
}

void SetBigInt(Napi::Env env, Napi::Object exports, const char* name, uint64_t value) {
  exports.Set(name, Napi::BigInt::New(env, value));
}

void SetNumber(Napi::Env env, Napi::Object exports, const char* name, uint32_t value) {
  exports.Set(name, Napi::Number::New(env, value));
}

void ExportConstants(Napi::Env env, Napi::Object exports) {
  SetBigInt(env, exports, "UBLK_F_SUPPORT_ZERO_COPY", uapi::kFlagSupportZeroCopy);
  SetBigInt(env, exports, "UBLK_F_URING_CMD_COMP_IN_TASK", uapi::kFlagUringCmdCompInTask);
  SetBigInt(env, exports, "UBLK_F_NEED_GET_DATA", uapi::kFlagNeedGetData);
  SetBigInt(env, exports, "UBLK_F_USER_RECOVERY", uapi::kFlagUserRecovery);
  SetBigInt(env, exports, "UBLK_F_USER_RECOVERY_REISSUE", uapi::kFlagUserRecoveryReissue);
  SetBigInt(env, exports, "UBLK_F_UNPRIVILEGED_DEV", uapi::kFlagUnprivilegedDev);
  SetBigInt(env, exports, "UBLK_F_CMD_IOCTL_ENCODE", uapi::kFlagCmdIoctlEncode);
  SetBigInt(env, exports, "UBLK_F_USER_COPY", uapi::kFlagUserCopy);
  SetNumber(env, exports, "UBLK_S_DEV_DEAD", uapi::kStateDead);
  SetNumber(env, exports, "UBLK_S_DEV_LIVE", uapi::kStateLive);
  SetNumber(env, exports, "UBLK_S_DEV_QUIESCED", uapi::kStateQuiesced);
  SetNumber(env, exports, "UBLK_IO_OP_READ", uapi::kIoOpRead);
  SetNumber(env, exports, "UBLK_IO_OP_WRITE", uapi::kIoOpWrite);
  SetNumber(env, exports, "UBLK_IO_OP_FLUSH", uapi::kIoOpFlush);
  SetNumber(env, exports, "UBLK_IO_OP_DISCARD", uapi::kIoOpDiscard);
  SetNumber(env, exports, "UBLK_IO_OP_WRITE_ZEROES", uapi::kIoOpWriteZeroes);
  SetNumber(env, exports, "UBLK_IO_F_FUA", uapi::kIoFlagFua);
  SetNumber(env, exports, "UBLK_IO_F_NOUNMAP", uapi::kIoFlagNoUnmap);
}

void ExportFunction(Napi::Env env, Napi::Object exports, const char* name, Napi::Function::Callback callback) {
  exports.Set(name, Napi::Function::New(env, callback, name));
}

}  // namespace

void InitUblkControl(Napi::Env env, Napi::Object exports) {
  ExportConstants(env, exports);
  ExportFunction(env, exports, "ublkControlAvailable", ControlAvailable);
  ExportFunction(env, exports, "ublkLayoutSizes", LayoutSizes);
  ExportFunction(env, exports, "ublkGetFeatures", GetFeatures);
  ExportFunction(env, exports, "ublkAddDevice", AddDevice);
  ExportFunction(env, exports, "ublkSetParams", SetParams);
  ExportFunction(env, exports, "ublkGetDeviceInfo", DeviceCommand<ControlCommand::kGetDeviceInfo>);
  ExportFunction(env, exports, "ublkStartDevice", DeviceCommand<ControlCommand::kStartDevice>);
  ExportFunction(env, exports, "ublkStopDevice", DeviceCommand<ControlCommand::kStopDevice>);
  ExportFunction(env, exports, "ublkDeleteDevice", DeviceCommand<ControlCommand::kDeleteDevice>);
  ExportFunction(env, exports, "ublkStartUserRecovery", DeviceCommand<ControlCommand::kStartUserRecovery>);
  ExportFunction(env, exports, "ublkEndUserRecovery", DeviceCommand<ControlCommand::kEndUserRecovery>);
}

}  // namespace ublksnap

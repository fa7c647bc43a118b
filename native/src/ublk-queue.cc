// UblkQueue: a ublk queue served to the JavaScript thread that made it,
// hosted one of two ways (the `native_thread` option):
//
// - on that thread's event loop (default): the JS thread owns the io_uring.
// - on a native queue thread (ublk-queue-thread.h): the thread owns the
//   io_uring and hands requests and commits over two SPSC rings with an
//   eventfd doorbell each way; the JS side below is the same, only Receive
//   and Submit differ. src/frontends/ublk/session.ts says which is faster.
//
// The event-loop host: the engine's
// I/O actors are worker threads; serving the queue from the actor that does
// the backing I/O needs no hand-off at all. The kernel delivers requests as
// io_uring task work to this thread; with a plain ring that work interrupts
// libuv's epoll_wait, runs, and posts CQEs, which signal the ring's eventfd,
// which a uv_poll_t watches. One callback per wake-up hands JavaScript a
// batch of request records; JavaScript answers with commit() per request
// and one submit() per batch. See ublk-queue-core.h for the tag rules.
#include <uv.h>

#include <cerrno>
#include <climits>
#include <memory>

#include "../include/ublksnap-layout.h"
#include "addon.h"
#include "args.h"
#include "errors.h"
#include "ublk-control-cmd.h"
#include "ublk-queue-core.h"
#include "ublk-queue-thread.h"

namespace ublksnap {
namespace {

constexpr const char* kConstructorSignature = "new UblkQueue(options)";
constexpr const char* kStartSignature = "UblkQueue.start(onRequests)";
constexpr const char* kCommitSignature = "UblkQueue.commit(tag, result)";
constexpr const char* kServeDirectSignature = "UblkQueue.serveDirect(volume | null)";
// The most negative commit result: -MAX_ERRNO.
constexpr int64_t kErrnoMax = 4095;
// Slots hold whole sectors; a slot above 1 GiB is surely a unit mistake.
constexpr uint64_t kSlotBytesMax = uint64_t{1} << 30;
constexpr uint64_t kSectorBytes = uint64_t{1} << uapi::kSectorShift;

struct BufferView {
  uint8_t* data = nullptr;
  size_t byte_length = 0;
};

bool ReadBytesView(Napi::Env env, const Napi::Value& value, BufferView* view) {
  if (value.IsArrayBuffer()) {
    Napi::ArrayBuffer buffer = value.As<Napi::ArrayBuffer>();
    view->data = static_cast<uint8_t*>(buffer.Data());
    view->byte_length = buffer.ByteLength();
    return true;
  }
  if (value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array) {
    Napi::Uint8Array array = value.As<Napi::Uint8Array>();
    view->data = array.Data();
    view->byte_length = array.ByteLength();
    return true;
  }
  ThrowTypeError(env, std::string(kConstructorSignature) +
                          ": options.buffer must be a SharedArrayBuffer (or a Uint8Array over one)");
  return false;
}

class UblkQueue : public Napi::ObjectWrap<UblkQueue> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "UblkQueue",
                       {InstanceMethod<&UblkQueue::Start>("start"), InstanceMethod<&UblkQueue::Commit>("commit"),
                        InstanceMethod<&UblkQueue::Submit>("submit"), InstanceMethod<&UblkQueue::Stats>("stats"),
                        InstanceMethod<&UblkQueue::ServeDirect>("serveDirect"), InstanceMethod<&UblkQueue::Close>("close")});
  }

  explicit UblkQueue(const Napi::CallbackInfo& info);
  // Finalized: no Unref (the reference is going away with this object).
  ~UblkQueue() override {
    referenced_ = false;
    Shutdown();
  }

 private:
  bool ReadConfig(const Napi::CallbackInfo& info, QueueConfig* config);
  bool ReadBuffers(Napi::Env env, const Napi::Object& options, QueueConfig* config);

  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Commit(const Napi::CallbackInfo& info);
  Napi::Value Submit(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value ServeDirect(const Napi::CallbackInfo& info);
  bool ReadDirectVolume(Napi::Env env, const Napi::Object& volume, DirectVolumeConfig* config);
  void StopDirect();
  // The detach StopDirect left for later (mapped writes were in flight), once they are not.
  void FinishStopDirect();
  Napi::Value Close(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);
  void OnReadable();
  void StopPoll();
  void ReleaseCallback();
  void Shutdown();

  bool is_open() const { return thread_host_ ? thread_host_->is_open() : core_.is_open(); }
  int event_fd() const { return thread_host_ ? thread_host_->event_fd() : core_.event_fd(); }
  unsigned Unsubmitted() const { return thread_host_ ? thread_host_->Unsubmitted() : core_.Unsubmitted(); }
  QueueStats CoreStats() const { return thread_host_ ? thread_host_->stats() : core_.stats(); }
  // One wake-up's requests, as records from index 0.
  uint32_t Receive();

  QueueCore core_;                            // the event-loop host
  DirectVolume direct_;                       // served without JavaScript (event-loop host only)
  Napi::ObjectReference direct_control_ref_;  // keep the direct volume's shared words alive
  Napi::ObjectReference direct_cbt_ref_;
  Napi::ObjectReference direct_hold_ref_;
  bool direct_detach_pending_ = false;        // StopDirect waits for mapped writes (direct-volume.h)
  std::unique_ptr<QueueThread> thread_host_;  // or the native-thread host
  uint32_t queue_depth_ = 0;
  Napi::ObjectReference buffer_ref_;     // keeps the slots' memory alive
  Napi::ObjectReference requests_ref_;   // keeps the records' memory alive
  Napi::FunctionReference on_requests_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
  uv_poll_t* poll_ = nullptr;            // freed by its uv_close callback
  bool referenced_ = false;              // Ref() taken while polling
  bool in_callback_ = false;             // onRequests is running (it may call close)
};

UblkQueue::UblkQueue(const Napi::CallbackInfo& info) : Napi::ObjectWrap<UblkQueue>(info) {
  Napi::Env env = info.Env();
  QueueConfig config;
  bool native_thread = false;
  if (!ReadConfig(info, &config)) return;
  Napi::Object options = info[0].As<Napi::Object>();
  if (!ReadBoolOption(env, options, "native_thread", kConstructorSignature, &native_thread)) return;
  queue_depth_ = config.queue_depth;
  QueueError error;
  if (native_thread) {
    thread_host_ = std::make_unique<QueueThread>();
    error = thread_host_->Open(config);
  } else {
    error = core_.Open(config);
  }
  if (error.error != 0) {
    ErrnoErrorWithMessage(env, error.error, error.syscall.c_str(), error.message).ThrowAsJavaScriptException();
    return;
  }
}

bool UblkQueue::ReadConfig(const Napi::CallbackInfo& info, QueueConfig* config) {
  Napi::Env env = info.Env();
  const char* s = kConstructorSignature;
  Napi::Object options;
  if (!info.IsConstructCall()) {
    ThrowTypeError(env, std::string(s) + ": must be called with new");
    return false;
  }
  if (!CheckArgCount(info, 1, 1, s) || !ReadObject(info, 0, s, "options", &options) ||
      !ReadOptions(info, 0, s,
                   {"dev_id", "queue_id", "queue_depth", "slot_bytes", "buffer", "buffer_offset_bytes", "requests",
                    "flags", "native_thread"},
                   &options)) {
    return false;
  }
  uint64_t dev_id = 0, queue_id = 0, depth = 0, slot_bytes = 0;
  if (!ReadUintProperty(env, options, "dev_id", s, 0, INT32_MAX, &dev_id) ||
      !ReadUintProperty(env, options, "queue_id", s, 0, uapi::kMaxQueueCount - 1, &queue_id) ||
      !ReadUintProperty(env, options, "queue_depth", s, 1, uapi::kMaxQueueDepth, &depth) ||
      !ReadUintProperty(env, options, "slot_bytes", s, kSectorBytes, kSlotBytesMax, &slot_bytes)) {
    return false;
  }
  if (slot_bytes % kSectorBytes != 0) {
    ThrowTypeError(env, std::string(s) + ": slot_bytes must be a multiple of 512");
    return false;
  }
  config->dev_id = static_cast<uint32_t>(dev_id);
  config->queue_id = static_cast<uint16_t>(queue_id);
  config->queue_depth = static_cast<uint16_t>(depth);
  config->slot_bytes = slot_bytes;
  return ReadBuffers(env, options, config);
}

bool UblkQueue::ReadBuffers(Napi::Env env, const Napi::Object& options, QueueConfig* config) {
  const char* s = kConstructorSignature;
  BufferView view;
  uint64_t offset_bytes = 0;
  Napi::Value buffer = options.Get("buffer");
  if (env.IsExceptionPending() || !ReadBytesView(env, buffer, &view) ||
      !ReadUintProperty(env, options, "buffer_offset_bytes", s, 0, kSafeIntegerMax, &offset_bytes)) {
    return false;
  }
  uint64_t slots_bytes = config->slot_bytes * config->queue_depth;
  if (offset_bytes > view.byte_length || view.byte_length - offset_bytes < slots_bytes) {
    ThrowTypeError(env, std::string(s) + ": buffer has " + std::to_string(view.byte_length) +
                            " bytes, the slots need " + std::to_string(offset_bytes + slots_bytes));
    return false;
  }
  Napi::Value requests = options.Get("requests");
  if (env.IsExceptionPending()) return false;
  bool is_int32 = requests.IsTypedArray() && requests.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array;
  uint64_t words_needed = uint64_t{config->queue_depth} * kRequestWords;
  if (!is_int32 || requests.As<Napi::Int32Array>().ElementLength() < words_needed) {
    ThrowTypeError(env, std::string(s) + ": options.requests must be an Int32Array of at least " +
                            std::to_string(words_needed) + " words (queue_depth * REQUEST_WORDS)");
    return false;
  }
  uint64_t flags = 0;
  Napi::Value raw_flags = options.Get("flags");
  if (env.IsExceptionPending()) return false;
  bool flags_given = !raw_flags.IsUndefined();
  if (flags_given && !ReadUint64BigIntProperty(env, options, "flags", s, &flags)) return false;
  // The device's flags decide; without them, what the control commands learnt.
  config->ioctl_opcodes = flags_given ? (flags & uapi::kFlagCmdIoctlEncode) != 0 : !ControlUsesLegacyOpcodes();
  config->slots = view.data + offset_bytes;
  config->records = requests.As<Napi::Int32Array>().Data();
  buffer_ref_ = Napi::Persistent(buffer.As<Napi::Object>());
  requests_ref_ = Napi::Persistent(requests.As<Napi::Object>());
  return true;
}

Napi::Value UblkQueue::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgCount(info, 1, 1, kStartSignature)) return env.Undefined();
  if (!info[0].IsFunction()) {
    ThrowTypeError(env, std::string(kStartSignature) + ": onRequests must be a function");
    return env.Undefined();
  }
  if (!is_open() || poll_ != nullptr) {
    ThrowTypeError(env, std::string(kStartSignature) + (poll_ != nullptr ? ": already started" : ": queue is closed"));
    return env.Undefined();
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    ThrowErrno(env, EINVAL, "napi_get_uv_event_loop");
    return env.Undefined();
  }
  poll_ = new uv_poll_t;
  int error = uv_poll_init(loop, poll_, event_fd());
  if (error != 0) {
    delete poll_;  // a failed init leaves nothing for libuv to close
    poll_ = nullptr;
    ThrowErrno(env, -error, "uv_poll_init");
    return env.Undefined();
  }
  poll_->data = nullptr;
  error = uv_poll_start(poll_, UV_READABLE, OnPoll);
  if (error != 0) {
    StopPoll();
    ThrowErrno(env, -error, "uv_poll_start");
    return env.Undefined();
  }
  poll_->data = this;
  on_requests_ = Napi::Persistent(info[0].As<Napi::Function>());
  async_context_ = std::make_unique<Napi::AsyncContext>(env, "UblkQueue");
  Ref();  // a serving queue must not be collected
  referenced_ = true;
  // Requests that arrived before start() (START_DEV's partition scan) are
  // already in the CQ; the eventfd is readable then and the poll fires.
  return env.Undefined();
}

void UblkQueue::OnPoll(uv_poll_t* handle, int status, int events) {
  static_cast<void>(status);  // on an error the reaping below is still right
  static_cast<void>(events);
  auto* self = static_cast<UblkQueue*>(handle->data);
  if (self != nullptr) self->OnReadable();
}

uint32_t UblkQueue::Receive() {
  if (thread_host_) return thread_host_->Receive();
  core_.DrainEventFd();  // before reaping: a CQE posted after this signals again
  core_.Harvest();
  if (core_.Unsubmitted() > 0) core_.Submit();  // commits a busy submit left behind
  return core_.Report();
}

void UblkQueue::OnReadable() {
  uint32_t count = Receive();
  // A direct write emptied a frozen gate: JavaScript must wake the take waiting for it.
  bool drained = direct_.TakeDrainedWhileFrozen();
  FinishStopDirect();
  if (count > 0 || drained) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    in_callback_ = true;
    on_requests_.MakeCallback(Value(), {Napi::Number::New(env, count), Napi::Boolean::New(env, drained)},
                              *async_context_);
    in_callback_ = false;
    // close() inside the callback left these for now: they were in use.
    if (!is_open()) ReleaseCallback();
    if (env.IsExceptionPending()) {
      // An exception from the callback belongs to the process, as from any event.
      Napi::Error error = env.GetAndClearPendingException();
      napi_fatal_exception(env, error.Value());
      return;
    }
  }
  // Commits of directly served requests, and any JavaScript left for later
  // (its requests all parked): one io_uring_enter. A failure stays queued
  // for the next wake-up's Receive.
  if (!thread_host_ && core_.Unsubmitted() > 0) core_.Submit();
}

Napi::Value UblkQueue::Commit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    ThrowTypeError(env, std::string(kCommitSignature) + ": expects two integer numbers");
    return env.Undefined();
  }
  double tag = info[0].As<Napi::Number>().DoubleValue();
  double result = info[1].As<Napi::Number>().DoubleValue();
  bool tag_ok = tag >= 0 && tag < queue_depth_ && tag == static_cast<double>(static_cast<int64_t>(tag));
  bool result_ok = result >= -kErrnoMax && result <= INT32_MAX && result == static_cast<double>(static_cast<int64_t>(result));
  if (!tag_ok || !result_ok) {
    ThrowTypeError(env, std::string(kCommitSignature) + ": tag must be in [0, queue_depth), result in [-4095, 2^31-1]");
    return env.Undefined();
  }
  uint32_t tag_index = static_cast<uint32_t>(tag);
  int32_t result_value = static_cast<int32_t>(result);
  CommitStatus status = thread_host_ ? thread_host_->Commit(tag_index, result_value) : core_.Commit(tag_index, result_value);
  switch (status) {
    case CommitStatus::kOk: break;
    case CommitStatus::kBadTag: ThrowTypeError(env, std::string(kCommitSignature) + ": tag out of range"); break;
    case CommitStatus::kNotOwned:
      ThrowTypeError(env, std::string(kCommitSignature) + ": tag " + std::to_string(static_cast<int64_t>(tag)) +
                              " is not a delivered, uncommitted request (double commit?)");
      break;
    case CommitStatus::kClosed: ThrowTypeError(env, std::string(kCommitSignature) + ": queue is closed"); break;
    case CommitStatus::kNoSqe: ThrowErrno(env, EAGAIN, "io_uring sqe"); break;
  }
  return env.Undefined();
}

Napi::Value UblkQueue::Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int submitted = thread_host_ ? thread_host_->Submit() : core_.Submit();
  if (submitted < 0) {
    ThrowErrno(env, -submitted, "io_uring_enter");
    return env.Undefined();
  }
  return Napi::Number::New(env, submitted);
}

Napi::Value UblkQueue::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  QueueStats stats = CoreStats();
  Napi::Object result = Napi::Object::New(env);
  result.Set("in_flight", Napi::Number::New(env, stats.in_flight));
  result.Set("delivered", Napi::Number::New(env, static_cast<double>(stats.delivered)));
  result.Set("committed", Napi::Number::New(env, static_cast<double>(stats.committed)));
  result.Set("aborted", Napi::Number::New(env, stats.aborted));
  result.Set("failed", Napi::Number::New(env, stats.failed));
  result.Set("last_error", Napi::Number::New(env, stats.last_error));
  result.Set("unsubmitted", Napi::Number::New(env, Unsubmitted()));
  result.Set("wakeups", Napi::Number::New(env, static_cast<double>(stats.wakeups)));
  result.Set("native_thread", Napi::Boolean::New(env, thread_host_ != nullptr));
  result.Set("direct", Napi::Boolean::New(env, direct_.attached()));
  // The direct volume keeps its own counts (until the next serveDirect of a volume).
  DirectCounts direct = thread_host_ ? thread_host_->DirectCountsOf(direct_) : direct_.counts();
  result.Set("direct_reads", Napi::Number::New(env, static_cast<double>(direct.reads)));
  result.Set("direct_writes", Napi::Number::New(env, static_cast<double>(direct.writes)));
  result.Set("direct_bytes_read", Napi::Number::New(env, static_cast<double>(direct.bytes_read)));
  result.Set("direct_bytes_written", Napi::Number::New(env, static_cast<double>(direct.bytes_written)));
  result.Set("direct_declined", Napi::Number::New(env, static_cast<double>(direct.declined)));
  result.Set("direct_redone", Napi::Number::New(env, static_cast<double>(direct.redone)));
  result.Set("direct_mapped_writes", Napi::Number::New(env, static_cast<double>(direct.mapped_writes)));
  result.Set("direct_mapped_failed", Napi::Number::New(env, static_cast<double>(direct.mapped_failed)));
  return result;
}

// serveDirect({ fd, capacity_bytes, control, cbt, write_hold? }) starts
// serving that volume's plain reads and writes here (direct-volume.h);
// serveDirect(null) stops it, before the next request. The buffers are the
// volume's SharedArrayBuffers (descriptors.ts VolumeDescriptor).
Napi::Value UblkQueue::ServeDirect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* s = kServeDirectSignature;
  if (!CheckArgCount(info, 1, 1, s)) return env.Undefined();
  if (info[0].IsNull()) {
    StopDirect();
    return env.Undefined();
  }
  if (!is_open()) {
    ThrowTypeError(env, std::string(s) + ": queue is closed");
    return env.Undefined();
  }
  Napi::Object volume;
  DirectVolumeConfig config;
  if (!ReadObject(info, 0, s, "volume", &volume) ||
      !ReadOptions(info, 0, s, {"fd", "capacity_bytes", "control", "cbt", "write_hold"}, &volume) ||
      !ReadDirectVolume(env, volume, &config)) {
    return env.Undefined();
  }
  StopDirect();
  if (direct_detach_pending_) {
    ThrowErrno(env, EBUSY, "serveDirect: mapped writes of the previous volume still in flight");
    return env.Undefined();
  }
  int error = direct_.Attach(config);
  if (error != 0) {
    ThrowErrno(env, error, "dup");
    return env.Undefined();
  }
  direct_control_ref_ = Napi::Persistent(volume.Get("control").As<Napi::Object>());
  direct_cbt_ref_ = Napi::Persistent(volume.Get("cbt").As<Napi::Object>());
  Napi::Value hold = volume.Get("write_hold");
  if (!hold.IsUndefined()) direct_hold_ref_ = Napi::Persistent(hold.As<Napi::Object>());
  if (thread_host_) {
    thread_host_->ServeDirect(&direct_);
  } else {
    core_.ServeDirect(&direct_);
  }
  return env.Undefined();
}

bool UblkQueue::ReadDirectVolume(Napi::Env env, const Napi::Object& volume, DirectVolumeConfig* config) {
  const char* s = kServeDirectSignature;
  uint64_t fd = 0, capacity = 0;
  if (!ReadUintProperty(env, volume, "fd", s, 0, INT32_MAX, &fd) ||
      !ReadUintProperty(env, volume, "capacity_bytes", s, 0, kSafeIntegerMax, &capacity)) {
    return false;
  }
  auto shared = [&](const char* name, size_t bytes_min, bool optional, uint8_t** data, size_t* bytes) {
    Napi::Value value = volume.Get(name);
    if (env.IsExceptionPending()) return false;
    if (optional && value.IsUndefined()) return true;
    // Node-API cannot take a SharedArrayBuffer itself: a Uint8Array over all of it (src/native/ublk.ts).
    bool is_bytes = value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array;
    if (!is_bytes || value.As<Napi::Uint8Array>().ByteLength() < bytes_min) {
      ThrowTypeError(env, std::string(s) + ": volume." + name + " must be a Uint8Array over a SharedArrayBuffer of at least " +
                              std::to_string(bytes_min) + " bytes");
      return false;
    }
    *data = value.As<Napi::Uint8Array>().Data();
    *bytes = value.As<Napi::Uint8Array>().ByteLength();
    return true;
  };
  uint8_t* control = nullptr;
  uint8_t* hold = nullptr;
  size_t control_bytes = 0, hold_bytes = 0, cbt_bytes = 0;
  if (!shared("control", layout::volume_control::kWords * sizeof(int32_t), false, &control, &control_bytes) ||
      !shared("cbt", layout::cbt_map::kMapsByte, false, &config->cbt, &cbt_bytes) ||
      !shared("write_hold", layout::write_hold::kWords * sizeof(int32_t), true, &hold, &hold_bytes)) {
    return false;
  }
  // The map's own header says how many blocks follow: both copies must be there.
  const auto* cbt_header = reinterpret_cast<const int32_t*>(config->cbt);
  int64_t block_count = cbt_header[layout::cbt_map::kBlockCount];
  int32_t block_shift = cbt_header[layout::cbt_map::kBlockShift];
  if (block_count < 0 || block_shift < 9 || block_shift > 40 ||
      static_cast<uint64_t>(layout::cbt_map::kMapsByte + 2 * block_count) > cbt_bytes) {
    ThrowTypeError(env, std::string(s) + ": volume.cbt is not a CBT map");
    return false;
  }
  config->fd = static_cast<int>(fd);
  config->capacity_bytes = capacity;
  config->control = reinterpret_cast<int32_t*>(control);
  config->cbt_bytes = cbt_bytes;
  config->write_hold = reinterpret_cast<int32_t*>(hold);
  return true;
}

void UblkQueue::StopDirect() {
  // After this the serving thread starts nothing new on direct_ (the native
  // thread takes the same mutex around its serving). Mapped writes already
  // handed to the kernel still hold the gate and need the mapping: they
  // finish on the serving thread, and the detach waits for them.
  if (thread_host_) thread_host_->ServeDirect(nullptr);
  core_.ServeDirect(nullptr);
  direct_detach_pending_ = true;
  FinishStopDirect();
}

void UblkQueue::FinishStopDirect() {
  if (!direct_detach_pending_ || direct_.MappedPending() > 0) return;
  direct_detach_pending_ = false;
  direct_.Detach();
  if (!direct_control_ref_.IsEmpty()) direct_control_ref_.Reset();
  if (!direct_cbt_ref_.IsEmpty()) direct_cbt_ref_.Reset();
  if (!direct_hold_ref_.IsEmpty()) direct_hold_ref_.Reset();
}

Napi::Value UblkQueue::Close(const Napi::CallbackInfo& info) {
  Shutdown();
  return info.Env().Undefined();
}

void UblkQueue::StopPoll() {
  if (poll_ == nullptr) return;
  poll_->data = nullptr;  // no callback may reach this object any more
  uv_close(reinterpret_cast<uv_handle_t*>(poll_),
           [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
  poll_ = nullptr;
}

void UblkQueue::ReleaseCallback() {
  if (!on_requests_.IsEmpty()) on_requests_.Reset();
  async_context_.reset();
}

void UblkQueue::Shutdown() {
  // uv_close stops watching the eventfd at once, so it may be closed next.
  StopPoll();
  // The queue thread is joined here: it ends the ring it made.
  if (thread_host_) thread_host_->Close();
  StopDirect();
  core_.Close();  // abandons the mapped writes still waiting: the detach can go on
  FinishStopDirect();
  if (!buffer_ref_.IsEmpty()) buffer_ref_.Reset();
  if (!requests_ref_.IsEmpty()) requests_ref_.Reset();
  // The async context must outlive a MakeCallback that is running now.
  if (!in_callback_) ReleaseCallback();
  if (referenced_) {
    referenced_ = false;
    Unref();
  }
}

}  // namespace

void InitUblkQueue(Napi::Env env, Napi::Object exports) {
  exports.Set("UblkQueue", UblkQueue::Define(env));
  exports.Set("REQUEST_WORDS", Napi::Number::New(env, kRequestWords));
  exports.Set("REQUEST_TAG", Napi::Number::New(env, kWordTag));
  exports.Set("REQUEST_OP", Napi::Number::New(env, kWordOp));
  exports.Set("REQUEST_FLAGS", Napi::Number::New(env, kWordFlags));
  exports.Set("REQUEST_NR_SECTORS", Napi::Number::New(env, kWordNrSectors));
  exports.Set("REQUEST_START_SECTOR_LOW", Napi::Number::New(env, kWordStartLow));
  exports.Set("REQUEST_START_SECTOR_HIGH", Napi::Number::New(env, kWordStartHigh));
}

}  // namespace ublksnap

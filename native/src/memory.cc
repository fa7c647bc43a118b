// alignedOffset and bufferAddress: the bridge from shared memory to O_DIRECT.
//
// O_DIRECT needs the file offset and length aligned to the device's logical
// block, and the memory aligned to its DMA alignment (queue/dma_alignment
// + 1: 512 for most devices, 4 for NVMe). 4096-aligned memory satisfies
// every device we meet. A SharedArrayBuffer's data pointer has no such
// promise, so the engine over-allocates by one alignment and views the
// buffer from the first aligned byte:
//
//   buffer  |<- offset ->|<----------- aligned view ----------->|   |
//           ^ data       ^ data + offset, a multiple of alignment
//
// The backing store of an ArrayBuffer or SharedArrayBuffer never moves once
// it exists, so the offset computed once stays right for the buffer's life.
//
// Node 20's Node-API cannot see a SharedArrayBuffer itself (napi_get_
// arraybuffer_info refuses it), but it can see a typed array or DataView over
// one. So these functions take an ArrayBuffer or any ArrayBufferView; for a
// view, the address and the offset are those of the view's first byte. The
// TypeScript wrapper passes a SharedArrayBuffer as a Uint8Array over all of it.
#include <cstdint>
#include <string>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace ublksnap {
namespace {

constexpr const char* kAlignedOffsetSignature = "alignedOffset(buffer, alignment_bytes)";
constexpr const char* kBufferAddressSignature = "bufferAddress(buffer)";

// The data pointer of an ArrayBuffer or of a view's first byte. Throws a
// TypeError and returns false for anything else.
bool ReadDataAddress(const Napi::CallbackInfo& info, size_t index,
                     const char* signature, uintptr_t* address) {
  napi_env env = info.Env();
  napi_value value = info[index];
  void* data = nullptr;
  napi_status status = napi_invalid_arg;
  if (info[index].IsArrayBuffer()) {
    status = napi_get_arraybuffer_info(env, value, &data, nullptr);
  } else if (info[index].IsTypedArray()) {
    status = napi_get_typedarray_info(env, value, nullptr, nullptr, &data, nullptr, nullptr);
  } else if (info[index].IsDataView()) {
    status = napi_get_dataview_info(env, value, nullptr, &data, nullptr, nullptr);
  }
  if (status != napi_ok) {
    ThrowTypeError(info.Env(), std::string(signature) +
                                   ": buffer must be an ArrayBuffer, a typed array or a DataView");
    return false;
  }
  *address = reinterpret_cast<uintptr_t>(data);
  return true;
}

Napi::Value AlignedOffset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uintptr_t address = 0;
  uint64_t alignment_bytes = 0;
  if (!CheckArgCount(info, 2, 2, kAlignedOffsetSignature) ||
      !ReadDataAddress(info, 0, kAlignedOffsetSignature, &address) ||
      !ReadSafeUint(info, 1, kAlignedOffsetSignature, "alignment_bytes", &alignment_bytes)) {
    return env.Undefined();
  }
  bool power_of_two = alignment_bytes != 0 && (alignment_bytes & (alignment_bytes - 1)) == 0;
  if (!power_of_two) {
    ThrowTypeError(env, std::string(kAlignedOffsetSignature) +
                            ": alignment_bytes must be a power of two >= 1, got " +
                            std::to_string(alignment_bytes));
    return env.Undefined();
  }
  // The distance up to the next multiple; 0 when already aligned. It may
  // exceed the buffer's length: the caller checks that the view fits.
  uint64_t mask = alignment_bytes - 1;
  uint64_t offset_bytes = (alignment_bytes - (address & mask)) & mask;
  return Napi::Number::New(env, static_cast<double>(offset_bytes));
}

Napi::Value BufferAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uintptr_t address = 0;
  if (!CheckArgCount(info, 1, 1, kBufferAddressSignature) ||
      !ReadDataAddress(info, 0, kBufferAddressSignature, &address)) {
    return env.Undefined();
  }
  return Napi::BigInt::New(env, static_cast<uint64_t>(address));
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("alignedOffset", Napi::Function::New(env, AlignedOffset, "alignedOffset"));
  exports.Set("bufferAddress", Napi::Function::New(env, BufferAddress, "bufferAddress"));
}

}  // namespace ublksnap

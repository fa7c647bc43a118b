// Argument checks at the JavaScript boundary. See args.h.
#include "args.h"

#include <climits>
#include <cmath>

#include "errors.h"

namespace ublksnap {
namespace {

// How a bad value is described in a TypeError: its type, and for numbers
// the value itself (so "got 1.5" or "got -1" tells the caller what arrived).
std::string Describe(const Napi::Value& value) {
  switch (value.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "a boolean";
    case napi_number: {
      // std::to_string would print 1.5 as 1.500000 and NaN as nan.
      Napi::Env env = value.Env();
      Napi::Value text = value.ToString();
      if (env.IsExceptionPending()) return "a number";
      return "the number " + text.As<Napi::String>().Utf8Value();
    }
    case napi_string: return "a string";
    case napi_symbol: return "a symbol";
    case napi_object: return "an object";
    case napi_function: return "a function";
    case napi_external: return "an external";
    case napi_bigint: return "a bigint";
  }
  return "an unknown value";
}

void ThrowBadArg(const Napi::CallbackInfo& info, size_t index,
                 const char* signature, const char* name, const char* wanted) {
  ThrowTypeError(info.Env(), std::string(signature) + ": " + name + " must be " +
                                 wanted + ", got " + Describe(info[index]));
}

// True when value is a number holding an integer in [0, max].
bool IsIntegerInRange(const Napi::Value& value, double max) {
  if (!value.IsNumber()) return false;
  double number = value.As<Napi::Number>().DoubleValue();
  // NaN fails every comparison, and +-Infinity fails one of these.
  return number >= 0 && number <= max && std::trunc(number) == number;
}

bool IsKnownKey(const std::string& name, std::initializer_list<const char*> known_keys) {
  for (const char* known : known_keys) {
    if (name == known) return true;
  }
  return false;
}

}  // namespace

bool CheckArgCount(const Napi::CallbackInfo& info, size_t min_count,
                   size_t max_count, const char* signature) {
  size_t count = info.Length();
  if (count >= min_count && count <= max_count) return true;
  std::string wanted = min_count == max_count
                           ? std::to_string(min_count)
                           : std::to_string(min_count) + " to " + std::to_string(max_count);
  ThrowTypeError(info.Env(), std::string(signature) + ": expects " + wanted +
                                 " argument(s), got " + std::to_string(count));
  return false;
}

bool ReadFd(const Napi::CallbackInfo& info, size_t index, const char* signature,
            int* fd) {
  if (!IsIntegerInRange(info[index], INT_MAX)) {
    ThrowBadArg(info, index, signature, "fd", "an integer file descriptor >= 0");
    return false;
  }
  *fd = info[index].As<Napi::Number>().Int32Value();
  return true;
}

bool ReadSafeUint(const Napi::CallbackInfo& info, size_t index,
                  const char* signature, const char* name, uint64_t* value) {
  if (!IsIntegerInRange(info[index], static_cast<double>(kSafeIntegerMax))) {
    ThrowBadArg(info, index, signature, name, "a safe non-negative integer");
    return false;
  }
  *value = static_cast<uint64_t>(info[index].As<Napi::Number>().DoubleValue());
  return true;
}

bool ReadPath(const Napi::CallbackInfo& info, size_t index,
              const char* signature, const char* name, std::string* path) {
  if (!info[index].IsString()) {
    ThrowBadArg(info, index, signature, name, "a string");
    return false;
  }
  *path = info[index].As<Napi::String>().Utf8Value();
  if (path->empty() || path->find('\0') != std::string::npos) {
    ThrowTypeError(info.Env(), std::string(signature) + ": " + name +
                                   " must be a non-empty path without NUL characters");
    return false;
  }
  return true;
}

bool ReadOptions(const Napi::CallbackInfo& info, size_t index,
                 const char* signature,
                 std::initializer_list<const char*> known_keys,
                 Napi::Object* options) {
  if (info[index].IsUndefined()) return true;
  // Functions and arrays are objects too, but never meant as options.
  if (info[index].Type() != napi_object || info[index].IsArray()) {
    ThrowBadArg(info, index, signature, "options", "an object or undefined");
    return false;
  }
  Napi::Env env = info.Env();
  Napi::Object candidate = info[index].As<Napi::Object>();
  // A Proxy's ownKeys trap may throw: then an exception is pending.
  Napi::Array keys = candidate.GetPropertyNames();
  if (env.IsExceptionPending()) return false;
  for (uint32_t key_index = 0; key_index < keys.Length(); key_index += 1) {
    Napi::Value key = keys.Get(key_index);
    if (env.IsExceptionPending()) return false;
    std::string name = key.ToString().Utf8Value();
    if (env.IsExceptionPending()) return false;
    if (!IsKnownKey(name, known_keys)) {
      ThrowTypeError(env, std::string(signature) + ": unknown option \"" + name + "\"");
      return false;
    }
  }
  *options = candidate;
  return true;
}

bool ReadBoolOption(Napi::Env env, const Napi::Object& options, const char* key,
                    const char* signature, bool* value) {
  *value = false;
  if (options.IsEmpty()) return true;
  // A getter or a Proxy may throw: then an exception is pending, and the
  // value is empty.
  Napi::Value option = options.Get(key);
  if (env.IsExceptionPending()) return false;
  if (option.IsUndefined()) return true;
  if (!option.IsBoolean()) {
    ThrowTypeError(env, std::string(signature) + ": options." + key +
                            " must be a boolean or undefined, got " + Describe(option));
    return false;
  }
  *value = option.As<Napi::Boolean>().Value();
  return true;
}

namespace {

// object[key]; false with the exception pending when a getter or Proxy threw.
bool GetProperty(Napi::Env env, const Napi::Object& object, const char* key, Napi::Value* value) {
  *value = object.Get(key);
  return !env.IsExceptionPending();
}

void ThrowBadProperty(Napi::Env env, const char* signature, const char* key, const std::string& wanted,
                      const Napi::Value& value) {
  ThrowTypeError(env, std::string(signature) + ": " + key + " must be " + wanted + ", got " + Describe(value));
}

}  // namespace

bool ReadUintProperty(Napi::Env env, const Napi::Object& object, const char* key,
                      const char* signature, uint64_t min, uint64_t max, uint64_t* value,
                      bool* value_present) {
  Napi::Value property;
  if (!GetProperty(env, object, key, &property)) return false;
  if (value_present != nullptr) {
    *value_present = !property.IsUndefined();
    if (property.IsUndefined()) return true;
  }
  bool in_range = IsIntegerInRange(property, static_cast<double>(max)) &&
                  property.As<Napi::Number>().DoubleValue() >= static_cast<double>(min);
  if (!in_range) {
    ThrowBadProperty(env, signature, key,
                     "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]", property);
    return false;
  }
  *value = static_cast<uint64_t>(property.As<Napi::Number>().DoubleValue());
  return true;
}

bool ReadBoolProperty(Napi::Env env, const Napi::Object& object, const char* key,
                      const char* signature, bool* value) {
  Napi::Value property;
  if (!GetProperty(env, object, key, &property)) return false;
  if (!property.IsBoolean()) {
    ThrowBadProperty(env, signature, key, "a boolean", property);
    return false;
  }
  *value = property.As<Napi::Boolean>().Value();
  return true;
}

bool ReadUint64BigIntProperty(Napi::Env env, const Napi::Object& object, const char* key,
                              const char* signature, uint64_t* value) {
  Napi::Value property;
  if (!GetProperty(env, object, key, &property)) return false;
  bool lossless = false;
  if (property.IsBigInt()) *value = property.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) {
    ThrowBadProperty(env, signature, key, "a bigint in [0, 2^64)", property);
    return false;
  }
  return true;
}

bool ReadObject(const Napi::CallbackInfo& info, size_t index, const char* signature,
                const char* name, Napi::Object* object) {
  if (info[index].Type() != napi_object || info[index].IsArray()) {
    ThrowBadArg(info, index, signature, name, "an object");
    return false;
  }
  *object = info[index].As<Napi::Object>();
  return true;
}

bool ReadFileRangeArgs(const Napi::CallbackInfo& info, const char* signature, FileRangeArgs* args) {
  return CheckArgCount(info, 5, 5, signature) &&
         ReadFd(info, 0, signature, &args->dest_fd) &&
         ReadSafeUint(info, 1, signature, "dest_offset_bytes", &args->dest_offset_bytes) &&
         ReadFd(info, 2, signature, &args->src_fd) &&
         ReadSafeUint(info, 3, signature, "src_offset_bytes", &args->src_offset_bytes) &&
         ReadSafeUint(info, 4, signature, "length_bytes", &args->length_bytes);
}

}  // namespace ublksnap

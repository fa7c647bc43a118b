// Argument checks at the JavaScript boundary.
//
// The addon is a boundary (docs/style.md habit 9): every function checks its
// arguments here and throws a TypeError naming its signature, so nothing a
// caller passes can reach a system call as a surprise (a float fd, a
// negative offset, 2^60 rounded to a different number). Each Read* returns
// false after throwing; the caller then returns to JavaScript at once.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace ublksnap {

// The largest integer a JavaScript number holds exactly (Number.MAX_SAFE_INTEGER).
constexpr uint64_t kSafeIntegerMax = (uint64_t{1} << 53) - 1;

// Checks min_count <= info.Length() <= max_count.
bool CheckArgCount(const Napi::CallbackInfo& info, size_t min_count,
                   size_t max_count, const char* signature);

// A file descriptor: an integer number in [0, INT32_MAX].
bool ReadFd(const Napi::CallbackInfo& info, size_t index, const char* signature,
            int* fd);

// A safe non-negative integer number (Number.isSafeInteger(x) && x >= 0).
bool ReadSafeUint(const Napi::CallbackInfo& info, size_t index,
                  const char* signature, const char* name, uint64_t* value);

// A non-empty string without NUL characters (a NUL would cut the path short
// when handed to the kernel).
bool ReadPath(const Napi::CallbackInfo& info, size_t index,
              const char* signature, const char* name, std::string* path);

// An options object, or undefined (then *options stays empty and every
// option takes its default). A key outside known_keys is a TypeError: a
// misspelt option ("drect") would otherwise be silently ignored.
bool ReadOptions(const Napi::CallbackInfo& info, size_t index,
                 const char* signature,
                 std::initializer_list<const char*> known_keys,
                 Napi::Object* options);

// options[key] as a boolean; undefined (or no options object) gives false.
bool ReadBoolOption(Napi::Env env, const Napi::Object& options, const char* key,
                    const char* signature, bool* value);

// object[key] as an integer number in [min, max]. A missing key is a
// TypeError unless *value_present is given (then it reports whether the key
// was there, and *value keeps its default).
bool ReadUintProperty(Napi::Env env, const Napi::Object& object, const char* key,
                      const char* signature, uint64_t min, uint64_t max, uint64_t* value,
                      bool* value_present = nullptr);

// object[key] as a boolean; undefined is a TypeError.
bool ReadBoolProperty(Napi::Env env, const Napi::Object& object, const char* key,
                      const char* signature, bool* value);

// object[key] as a bigint that fits 64 bits unsigned.
bool ReadUint64BigIntProperty(Napi::Env env, const Napi::Object& object, const char* key,
                              const char* signature, uint64_t* value);

// info[index] as a plain object (not null, an array or a function).
bool ReadObject(const Napi::CallbackInfo& info, size_t index, const char* signature,
                const char* name, Napi::Object* object);

// The five arguments of a call that moves a range between two files
// (cloneRange, copyRange): (dest_fd, dest_offset_bytes, src_fd,
// src_offset_bytes, length_bytes), each checked as ReadFd / ReadSafeUint do.
struct FileRangeArgs {
  int dest_fd = -1;
  uint64_t dest_offset_bytes = 0;
  int src_fd = -1;
  uint64_t src_offset_bytes = 0;
  uint64_t length_bytes = 0;
};
bool ReadFileRangeArgs(const Napi::CallbackInfo& info, const char* signature, FileRangeArgs* args);

}  // namespace ublksnap

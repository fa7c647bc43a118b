// The addon's parts, one per concern; each adds its functions and constants
// to the module's exports. addon.cc calls them once per Node environment
// (the main thread and every worker thread that loads the addon), so none
// of them may keep per-environment state in globals.
#pragma once

#include <napi.h>

namespace ublksnap {

// layout-test.cc: ringPushForTest, ringPopForTest (the cross-language ring test).
void InitLayoutTest(Napi::Env env, Napi::Object exports);

// errors.cc: errnoName.
void InitErrors(Napi::Env env, Napi::Object exports);

// files.cc: fallocate, fdatasync, fileInfo, duplicateFd, FALLOC_FL_* constants.
void InitFiles(Napi::Env env, Napi::Object exports);

// clone.cc: cloneRange (FICLONERANGE).
void InitClone(Napi::Env env, Napi::Object exports);

// copy-range.cc: copyRange (copy_file_range).
void InitCopyRange(Napi::Env env, Napi::Object exports);

// populate.cc: populateFileRange (MADV_POPULATE_WRITE on a shared mapping).
void InitPopulate(Napi::Env env, Napi::Object exports);

// open.cc: openExclusive, openTmpfile.
void InitOpen(Napi::Env env, Napi::Object exports);

// fiemap.cc: fileExtents, FIEMAP_EXTENT_* constants.
void InitFiemap(Napi::Env env, Napi::Object exports);

// blockdev.cc: blockDeviceInfo.
void InitBlockDevice(Napi::Env env, Napi::Object exports);

// lease.cc: setLease, getLease, F_RDLCK / F_WRLCK / F_UNLCK.
void InitLease(Napi::Env env, Napi::Object exports);

// memory.cc: alignedOffset, bufferAddress.
void InitMemory(Napi::Env env, Napi::Object exports);

// thread.cc: setThreadNice, setIoFlusher.
void InitThread(Napi::Env env, Napi::Object exports);

// freeze.cc: freezeFilesystem, thawFilesystem (Promises).
void InitFreeze(Napi::Env env, Napi::Object exports);

// ublk-control.cc: the ublk control commands (Promises), ublk constants.
void InitUblkControl(Napi::Env env, Napi::Object exports);

// ublk-queue.cc: the UblkQueue class and the request record layout.
void InitUblkQueue(Napi::Env env, Napi::Object exports);

}  // namespace ublksnap

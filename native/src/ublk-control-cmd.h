// One ublk control command, run to completion on the calling thread
// (a libuv thread-pool thread): open /dev/ublk-control, a small SQE128
// io_uring, one URING_CMD SQE, and a wait for its CQE under a deadline.
//
// No Node-API here: ublk-control.cc turns the outcome into a Promise.
#pragma once

#include <cstdint>
#include <string>

#include "ublk-uapi.h"

namespace ublksnap {

// What a command reads or fills, besides its inline arguments. Heap-owned by
// the caller: when a command times out it may still complete in the kernel
// later and write here, so the caller then leaks this block on purpose.
struct ControlBuffers {
  uapi::DevInfo info;       // ADD_DEV (in/out), GET_DEV_INFO (out)
  uapi::Params params;      // SET_PARAMS (in)
  uint64_t features = 0;    // GET_FEATURES (out)
};

enum class ControlCommand {
  kGetFeatures,
  kAddDevice,
  kGetDeviceInfo,
  kSetParams,
  kStartDevice,
  kStopDevice,
  kDeleteDevice,
  kStartUserRecovery,
  kEndUserRecovery,
};

struct ControlRequest {
  ControlCommand command;
  uint32_t dev_id = uapi::kAnyDeviceId;
  uint32_t timeout_ms = 0;
};

// The result: error 0 on success; else an errno with the failed step
// ("open", "io_uring_setup", "io_uring_enter", or the command's name for a
// CQE error) and, for the cases a caller must read in words, a message.
struct ControlOutcome {
  int error = 0;
  std::string syscall;
  std::string message;   // empty: "<syscall>: <strerror>" is used
  bool timed_out = false;
};

// The command's name as the kernel documentation spells it ("ADD_DEV").
const char* ControlCommandName(ControlCommand command);

// The text used when /dev/ublk-control cannot be found.
extern const char* const kUblkUnavailableMessage;

// Runs the command; buffers must outlive it (see ControlBuffers).
ControlOutcome RunControlCommand(const ControlRequest& request, ControlBuffers* buffers);

// Whether /dev/ublk-control opens; 0 or the errno of open.
int ProbeControlDevice();

// True once a control command found that this kernel takes only the legacy
// opcodes; queues then send legacy I/O opcodes too.
bool ControlUsesLegacyOpcodes();

// The message for an open failure of /dev/ublk-control.
std::string UnavailableMessage(int error_number);

}  // namespace ublksnap

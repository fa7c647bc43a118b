// One ublk control command, run to completion. See ublk-control-cmd.h.
//
// Opcode encoding: kernels 6.4+ take ioctl-style opcodes (_IOWR('u', nr,
// 32)); 6.0-6.3 only the legacy ones (nr alone), and 6.4+ only if built with
// BLKDEV_UBLK_LEGACY_OPCODES. We send the ioctl form first and fall back to
// legacy when the kernel does not know the opcode, then remember which one
// the kernel took. That memory is process-wide on purpose: it describes the
// running kernel, not a Node environment.
#include "ublk-control-cmd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "ublk-ring.h"

namespace ublksnap {

const char* const kUblkUnavailableMessage =
    "ublk is not available: /dev/ublk-control is missing (load the module: modprobe ublk_drv; "
    "needs Linux >= 6.0 built with CONFIG_BLK_DEV_UBLK)";

namespace {

// A control ring carries one command at a time; 4 is io_uring's habit for tiny rings.
constexpr unsigned kControlRingEntries = 4;
// After ADD_DEV: how long /dev/ublkcN may take to appear and to stop being
// busy (udev opens it to read its properties), and how often to look.
constexpr int64_t kCharDeviceWaitMs = 5000;
constexpr useconds_t kCharDevicePollUs = 10 * 1000;
constexpr int64_t kNsPerMs = 1000 * 1000;
constexpr int64_t kNsPerSecond = 1000 * kNsPerMs;

enum class Encoding : int { kUnknown, kIoctl, kLegacy };
std::atomic<Encoding> g_encoding{Encoding::kUnknown};

struct CommandShape {
  uapi::ControlCommandNumber number;
  bool reads_only;  // _IOR rather than _IOWR in the ioctl form
  const char* name;
};

CommandShape ShapeOf(ControlCommand command) {
  switch (command) {
    case ControlCommand::kGetFeatures: return {uapi::kCmdGetFeatures, true, "GET_FEATURES"};
    case ControlCommand::kAddDevice: return {uapi::kCmdAddDev, false, "ADD_DEV"};
    case ControlCommand::kGetDeviceInfo: return {uapi::kCmdGetDevInfo, true, "GET_DEV_INFO"};
    case ControlCommand::kSetParams: return {uapi::kCmdSetParams, false, "SET_PARAMS"};
    case ControlCommand::kStartDevice: return {uapi::kCmdStartDev, false, "START_DEV"};
    case ControlCommand::kStopDevice: return {uapi::kCmdStopDev, false, "STOP_DEV"};
    case ControlCommand::kDeleteDevice: return {uapi::kCmdDelDev, false, "DEL_DEV"};
    case ControlCommand::kStartUserRecovery: return {uapi::kCmdStartUserRecovery, false, "START_USER_RECOVERY"};
    case ControlCommand::kEndUserRecovery: return {uapi::kCmdEndUserRecovery, false, "END_USER_RECOVERY"};
  }
  return {uapi::kCmdGetDevInfo, true, "UNKNOWN"};
}

uint32_t Opcode(const CommandShape& shape, Encoding encoding) {
  if (encoding == Encoding::kLegacy) return shape.number;
  return shape.reads_only ? uapi::IoctlReadOpcode(shape.number) : uapi::IoctlReadWriteOpcode(shape.number);
}

int64_t MonotonicNs() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * kNsPerSecond + now.tv_nsec;
}

// The buffer address, length and inline data[0] of a command.
void FillPayload(ControlCommand command, ControlBuffers* buffers, uapi::CtrlCmd* cmd) {
  switch (command) {
    case ControlCommand::kGetFeatures:
      cmd->addr = reinterpret_cast<uintptr_t>(&buffers->features);
      cmd->len = sizeof buffers->features;
      break;
    case ControlCommand::kAddDevice:
    case ControlCommand::kGetDeviceInfo:
      cmd->addr = reinterpret_cast<uintptr_t>(&buffers->info);
      cmd->len = sizeof buffers->info;
      break;
    case ControlCommand::kSetParams:
      cmd->addr = reinterpret_cast<uintptr_t>(&buffers->params);
      cmd->len = uapi::kParamsSetBytes;
      break;
    case ControlCommand::kStartDevice:
    case ControlCommand::kEndUserRecovery:
      // The kernel checks that the server's pid is the one that added the device.
      cmd->data[0] = static_cast<uint64_t>(getpid());
      break;
    case ControlCommand::kStopDevice:
    case ControlCommand::kDeleteDevice:
    case ControlCommand::kStartUserRecovery:
      break;
  }
}

ControlOutcome Failure(int error_number, const std::string& syscall, const std::string& message = "") {
  ControlOutcome outcome;
  outcome.error = error_number;
  outcome.syscall = syscall;
  outcome.message = message;
  return outcome;
}

// Waits for the one CQE until deadline_ns; on success *result = cqe->res.
ControlOutcome WaitCqe(IoRing* ring, int64_t deadline_ns, const char* name, uint32_t timeout_ms,
                       int* result) {
  for (;;) {
    const io_uring_cqe* cqe = ring->PeekCqe();
    if (cqe != nullptr) {
      *result = cqe->res;
      ring->CqAdvance();
      return ControlOutcome();
    }
    int64_t remaining_ns = deadline_ns - MonotonicNs();
    if (remaining_ns <= 0) {
      ControlOutcome outcome = Failure(ETIMEDOUT, name, std::string("ublk ") + name + " timed out after " +
                                                            std::to_string(timeout_ms) + " ms");
      outcome.timed_out = true;
      return outcome;
    }
    __kernel_timespec timeout = {remaining_ns / kNsPerSecond, remaining_ns % kNsPerSecond};
    io_uring_getevents_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.ts = reinterpret_cast<uintptr_t>(&timeout);
    int entered = ring->Enter(0, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg);
    if (entered >= 0) continue;
    if (entered == -ETIME) continue;  // the wait timed out: the loop checks the deadline
    if (entered == -EINTR) continue;  // a signal: wait again for what is left
    return Failure(-entered, "io_uring_enter");
  }
}

// Submits one command with the given opcode and waits for its CQE.
ControlOutcome SubmitOne(int control_fd, uint32_t opcode, const ControlRequest& request,
                         ControlBuffers* buffers, int64_t deadline_ns, int* result) {
  IoRing ring;
  int error = ring.Setup(kControlRingEntries, IORING_SETUP_SQE128);
  if (error != 0) return Failure(error, "io_uring_setup");
  // Every ublk kernel's io_uring has EXT_ARG (5.11); without it there is no bounded wait.
  if (!ring.has_ext_arg()) return Failure(ENOSYS, "io_uring_enter");
  io_uring_sqe* sqe = ring.NextSqe();
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = control_fd;
  sqe->cmd_op = opcode;
  auto* cmd = reinterpret_cast<uapi::CtrlCmd*>(&sqe->addr3);
  cmd->dev_id = request.dev_id;
  cmd->queue_id = uapi::kNoQueueId;
  FillPayload(request.command, buffers, cmd);
  ring.Publish();
  int submitted = 0;
  do {
    submitted = ring.Enter(1, 0, 0);
  } while (submitted == -EINTR);  // interrupted before submitting: submit again
  if (submitted < 0) return Failure(-submitted, "io_uring_enter");
  const char* name = ShapeOf(request.command).name;
  return WaitCqe(&ring, deadline_ns, name, request.timeout_ms, result);
  // ~IoRing closes the ring; after a timeout the kernel cancels the command.
}

// Whether a CQE error may mean "this opcode encoding is unknown here".
bool MayBeUnknownOpcode(int result) {
  return result == -EINVAL || result == -EOPNOTSUPP || result == -ENOTTY;
}

// Opens /dev/ublkcN once ADD_DEV made it, retrying while it is missing or busy.
ControlOutcome WaitCharDevice(uint32_t dev_id) {
  std::string path = std::string(uapi::kCharDevicePrefix) + std::to_string(dev_id);
  int64_t deadline_ns = MonotonicNs() + kCharDeviceWaitMs * kNsPerMs;
  for (;;) {
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      close(fd);
      return ControlOutcome();
    }
    int error = errno;
    // ENOENT: devtmpfs/udev has not made the node yet; EBUSY: udev has it open.
    bool transient = error == ENOENT || error == EBUSY || error == EINTR;
    if (!transient) return Failure(error, "open", "open " + path + ": " + strerror(error));
    if (MonotonicNs() >= deadline_ns) {
      ControlOutcome outcome = Failure(ETIMEDOUT, "open", "ublk ADD_DEV: " + path + " did not become openable within " +
                                                              std::to_string(kCharDeviceWaitMs) + " ms (device " +
                                                              std::to_string(dev_id) + " was added)");
      outcome.timed_out = true;
      return outcome;
    }
    usleep(kCharDevicePollUs);
  }
}

ControlOutcome CommandFailed(const char* name, int result, uint32_t dev_id) {
  std::string subject = dev_id == uapi::kAnyDeviceId ? "" : " (device " + std::to_string(dev_id) + ")";
  return Failure(-result, name, std::string("ublk ") + name + subject + ": " + strerror(-result));
}

// Runs the command, choosing the opcode encoding as described at the top.
ControlOutcome RunWithEncoding(int control_fd, const ControlRequest& request, ControlBuffers* buffers) {
  CommandShape shape = ShapeOf(request.command);
  int64_t deadline_ns = MonotonicNs() + static_cast<int64_t>(request.timeout_ms) * kNsPerMs;
  Encoding known = g_encoding.load(std::memory_order_relaxed);
  // GET_FEATURES has no legacy form.
  Encoding first = (known == Encoding::kLegacy && request.command != ControlCommand::kGetFeatures)
                       ? Encoding::kLegacy : Encoding::kIoctl;
  uapi::DevInfo info_sent = buffers->info;
  int result = 0;
  ControlOutcome outcome = SubmitOne(control_fd, Opcode(shape, first), request, buffers, deadline_ns, &result);
  if (outcome.error != 0) return outcome;
  bool retry = known == Encoding::kUnknown && first == Encoding::kIoctl &&
               request.command != ControlCommand::kGetFeatures && MayBeUnknownOpcode(result);
  Encoding used = first;
  if (retry) {
    buffers->info = info_sent;  // a failed command may have left it half-written
    int legacy_result = 0;
    outcome = SubmitOne(control_fd, Opcode(shape, Encoding::kLegacy), request, buffers, deadline_ns, &legacy_result);
    if (outcome.error != 0) return outcome;
    // The legacy form unknown too: the first error is the real one.
    if (legacy_result != -EOPNOTSUPP) {
      result = legacy_result;
      used = Encoding::kLegacy;
    }
  }
  if (result < 0) return CommandFailed(shape.name, result, request.dev_id);
  if (request.command == ControlCommand::kAddDevice) {
    bool ioctl_ok = (buffers->info.flags & uapi::kFlagCmdIoctlEncode) != 0;
    g_encoding.store(ioctl_ok ? Encoding::kIoctl : Encoding::kLegacy, std::memory_order_relaxed);
  } else if (known == Encoding::kUnknown) {
    g_encoding.store(used, std::memory_order_relaxed);
  }
  return outcome;
}

}  // namespace

const char* ControlCommandName(ControlCommand command) { return ShapeOf(command).name; }

bool ControlUsesLegacyOpcodes() { return g_encoding.load(std::memory_order_relaxed) == Encoding::kLegacy; }

std::string UnavailableMessage(int error_number) {
  // ENOENT: no node; ENODEV/ENXIO: a node without its driver.
  if (error_number == ENOENT || error_number == ENODEV || error_number == ENXIO) return kUblkUnavailableMessage;
  return std::string("ublk is not available: cannot open ") + uapi::kControlPath + ": " + strerror(error_number);
}

int ProbeControlDevice() {
  int fd = open(uapi::kControlPath, O_RDWR | O_CLOEXEC);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}

ControlOutcome RunControlCommand(const ControlRequest& request, ControlBuffers* buffers) {
  int control_fd = open(uapi::kControlPath, O_RDWR | O_CLOEXEC);
  if (control_fd < 0) {
    int error = errno;
    return Failure(error, "open", UnavailableMessage(error));
  }
  ControlOutcome outcome = RunWithEncoding(control_fd, request, buffers);
  close(control_fd);
  if (outcome.error == 0 && request.command == ControlCommand::kAddDevice) {
    outcome = WaitCharDevice(buffers->info.dev_id);
  }
  return outcome;
}

}  // namespace ublksnap

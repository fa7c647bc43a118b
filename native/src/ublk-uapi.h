// The ublk driver's user-space interface, as far as ublksnap uses it.
//
// Why our own copy: the build host's <linux/ublk_cmd.h> is the 6.1 one
// (legacy opcodes only, no GET_FEATURES, no ioctl encoding), while the
// kernels we serve are 6.4 and newer. The layouts below are written from the
// documented structure layouts (Documentation/block/ublk.rst and the UAPI's
// field lists); the static_asserts pin every size and the offsets the kernel
// reads, so a mistake fails the build instead of corrupting a command.
#pragma once

#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace ublksnap {
namespace uapi {

// ── devices and memory ──────────────────────────────────────────────────

constexpr const char* kControlPath = "/dev/ublk-control";
constexpr const char* kCharDevicePrefix = "/dev/ublkc";
constexpr const char* kBlockDevicePrefix = "/dev/ublkb";

// The most tags a queue may have; the descriptor area of each queue is sized
// for this many, whatever the device's depth.
constexpr uint32_t kMaxQueueDepth = 4096;
// The most queues a device may have.
constexpr uint32_t kMaxQueueCount = 4096;
// The mmap offset of queue 0's descriptor array on /dev/ublkcN.
constexpr uint64_t kDescriptorMmapOffsetBytes = 0;
// Sector size of every ublk length and position.
constexpr uint32_t kSectorShift = 9;

// ── control commands (on /dev/ublk-control, 128-byte SQEs) ──────────────

// The command numbers (the "nr" of the ioctl form; the whole opcode in the
// legacy form).
enum ControlCommandNumber : uint8_t {
  kCmdGetQueueAffinity = 0x01,
  kCmdGetDevInfo = 0x02,
  kCmdAddDev = 0x04,
  kCmdDelDev = 0x05,
  kCmdStartDev = 0x06,
  kCmdStopDev = 0x07,
  kCmdSetParams = 0x08,
  kCmdGetParams = 0x09,
  kCmdStartUserRecovery = 0x10,
  kCmdEndUserRecovery = 0x11,
  kCmdGetDevInfo2 = 0x12,
  kCmdGetFeatures = 0x13,  // ioctl form only (6.5+)
};

// The payload of a control SQE, at byte 48 (sqe->addr3 onwards).
struct CtrlCmd {
  uint32_t dev_id;
  uint16_t queue_id;       // 0xffff: not a queue command
  uint16_t len;            // bytes at addr
  uint64_t addr;           // user buffer the command reads or fills
  uint64_t data[1];        // inline argument (START_DEV: the server pid)
  uint16_t dev_path_len;   // unprivileged devices only; 0 here
  uint16_t pad;
  uint32_t reserved;
};
static_assert(sizeof(CtrlCmd) == 32, "ublksrv_ctrl_cmd is 32 bytes");
static_assert(offsetof(CtrlCmd, addr) == 8, "ctrl_cmd.addr at 8");
static_assert(offsetof(CtrlCmd, data) == 16, "ctrl_cmd.data at 16");
static_assert(offsetof(CtrlCmd, dev_path_len) == 24, "ctrl_cmd.dev_path_len at 24");

constexpr uint16_t kNoQueueId = 0xffff;
constexpr uint32_t kAnyDeviceId = 0xffffffffu;

// ioctl-style opcodes: _IOR/_IOWR('u', nr, struct ublksrv_ctrl_cmd).
constexpr uint32_t kIoctlTypeUblk = 'u';
constexpr uint32_t IoctlReadOpcode(uint8_t nr) { return _IOR(kIoctlTypeUblk, nr, CtrlCmd); }
constexpr uint32_t IoctlReadWriteOpcode(uint8_t nr) { return _IOWR(kIoctlTypeUblk, nr, CtrlCmd); }
static_assert(IoctlReadWriteOpcode(kCmdAddDev) == 0xC0207504u, "UBLK_U_CMD_ADD_DEV");

// Device description: filled by us for ADD_DEV, by the kernel for GET_DEV_INFO.
struct DevInfo {
  uint16_t nr_hw_queues;
  uint16_t queue_depth;
  uint16_t state;           // kStateDead / kStateLive / kStateQuiesced
  uint16_t pad0;
  uint32_t max_io_buf_bytes;
  uint32_t dev_id;
  int32_t ublksrv_pid;
  uint32_t pad1;
  uint64_t flags;           // UBLK_F_*: requested, then negotiated
  uint64_t ublksrv_flags;   // the server's own, stored by the kernel
  uint32_t owner_uid;
  uint32_t owner_gid;
  uint64_t reserved1;
  uint64_t reserved2;
};
static_assert(sizeof(DevInfo) == 64, "ublksrv_ctrl_dev_info is 64 bytes");
static_assert(offsetof(DevInfo, max_io_buf_bytes) == 8, "dev_info.max_io_buf_bytes at 8");
static_assert(offsetof(DevInfo, dev_id) == 12, "dev_info.dev_id at 12");
static_assert(offsetof(DevInfo, ublksrv_pid) == 16, "dev_info.ublksrv_pid at 16");
static_assert(offsetof(DevInfo, flags) == 24, "dev_info.flags at 24");
static_assert(offsetof(DevInfo, owner_uid) == 40, "dev_info.owner_uid at 40");

// Device states (DevInfo.state).
constexpr uint16_t kStateDead = 0;
constexpr uint16_t kStateLive = 1;
constexpr uint16_t kStateQuiesced = 2;

// Feature flags (DevInfo.flags, GET_FEATURES).
constexpr uint64_t kFlagSupportZeroCopy = uint64_t{1} << 0;
constexpr uint64_t kFlagUringCmdCompInTask = uint64_t{1} << 1;
constexpr uint64_t kFlagNeedGetData = uint64_t{1} << 2;
constexpr uint64_t kFlagUserRecovery = uint64_t{1} << 3;
constexpr uint64_t kFlagUserRecoveryReissue = uint64_t{1} << 4;
constexpr uint64_t kFlagUnprivilegedDev = uint64_t{1} << 5;
constexpr uint64_t kFlagCmdIoctlEncode = uint64_t{1} << 6;
constexpr uint64_t kFlagUserCopy = uint64_t{1} << 7;

// ── parameters (SET_PARAMS / GET_PARAMS) ────────────────────────────────

constexpr uint32_t kAttrReadOnly = 1u << 0;
constexpr uint32_t kAttrRotational = 1u << 1;
constexpr uint32_t kAttrVolatileCache = 1u << 2;
constexpr uint32_t kAttrFua = 1u << 3;

struct ParamBasic {
  uint32_t attrs;
  uint8_t logical_bs_shift;
  uint8_t physical_bs_shift;
  uint8_t io_opt_shift;
  uint8_t io_min_shift;
  uint32_t max_sectors;
  uint32_t chunk_sectors;
  uint64_t dev_sectors;
  uint64_t virt_boundary_mask;
};
static_assert(sizeof(ParamBasic) == 32, "ublk_param_basic is 32 bytes");
static_assert(offsetof(ParamBasic, max_sectors) == 8, "basic.max_sectors at 8");
static_assert(offsetof(ParamBasic, dev_sectors) == 16, "basic.dev_sectors at 16");

struct ParamDiscard {
  uint32_t discard_alignment;
  uint32_t discard_granularity;
  uint32_t max_discard_sectors;
  uint32_t max_write_zeroes_sectors;
  uint16_t max_discard_segments;
  uint16_t reserved0;
};
static_assert(sizeof(ParamDiscard) == 20, "ublk_param_discard is 20 bytes");

// Read-only, filled by the kernel (6.3+).
struct ParamDevt {
  uint32_t char_major;
  uint32_t char_minor;
  uint32_t disk_major;
  uint32_t disk_minor;
};
static_assert(sizeof(ParamDevt) == 16, "ublk_param_devt is 16 bytes");

constexpr uint32_t kParamTypeBasic = 1u << 0;
constexpr uint32_t kParamTypeDiscard = 1u << 1;
constexpr uint32_t kParamTypeDevt = 1u << 2;

// The head of ublk_params; later kernels append more parts (zoned, dma,
// segment), which the kernel zero-fills when `len` stops before them.
struct Params {
  uint32_t len;    // bytes of this struct the kernel reads or writes
  uint32_t types;  // kParamType* bits: which parts are meant
  ParamBasic basic;
  ParamDiscard discard;
  ParamDevt devt;
};
static_assert(offsetof(Params, basic) == 8, "params.basic at 8");
static_assert(offsetof(Params, discard) == 40, "params.discard at 40");
static_assert(offsetof(Params, devt) == 60, "params.devt at 60");
static_assert(sizeof(Params) == 80, "our ublk_params head is 80 bytes (76 + tail padding)");
// What SET_PARAMS sends: basic and discard, the parts every ublk kernel
// (6.0+) knows; a longer len than the kernel's struct is EINVAL there.
constexpr uint32_t kParamsSetBytes = offsetof(Params, devt);
static_assert(kParamsSetBytes == 60, "basic + discard end at 60");

// ── I/O commands (on /dev/ublkcN, 64-byte SQEs) ─────────────────────────

enum IoCommandNumber : uint8_t {
  kIoFetchReq = 0x20,
  kIoCommitAndFetchReq = 0x21,
  kIoNeedGetData = 0x22,
};

// The payload of an I/O SQE, at byte 48: fits a 64-byte SQE exactly.
struct IoCmd {
  uint16_t q_id;
  uint16_t tag;
  int32_t result;   // COMMIT: bytes done, 0, or -errno
  uint64_t addr;    // the tag's data buffer (copy mode)
};
static_assert(sizeof(IoCmd) == 16, "ublksrv_io_cmd is 16 bytes");
static_assert(offsetof(IoCmd, result) == 4, "io_cmd.result at 4");
static_assert(offsetof(IoCmd, addr) == 8, "io_cmd.addr at 8");

constexpr uint32_t IoctlIoOpcode(uint8_t nr) { return _IOWR(kIoctlTypeUblk, nr, IoCmd); }

// CQE results of FETCH / COMMIT_AND_FETCH.
constexpr int32_t kIoResOk = 0;           // a request waits in its descriptor
constexpr int32_t kIoResNeedGetData = 1;  // only with kFlagNeedGetData
// kIoResAbort is -ENODEV: the device is stopping; do not fetch again.

// The per-tag request descriptor the kernel writes into the mmapped array.
struct IoDesc {
  uint32_t op_flags;     // bits 0-7 op, bits 8-31 flags
  uint32_t nr_sectors;   // (nr_zones for zone reports)
  uint64_t start_sector;
  uint64_t addr;         // the buffer the server gave
};
static_assert(sizeof(IoDesc) == 24, "ublksrv_io_desc is 24 bytes");
static_assert(offsetof(IoDesc, start_sector) == 8, "io_desc.start_sector at 8");

constexpr uint32_t kIoOpMask = 0xff;
constexpr uint32_t kIoOpRead = 0;
constexpr uint32_t kIoOpWrite = 1;
constexpr uint32_t kIoOpFlush = 2;
constexpr uint32_t kIoOpDiscard = 3;
constexpr uint32_t kIoOpWriteSame = 4;
constexpr uint32_t kIoOpWriteZeroes = 5;
constexpr uint32_t kIoFlagFua = 1u << 13;
constexpr uint32_t kIoFlagNoUnmap = 1u << 15;

}  // namespace uapi
}  // namespace ublksnap

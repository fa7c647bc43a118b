// The typed face of the C++ addon (native/src): the system calls Node does
// not offer — fallocate, fdatasync, block-device geometry, exclusive opens,
// O_TMPFILE — and aligned views of shared memory for O_DIRECT.
//
// Design notes
// - Every function is synchronous. The callers are worker threads whose job
//   is to wait for the disk; an async wrapper would add a thread hop.
// - The functions are the addon's own, re-exported without a JavaScript
//   wrapper, so the per-request path (fallocate, fdatasync) costs one
//   Node-API call and allocates nothing. The addon validates every argument
//   itself: a bad one is a TypeError, never a crash.
// - A failed system call throws a NativeError: `code` is the errno name
//   ('ENOSPC', 'EBUSY', ...), `errno` the positive number, `syscall` the
//   call, `path` the path when the call took one.
// - Node 20's Node-API cannot read a SharedArrayBuffer's address, only a
//   view's; alignedOffset and bufferAddress here accept either buffer kind
//   and hand the addon a Uint8Array over a SharedArrayBuffer (once, at
//   set-up time — never call them per request).

import { types } from 'node:util';
import { loadAddon } from './addon';

/**
 * The O_DIRECT memory alignment that fits every device we drive. The kernel
 * asks for the device's DMA alignment (512 bytes for most, 4 for NVMe);
 * 4 KiB also keeps a view on whole pages and matches the largest logical
 * block, which file offsets and lengths must be multiples of. Costs at most
 * this many bytes of slack per aligned view.
 */
export const DIRECT_IO_ALIGNMENT_BYTES = 4096;

/** A failed system call, as thrown by every function of this module. */
export interface NativeError extends Error {
  /** The errno name: 'ENOENT', 'EBUSY', 'EWOULDBLOCK', ...; 'E<number>' if unnamed. */
  code: string;
  /** The errno number, positive as in errno.h (Node's own fs errors use negative numbers). */
  errno: number;
  /** The system call that failed: 'open', 'flock', 'fallocate', 'ioctl', ... */
  syscall: string;
  /** The path the call took, when it took one. */
  path?: string;
}

/** True when error came from a failed system call of this module (or looks like one). */
export function isNativeError(error: unknown): error is NativeError {
  if (!(error instanceof Error)) return false;
  const fields = error as Partial<NativeError>;
  return typeof fields.code === 'string' && typeof fields.errno === 'number' && typeof fields.syscall === 'string';
}

/** The geometry of a block device (see blockDeviceInfo). */
export interface BlockDeviceInfo {
  /** The device size (BLKGETSIZE64). */
  size_bytes: number;
  /** The smallest addressable unit; O_DIRECT offsets and lengths must be multiples of it (BLKSSZGET). */
  logical_block_bytes: number;
  /** The unit written without read-modify-write (BLKPBSZGET). */
  physical_block_bytes: number;
  /** The preferred minimum request (BLKIOMIN). */
  min_io_bytes: number;
  /** The preferred request size, 0 when the device reports none (BLKIOOPT). */
  opt_io_bytes: number;
  /** Whether the device accepts discards (sysfs queue/discard_max_bytes > 0). */
  discard_supported: boolean;
}

/** What an fd refers to: a regular file, a block device, or anything else. */
export type FileKind = 'file' | 'block' | 'other';

/** fstat of an fd, reduced to what the engine compares (see fileInfo). */
export interface FileInfo {
  kind: FileKind;
  /** st_size; 0 for a block device (use blockDeviceInfo for its size). */
  size_bytes: number;
  /** The device holding the file system the file lives on (st_dev). */
  dev_major: number;
  dev_minor: number;
  /** The device a device node stands for (st_rdev); 0:0 for a regular file. */
  rdev_major: number;
  rdev_minor: number;
  /** The inode number; a bigint because some file systems use all 64 bits. */
  ino: bigint;
  /** st_blksize: the filesystem block for regular files, the unit a range clone aligns to. */
  block_bytes: number;
}

export interface OpenExclusiveOptions {
  /** Open read-write (O_RDWR) rather than read-only. */
  write: boolean;
  /** Open with O_DIRECT: buffers, offsets and lengths must be block-aligned (see alignedView). */
  direct: boolean;
}

export interface OpenTmpfileOptions {
  /** Open with O_DIRECT. Default false. */
  direct?: boolean;
}

/** One extent of a file's data on the device under its file system (FS_IOC_FIEMAP). */
export interface FileExtent {
  /** Where the extent begins in the file. */
  logical_bytes: number;
  /** Where it begins on the device holding the file system (st_dev). */
  physical_bytes: number;
  length_bytes: number;
  /** FIEMAP_EXTENT_* bits: LAST, UNKNOWN, DELALLOC, DATA_INLINE, NOT_ALIGNED, ... */
  flags: number;
}

/** The addon as it loads: the same functions, with views in place of SharedArrayBuffers. */
interface Binding {
  FALLOC_FL_KEEP_SIZE: number;
  FALLOC_FL_PUNCH_HOLE: number;
  FALLOC_FL_ZERO_RANGE: number;
  fallocate(fd: number, offset_bytes: number, length_bytes: number, mode: number): void;
  fdatasync(fd: number): void;
  seekData(fd: number, offset_bytes: number): number;
  populateFileRange(fd: number, offset_bytes: number, length_bytes: number): void;
  blockDeviceInfo(fd: number): BlockDeviceInfo;
  fileInfo(fd: number): FileInfo;
  cloneRange(dest_fd: number, dest_offset_bytes: number, src_fd: number, src_offset_bytes: number, length_bytes: number): void;
  copyRange(dest_fd: number, dest_offset_bytes: number, src_fd: number, src_offset_bytes: number, length_bytes: number): number;
  duplicateFd(fd: number): number;
  socketPair(): [number, number];
  setThreadName(name: string): void;
  setThreadNice(nice: number): void;
  openExclusive(path: string, options: OpenExclusiveOptions): number;
  openTmpfile(dir_path: string, options?: OpenTmpfileOptions): number;
  alignedOffset(buffer: ArrayBuffer | ArrayBufferView, alignment_bytes: number): number;
  bufferAddress(buffer: ArrayBuffer | ArrayBufferView): bigint;
  errnoName(errno: number): string;
  freezeFilesystem(mount_point: string): Promise<void>;
  fileExtents(fd: number): FileExtent[];
  FIEMAP_EXTENT_UNKNOWN: number;
  FIEMAP_EXTENT_DELALLOC: number;
  FIEMAP_EXTENT_DATA_INLINE: number;
  FIEMAP_EXTENT_NOT_ALIGNED: number;
  thawFilesystem(mount_point: string): Promise<void>;
  setLease(fd: number, type: number): void;
  getLease(fd: number): number;
  F_RDLCK: number;
  F_WRLCK: number;
  F_UNLCK: number;
}

const binding = loadAddon<Binding>();

/** fallocate mode: allocate without changing the file size. */
export const FALLOC_FL_KEEP_SIZE: number = binding.FALLOC_FL_KEEP_SIZE;
/** fallocate mode: deallocate the range (reads back zeros); must be combined with KEEP_SIZE. */
export const FALLOC_FL_PUNCH_HOLE: number = binding.FALLOC_FL_PUNCH_HOLE;
/** fallocate mode: zero the range, keeping (or making) it allocated. */
export const FALLOC_FL_ZERO_RANGE: number = binding.FALLOC_FL_ZERO_RANGE;

/**
 * fallocate(2). mode 0 allocates and extends the file; otherwise a
 * combination of the FALLOC_FL_* constants. Offsets and lengths are safe
 * non-negative integers (they may exceed 2^32). Throws a NativeError
 * (ENOSPC, EOPNOTSUPP, EBADF, EINVAL for a zero length, ...).
 */
export const fallocate: (fd: number, offset_bytes: number, length_bytes: number, mode: number) => void =
  binding.fallocate;

/**
 * The name of a positive errno number ('ENOSPC'), or 'E<number>' when the
 * addon's table does not know it: the same table that names the `code` of
 * every NativeError, for numbers that arrive without a name.
 */
export const errnoName: (errno: number) => string = binding.errnoName;

/** fdatasync(2): makes the fd's written data durable. */
export const fdatasync: (fd: number) => void = binding.fdatasync;

/**
 * lseek(2) SEEK_DATA: the offset of the first written data at or after
 * offset_bytes, or -1 when only a hole follows. On tmpfs a page that was
 * fallocated but never written is a hole.
 */
export const seekData: (fd: number, offset_bytes: number) => number = binding.seekData;

/**
 * Makes [offset, offset + length) of a shared-memory file real memory
 * without changing its bytes (mmap, MADV_POPULATE_WRITE, munmap): a page
 * never written is cleared, one already written is left as it is. The
 * offset must be a multiple of the page size. Throws a NativeError: EINVAL
 * on a kernel before 5.14, EFAULT for a range past the end of the file.
 */
export const populateFileRange: (fd: number, offset_bytes: number, length_bytes: number) => void = binding.populateFileRange;

/**
 * The geometry of the block device open on fd. Throws a NativeError with
 * code 'ENOTBLK' when fd is not a block device.
 */
export const blockDeviceInfo: (fd: number) => BlockDeviceInfo = binding.blockDeviceInfo;

/**
 * The extents of the file open on fd, in file order, by FS_IOC_FIEMAP with
 * FIEMAP_FLAG_SYNC (dirty data is written back first, so a delayed
 * allocation has its place). Holes are absent. Throws a NativeError:
 * EOPNOTSUPP where the file system has no FIEMAP (tmpfs), E2BIG for a file
 * in more than 2^20 extents.
 */
export const fileExtents: (fd: number) => FileExtent[] = binding.fileExtents;
/** Extent flags: the place is not known yet (UNKNOWN, DELALLOC) or not a whole block of its own (DATA_INLINE, NOT_ALIGNED). */
export const FIEMAP_EXTENT_UNKNOWN: number = binding.FIEMAP_EXTENT_UNKNOWN;
export const FIEMAP_EXTENT_DELALLOC: number = binding.FIEMAP_EXTENT_DELALLOC;
export const FIEMAP_EXTENT_DATA_INLINE: number = binding.FIEMAP_EXTENT_DATA_INLINE;
export const FIEMAP_EXTENT_NOT_ALIGNED: number = binding.FIEMAP_EXTENT_NOT_ALIGNED;

/** fstat(2) of fd: its kind, size, st_dev, st_rdev, inode and block size. */
export const fileInfo: (fd: number) => FileInfo = binding.fileInfo;

/**
 * ioctl(dest_fd, FICLONERANGE): [dest_offset, +length) of dest_fd shares the
 * extents of [src_offset, +length) of src_fd. Offsets and length must be
 * multiples of the filesystem block, except a range that ends at the
 * source's end of file. Throws a NativeError with syscall 'ioctl': EINVAL
 * (alignment), EOPNOTSUPP (no shared extents), EXDEV (two filesystems),
 * EBADF, ENOSPC, EIO.
 */
export const cloneRange: (dest_fd: number, dest_offset_bytes: number, src_fd: number, src_offset_bytes: number,
  length_bytes: number) => void = binding.cloneRange;

/**
 * copy_file_range(2) of [src_offset, +length) of src_fd to dest_offset of
 * dest_fd, inside the kernel, looping over short copies. Returns the bytes
 * copied: fewer than length only where the source ended. Throws a
 * NativeError with syscall 'copy_file_range': EINVAL (a block device, or
 * overlapping ranges of one file), EXDEV (two filesystems that cannot copy
 * between them), ENOSYS or EOPNOTSUPP (no such call), EBADF, ENOSPC, EIO.
 */
export const copyRange: (dest_fd: number, dest_offset_bytes: number, src_fd: number, src_offset_bytes: number,
  length_bytes: number) => number = binding.copyRange;

/**
 * Names the calling thread (its comm: at most 15 bytes), as top -H, ps -L,
 * perf and /proc/PID/task/TID/comm show it.
 */
export const setThreadName: (name: string) => void = binding.setThreadName;

/**
 * setpriority(2) for the calling thread only: a nice value in [0, 19]
 * (raising it needs no privilege; lowering it back does).
 */
export const setThreadNice: (nice: number) => void = binding.setThreadNice;

/** fcntl(fd, F_DUPFD_CLOEXEC): a second descriptor of the same open file; the caller closes it. */
export const duplicateFd: (fd: number) => number = binding.duplicateFd;

/** A file lease's type, as F_GETLEASE reports it ('none' = F_UNLCK). */
export type LeaseType = 'read' | 'write' | 'none';
const LEASE_CODES: Readonly<Record<LeaseType, number>> = { read: binding.F_RDLCK, write: binding.F_WRLCK, none: binding.F_UNLCK };

/**
 * fcntl(fd, F_SETLEASE): take ('write', 'read') or give up ('none') a
 * lease on the open file. The kernel signals the process (SIGIO, whose
 * default action ends it) when another open breaks the lease: listen for
 * SIGIO before taking one. Throws EAGAIN (code 'EAGAIN') while another
 * descriptor has the file open, EINVAL on what cannot be leased (a block
 * device, some network filesystems).
 */
export function setLease(fd: number, type: LeaseType): void {
  binding.setLease(fd, LEASE_CODES[type]);
}

/**
 * fcntl(fd, F_GETLEASE): the lease held, or, while a break is pending, the
 * type it must fall to ('read' for an opener that reads, 'none' for one
 * that writes or truncates).
 */
export function getLease(fd: number): LeaseType {
  const code = binding.getLease(fd);
  if (code === binding.F_WRLCK) return 'write';
  if (code === binding.F_RDLCK) return 'read';
  return 'none';
}
/** socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC): two connected descriptors; the caller closes both. */
export const socketPair: () => [number, number] = binding.socketPair;

/**
 * FIFREEZE on the filesystem mounted at mount_point, on the thread pool:
 * it writes the dirty data back first. Rejects with EBUSY when it is frozen
 * already, EOPNOTSUPP when the filesystem cannot freeze.
 */
export const freezeFilesystem: (mount_point: string) => Promise<void> = binding.freezeFilesystem;
/** FITHAW: the filesystem takes writes again. Rejects with EINVAL when it was not frozen. */
export const thawFilesystem: (mount_point: string) => Promise<void> = binding.thawFilesystem;

/**
 * Opens a volume so that no one else writes it behind our back; the claim
 * ends with fs.closeSync(fd). Always O_CLOEXEC. A volume is a block device
 * or a regular file: a directory fails 'EISDIR', anything else (a FIFO, a
 * character device) 'ENOTBLK', both with syscall 'open'.
 * - A block device is opened O_EXCL: a second exclusive open, or a device
 *   that is mounted or held, fails with code 'EBUSY'.
 * - Anything else is opened and locked with flock(LOCK_EX | LOCK_NB): a
 *   second openExclusive of the same file fails with code 'EWOULDBLOCK'
 *   (syscall 'flock'; errno 11, the same number as EAGAIN). The lock is
 *   advisory: it excludes other ublksnap opens, not every writer.
 */
export const openExclusive: (path: string, options: OpenExclusiveOptions) => number = binding.openExclusive;

/**
 * Opens an unnamed file in dir_path (O_TMPFILE | O_RDWR | O_EXCL, mode
 * 0600): it vanishes with its last fd, even after a crash, and can never be
 * linked into the directory. Throws code 'EOPNOTSUPP' where the file system
 * has no O_TMPFILE.
 */
export const openTmpfile: (dir_path: string, options?: OpenTmpfileOptions) => number = binding.openTmpfile;

/** The addon sees a SharedArrayBuffer only through a view (see the notes at the top). */
export function visibleToAddon(buffer: ArrayBuffer | SharedArrayBuffer): ArrayBuffer | Uint8Array {
  // util.types, not instanceof: a buffer may come from another realm. Any
  // other value goes through as is, for the addon to refuse with a TypeError.
  return types.isSharedArrayBuffer(buffer) ? new Uint8Array(buffer) : buffer;
}

/**
 * The smallest byte offset into buffer at which the address is a multiple
 * of alignment_bytes (a power of two, else TypeError). May exceed the
 * buffer's length for a small buffer; alignedView checks the fit.
 */
export function alignedOffset(buffer: ArrayBuffer | SharedArrayBuffer, alignment_bytes: number): number {
  // The addon counts its arguments; so does its wrapper.
  if (arguments.length !== 2) throw new TypeError(`alignedOffset(buffer, alignment_bytes): expects 2 argument(s), got ${arguments.length}`);
  return binding.alignedOffset(visibleToAddon(buffer), alignment_bytes);
}

/** The address of buffer's first byte, for tests and diagnostics. */
export function bufferAddress(buffer: ArrayBuffer | SharedArrayBuffer): bigint {
  if (arguments.length !== 1) throw new TypeError(`bufferAddress(buffer): expects 1 argument(s), got ${arguments.length}`);
  return binding.bufferAddress(visibleToAddon(buffer));
}

/**
 * A view of byte_length bytes of buffer starting at its first
 * alignment_bytes-aligned byte: what fs.readSync / fs.writeSync on an
 * O_DIRECT fd need. The caller allocates byte_length + alignment_bytes so it
 * always fits; a buffer too small is a RangeError. Call at set-up time: the
 * offset never changes, because a backing store never moves.
 */
export function alignedView(
  buffer: ArrayBuffer | SharedArrayBuffer,
  byte_length: number,
  alignment_bytes: number = DIRECT_IO_ALIGNMENT_BYTES,
): Uint8Array {
  if (!Number.isSafeInteger(byte_length) || byte_length < 0) {
    throw new TypeError(`alignedView: byte_length must be a safe non-negative integer, got ${String(byte_length)}`);
  }
  const offset_bytes = alignedOffset(buffer, alignment_bytes);
  if (offset_bytes + byte_length > buffer.byteLength) {
    throw new RangeError(
      `alignedView: ${byte_length} bytes aligned to ${alignment_bytes} need up to ${byte_length + alignment_bytes - 1} bytes, ` +
      `the buffer has ${buffer.byteLength} (offset ${offset_bytes})`);
  }
  return new Uint8Array(buffer, offset_bytes, byte_length);
}

// The face of a frontend to the contract suite: a driver opens an export
// (a volume NAME or an image NAME@ID) as a BlockTarget, through the real
// frontend, so one scenario runs unchanged through every frontend.
//
//   scenario ──► FrontendDriver.open(name) ──► BlockTarget ──► frontend ──► engine
//       └──────────── control (attach, take, destroy, events) ──────────► engine
//
// The scenario drives the control plane itself (an Engine in this process,
// started by harness.ts with fault injection on); a driver only adds its
// frontend on top of that engine and opens targets through it.
//
// Adding a frontend: a DriverFactory whose unavailable() says why it cannot
// run here (a missing tool, no kernel support) and whose start() brings the
// frontend up on the given engine; list it in drivers/index.ts. Every
// scenario then runs through it as "<scenario> via <name>".
//
// A ublk driver (later) runs where ublk exists, i.e. inside the Linux guest
// (shared/UBLK-VM.md): unavailable() checks /dev/ublk-control, the ublk_drv
// module and root; start() starts the ublk frontend on the engine; open()
// adds a ublk device for the export (one per export, removed at close())
// and opens /dev/ublkbN with O_DIRECT | O_RDWR through the native addon
// (openExclusive with direct: true), so no page cache hides what the
// engine did. O_DIRECT needs buffers, offsets and lengths aligned to the
// device's logical block (512 or 4096): read() and write() then go through
// an aligned bounce buffer (native alignedOffset) and refuse unaligned
// ranges with EINVAL, and the scenarios keep their I/O sector-aligned as
// they do now. Errors come back from pread/pwrite as errno (EIO after a
// destroy or an overflow); flush() is fdatasync; writes that race a destroy
// may also see the device go away (ENODEV), which the scenarios accept.

import type { Engine } from '../../../src/engine/engine';
import type { BlockTarget } from '../../lib/block-target';

export type { BlockTarget } from '../../lib/block-target';
export { BlockIoError, ERRNO, errnoOf } from '../../lib/block-target';

export interface FrontendDriver {
  readonly name: string;
  /** Opens an export through the frontend; each call is its own connection (or queue, or device). */
  open(export_name: string): Promise<BlockTarget>;
  /** Closes every target still open, then stops the frontend. */
  close(): Promise<void>;
}

export interface DriverFactory {
  readonly name: string;
  /** null when this driver can run here, else the reason it cannot (the scenario is skipped, loudly). */
  unavailable(): string | null;
  /** Brings the frontend up on `engine`; scratch files go into scratch_dir. */
  start(engine: Engine, scratch_dir: string): Promise<FrontendDriver>;
}

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
// The ublk driver (ublk.ts) runs where ublk exists, i.e. inside the Linux
// guest (README "Tests in a ublk guest"), through test/guest/contract-ublk.guest.ts:
// unavailable() checks root, loads ublk_drv and probes /dev/ublk-control;
// start() starts the ublk frontend on the engine; open() publishes a device
// for the export (one per export, deleted when its last target closes) and
// opens /dev/ublkbN with O_DIRECT | O_RDWR through the native addon, so no
// page cache hides what the engine did. Errors come back from pread/pwrite
// as errno (EIO after a destroy or an overflow); flush() is fdatasync;
// writes that race a destroy may also see the device go away (ENODEV),
// which the scenarios accept.
//
// A driver that cannot run here is skipped with its reason. In CI that is
// a failure, unless the driver names where its scenarios run instead
// (covered_by: a guest program the guest suite runs, which CI never skips).
// UBLKSNAP_CONTRACT_DRIVERS=a,b restricts the run to those drivers, and
// then an unavailable one fails instead of skipping (drivers/index.ts).

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

/** Why a driver cannot run here, and where its scenarios run instead. */
export interface Unavailability {
  reason: string;
  /** Where these scenarios do run (a guest program), or null: then CI must not skip them. */
  covered_by: string | null;
}

export interface DriverFactory {
  readonly name: string;
  /** null when this driver can run here, else why not (the scenario is skipped, loudly, or fails; see above). */
  unavailable(): Unavailability | null;
  /** Brings the frontend up on `engine`; scratch files go into scratch_dir. */
  start(engine: Engine, scratch_dir: string): Promise<FrontendDriver>;
}

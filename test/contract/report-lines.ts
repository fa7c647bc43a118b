// What a contract scenario file prints for a program that runs it (the ublk
// guest program, test/guest/contract-ublk.guest.ts), and the variable that
// picks its drivers. Kept apart from the harness and the drivers so that
// reader loads neither the engine nor the addon.

/** UBLKSNAP_CONTRACT_DRIVERS=a,b: run those drivers only; an unavailable one then fails (drivers/index.ts). */
export const DRIVER_SELECTION_ENV = 'UBLKSNAP_CONTRACT_DRIVERS';

/**
 * The harness prints, when a scenario ends: this prefix, `pass` or `fail`,
 * the milliseconds it took (set-up and clean-up included), and its name.
 */
export const SCENARIO_RESULT_PREFIX = 'contract-scenario ';

/** The ublk driver prints, at close: this prefix and its UblkDriverStats as JSON. */
export const UBLK_DRIVER_STATS_PREFIX = 'ublk-driver-stats ';

/** What the ublk driver did through the kernel during one scenario. */
export interface UblkDriverStats {
  /** Devices published and opened with O_DIRECT (one per export opened). */
  devices_opened: number;
  reads: number;
  writes: number;
  flushes: number;
  /** Requests that failed (any errno; some scenarios expect failures). */
  failed: number;
  bytes_read: number;
  bytes_written: number;
  /** Time spent creating and opening devices, and deleting them (ADD_DEV … START_DEV, STOP_DEV … DEL_DEV). */
  publish_ms: number;
  unpublish_ms: number;
}

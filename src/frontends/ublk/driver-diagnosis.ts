// Why ublk is not available, in words that say what to do. The addon's
// probe only knows that /dev/ublk-control did not open (ENOENT); the
// kernel's module tree tells the cases apart:
//
//   /sys/module/ublk_drv present     → the driver runs, the node is missing (no devtmpfs on /dev?)
//   ublk_drv.ko in modules.dep       → installed, not loaded: modprobe ublk_drv
//   neither                          → this kernel has no ublk: another kernel, or NBD
//
// Any other probe failure (EACCES: not root) keeps the addon's reason.

import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Where the running kernel's modules and their index live. */
const MODULES_ROOT = '/lib/modules';
const LOADED_MODULE_DIR = '/sys/module/ublk_drv';
/** The module's file name as modules.dep lists it (possibly compressed: .ko.xz, .ko.zst). */
const MODULE_FILE_PATTERN = /(^|\/)ublk_drv\.ko(\.\w+)?:/m;

/** Whether the running kernel has ublk_drv installed as a module (it may not be loaded). */
function moduleInstalled(release: string): boolean {
  try {
    return MODULE_FILE_PATTERN.test(readFileSync(path.join(MODULES_ROOT, release, 'modules.dep'), 'utf8'));
  } catch {
    // ENOENT: no module index for this kernel (a container, a custom kernel): not installed that we can see.
    return false;
  }
}

/** The reason to report for an unavailable ublk, given the probe's code and reason. */
export function ublkUnavailableReason(code: string, probe_reason: string): string {
  if (code !== 'ENOENT') return probe_reason;
  const release = os.release();
  if (existsSync(LOADED_MODULE_DIR)) {
    return 'ublk is not available: ublk_drv is loaded but /dev/ublk-control is missing (is devtmpfs mounted on /dev?)';
  }
  if (moduleInstalled(release)) {
    return 'ublk is not available: the ublk_drv module is installed but not loaded (load it as root: modprobe ublk_drv)';
  }
  return `ublk is not available: this kernel (${release}) has no ublk_drv, neither loaded nor installed under ` +
    `${path.join(MODULES_ROOT, release)}; ublk needs Linux >= 6.0 built with CONFIG_BLK_DEV_UBLK. Serve volumes over NBD (--nbd) instead`;
}

// ublk devices nothing serves: left by a daemon that crashed and whose
// state dir is gone (or by any ublk server that died), quiesced with their
// holders' I/O waiting, or dead. `ublksnap cleanup` deletes them.
//
// A device counts as left behind when this daemon does not serve it and
// its server process (the pid the kernel recorded) is gone. A device whose
// server still runs belongs to someone else — another daemon, another ublk
// server — and is never touched. (A recycled pid makes a dead server look
// alive: the device is then left alone, the safe side.)

import { existsSync, readdirSync } from 'node:fs';
import { processExited } from '../../shared/process-state';
import { ublkGetDeviceInfo, UBLK_S_DEV_DEAD, UBLK_S_DEV_LIVE, UBLK_S_DEV_QUIESCED } from '../../native/ublk';
import type { DeviceRecords } from './device-records';
import { deleteDevice, UBLK_CONTROL_TIMEOUT_MS } from './device';

/** Where the kernel lists ublk devices (one ublkcN each); /dev as the fallback. */
const UBLK_CHAR_CLASS_DIR = '/sys/class/ublk-char';
const CHAR_DEVICE_NAME = /^ublkc(\d+)$/;

const STATE_NAMES: Record<number, string> = {
  [UBLK_S_DEV_DEAD]: 'dead', [UBLK_S_DEV_LIVE]: 'live', [UBLK_S_DEV_QUIESCED]: 'quiesced',
};

/** The ids of every ublk device the kernel has now. */
export function listDeviceIds(): number[] {
  const dir = existsSync(UBLK_CHAR_CLASS_DIR) ? UBLK_CHAR_CLASS_DIR : '/dev';
  return readdirSync(dir).flatMap((entry) => {
    const match = CHAR_DEVICE_NAME.exec(entry);
    return match === null ? [] : [Number(match[1])];
  }).sort((a, b) => a - b);
}

/**
 * Deletes (or, dry_run, lists) every device not in `served` whose server is
 * gone; one phrase per device, saying what was done.
 */
export async function findLeftovers(served: ReadonlySet<number>, records: DeviceRecords, dry_run: boolean): Promise<string[]> {
  const phrases: string[] = [];
  for (const dev_id of listDeviceIds()) {
    if (served.has(dev_id)) continue;
    let info;
    try {
      info = await ublkGetDeviceInfo(dev_id, UBLK_CONTROL_TIMEOUT_MS);
    } catch {
      continue; // deleted meanwhile
    }
    if (!processExited(info.server_pid)) continue;
    const what = `/dev/ublkb${dev_id} (${STATE_NAMES[info.state] ?? `state ${info.state}`}, server pid ${info.server_pid} gone)`;
    if (dry_run) {
      phrases.push(`${what}: would be deleted`);
      continue;
    }
    await deleteDevice(dev_id, records);
    phrases.push(`${what}: deleted`);
  }
  return phrases;
}

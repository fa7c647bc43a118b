// Freezing the filesystems mounted on devices before a take, as blksnap's
// take does: FIFREEZE writes their dirty data back and blocks new writes,
// so the image holds a clean filesystem without the user running fsfreeze.
//
//   freezeMounted(devices) ─► per filesystem: FIFREEZE (thread pool), bounded
//   take
//   thaw()                 ─► FITHAW each, in reverse order
//
// A freeze that does not return within FREEZE_TIMEOUT_MS fails the take:
// what was frozen is thawed, and the late freeze is thawed as soon as it
// finishes, so no filesystem stays frozen behind our back.

import { freezeFilesystem, thawFilesystem } from '../../native';
import { UblksnapError, fromSystemError } from '../../shared/errors';
import { mountsOf } from './holders';

/** The longest one FIFREEZE may take (it writes back the dirty data first). */
export const FREEZE_TIMEOUT_MS = 30_000;

export interface FreezeLog {
  warn(fields: object, message: string): void;
}

/** Freezes every filesystem mounted on these devices; resolves with the thaw. */
export async function freezeMounted(devices: string[], log: FreezeLog): Promise<() => Promise<void>> {
  const frozen: string[] = [];
  const thaw = async (): Promise<void> => {
    for (const mount_point of frozen.splice(0).reverse()) {
      await thawFilesystem(mount_point).catch((error: unknown) => {
        log.warn({ mount_point, err: (error as Error).message }, 'thaw after take failed');
      });
    }
  };
  try {
    for (const device of devices) {
      // One mount point per filesystem: bind mounts share the superblock.
      const mount = mountsOf(device)[0];
      if (mount === undefined) continue;
      await freezeBounded(mount.mount_point, device, log);
      frozen.push(mount.mount_point);
    }
  } catch (error) {
    await thaw();
    throw error;
  }
  return thaw;
}

async function freezeBounded(mount_point: string, device: string, log: FreezeLog): Promise<void> {
  let timed_out = false;
  let timer: NodeJS.Timeout | undefined;
  const freezing = freezeFilesystem(mount_point);
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timed_out = true;
      reject(new UblksnapError('ETIMEDOUT', `freezing ${mount_point} (on ${device}) took more than ${FREEZE_TIMEOUT_MS} ms: take refused`));
    }, FREEZE_TIMEOUT_MS);
  });
  // A freeze that finishes after we gave up must not stay frozen.
  freezing.then(() => {
    if (timed_out) void thawFilesystem(mount_point).catch(() => undefined);
  }, () => undefined);
  try {
    await Promise.race([freezing, deadline]);
  } catch (error) {
    if (timed_out) throw error;
    // EOPNOTSUPP: this filesystem cannot freeze; the image is then crash-consistent, as without ublk.
    if ((error as { code?: string }).code === 'EOPNOTSUPP') {
      log.warn({ mount_point, device }, 'filesystem cannot freeze: its image is crash-consistent only');
      return;
    }
    throw fromSystemError(error, `freezing ${mount_point} (on ${device})`);
  } finally {
    clearTimeout(timer);
  }
}

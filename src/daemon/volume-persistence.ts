// What of the volumes outlives the daemon (issue 12, items 1-2): the record
// of attached volumes (attached-volumes.ts) and each volume's change
// tracking (cbt-store.ts), kept in the state directory.
//
//   start   config volumes ─► attach (below)          clean stop (daemon.ts)
//           frontends start                           frontends stopped: no I/O
//           recorded volumes ─► attach, publish        exportAll: maps copied
//           each failure: logged, in restore_errors    engine stopped: files closed
//                                                      saveClean: evidence + map
//   attach  read the volume's file ─► decide:          (a failed step anywhere:
//             clean + evidence equal → continue map     nothing saved, the
//             anything else → new generation, reason    in_use marks stay)
//           write in_use (durably) ─► engine.attach
//
// The in_use mark is written before engine.attach, because the NBD frontend
// serves every attached volume at once: from the moment the engine has the
// volume, a write may land, and a crash after it must not leave a clean
// mark behind. A failed attach writes `lost`: whoever held the volume (or
// wherever it went) may have written it.

import path from 'node:path';
import type { Logger } from 'pino';
import type { AttachOptions, EngineControl, SavedCbt, VolumeInfo } from '../engine/api';
import type { FrontendKind } from '../frontends/frontend';
import { UblksnapError } from '../shared/errors';
import { AttachedVolumes, type RecordedVolume } from './attached-volumes';
import { CBT_DIR_NAME, cbtFileOf, readSaved, removeCbtFile, writeClean, writeInUse, writeLost } from './cbt-store';
import { ensurePrivateDir } from './paths';
import { collectEvidence, evidenceDiffers } from './volume-evidence';

/** The reason of a volume attached for the first time (the engine's default too). */
const FIRST_ATTACH_REASON = 'first attach';
const UNCLEAN_REASON = 'unclean stop: the daemon did not stop cleanly (killed or crashed) while the volume was attached';
const MISSING_REASON = 'state missing: no change tracking was saved for this volume';

/** A recorded volume that did not come back whole at start. */
export interface RestoreError {
  path: string;
  name: string;
  frontends: FrontendKind[];
  /** The errno name of the failure. */
  code: string;
  error: string;
}

export interface SavedVolume {
  path: string;
  saved: SavedCbt;
}

function describeError(error: unknown): { code: string; message: string } {
  if (error instanceof UblksnapError) return { code: error.code, message: error.message };
  return { code: (error as NodeJS.ErrnoException).code ?? 'EIO', message: (error as Error).message };
}

export class VolumePersistence {
  readonly attached: AttachedVolumes;
  private readonly restore_errors = new Map<string, RestoreError>();

  constructor(private readonly state_dir: string, private readonly logger: Logger) {
    this.attached = new AttachedVolumes(state_dir);
  }

  /** Creates the CBT directory and reads the record of attached volumes (a bad one is logged and set aside). */
  open(): void {
    ensurePrivateDir(path.join(this.state_dir, CBT_DIR_NAME));
    const problem = this.attached.load();
    if (problem !== null) {
      this.logger.error({ file: this.attached.file }, problem);
      this.restore_errors.set(this.attached.file, { path: this.attached.file, name: '', frontends: [], code: 'EINVAL', error: problem });
    }
  }

  /**
   * Attaches volume_path through the engine with its saved change tracking
   * when that can be trusted. expect_saved: the volume was attached before
   * this start (config or record), so no saved state is worth saying.
   */
  async attach(engine: EngineControl, volume_path: string, options: { name?: string; expect_saved: boolean }): Promise<VolumeInfo> {
    const resolved = path.resolve(volume_path);
    const attach_options: AttachOptions = options.name !== undefined ? { name: options.name } : {};
    // Already attached: the engine refuses (EALREADY) and this volume's file must not change.
    if (engine.volumes().some((volume) => volume.path === resolved)) return engine.attach(resolved, attach_options);
    const file = cbtFileOf(this.state_dir, resolved);
    const decision = this.decide(file, resolved, options.expect_saved);
    if (decision.cbt) attach_options.cbt = decision.cbt;
    else attach_options.new_generation_reason = decision.reason;
    writeInUse(file, resolved);
    let volume: VolumeInfo;
    try {
      volume = await engine.attach(resolved, attach_options);
    } catch (error) {
      const { code, message } = describeError(error);
      writeLost(file, resolved, `the volume could not be attached (${code}: ${message}), so it may have been written elsewhere`);
      throw error;
    }
    const cbt = engine.cbtInfo(volume.name);
    if (decision.cbt && cbt.generation_id === decision.cbt.state.generation_id) {
      this.logger.info({ volume: volume.name, generation_id: cbt.generation_id, changes_number: cbt.changes_number }, 'change tracking continued from the clean stop');
    } else if (cbt.generation_reason === FIRST_ATTACH_REASON) {
      this.logger.info({ volume: volume.name, generation_id: cbt.generation_id }, 'change tracking started');
    } else {
      this.logger.warn({ volume: volume.name, generation_id: cbt.generation_id, reason: cbt.generation_reason },
        `change tracking starts a new generation: ${cbt.generation_reason}`);
    }
    this.restore_errors.delete(resolved);
    return volume;
  }

  /** Either a saved map to continue, or why a new generation begins. */
  private decide(file: string, volume_path: string, expect_saved: boolean): { cbt?: SavedCbt; reason: string } {
    const saved = readSaved(file, volume_path);
    switch (saved.status) {
      case 'missing': return { reason: expect_saved ? MISSING_REASON : FIRST_ATTACH_REASON };
      case 'in_use': return { reason: UNCLEAN_REASON };
      case 'lost': return { reason: saved.reason };
      case 'unreadable':
        this.logger.error({ volume: volume_path, file }, `saved change tracking is unreadable: ${saved.problem}`);
        return { reason: `saved change tracking unreadable (${saved.problem})` };
      case 'clean': {
        let moved: string | null;
        try {
          moved = evidenceDiffers(saved.evidence, collectEvidence(volume_path, { flush: false }));
        } catch (error) {
          // ENOENT and the like: the engine's attach says it better; no proof here anyway.
          moved = `cannot check the volume (${describeError(error).message})`;
        }
        return moved === null ? { cbt: saved.cbt, reason: saved.cbt.generation_reason } : { reason: moved };
      }
    }
  }

  /** Volumes recorded but not attached now (the config attached none of them). */
  toRestore(engine: EngineControl): readonly RecordedVolume[] {
    const attached = new Set(engine.volumes().map((volume) => volume.path));
    return this.attached.list().filter((volume) => !attached.has(volume.path));
  }

  noteRestoreError(volume: RecordedVolume, error: unknown): void {
    const { code, message } = describeError(error);
    this.restore_errors.set(volume.path, { ...volume, code, error: message });
    this.logger.error({ volume: volume.name, path: volume.path, frontends: volume.frontends, code }, `recorded volume not restored: ${message}`);
  }

  restoreErrors(): RestoreError[] {
    return [...this.restore_errors.values()];
  }

  /** attach over IPC succeeded: attach it again at the next start. */
  recordAttached(volume: RecordedVolume): void {
    this.attached.record(volume);
  }

  /** detach: neither the record nor the saved change tracking outlive it. */
  forget(volume_path: string): void {
    this.attached.forget(volume_path);
    removeCbtFile(cbtFileOf(this.state_dir, volume_path));
    this.restore_errors.delete(volume_path);
  }

  /** Copies every volume's change tracking. Call after the frontends stopped and before the engine stops. */
  exportAll(engine: EngineControl): SavedVolume[] {
    return engine.volumes().map((volume) => ({ path: volume.path, saved: engine.exportCbt(volume.name) }));
  }

  /**
   * Writes each volume's map with the clean mark and the evidence of the
   * volume as it is now. Call after the engine stopped (volumes closed, no
   * write to come). A volume whose evidence cannot be read keeps its
   * in_use mark: the next start begins a new generation, as it must.
   */
  saveClean(volumes: readonly SavedVolume[]): boolean {
    let all_saved = true;
    for (const { path: volume_path, saved } of volumes) {
      try {
        writeClean(cbtFileOf(this.state_dir, volume_path), volume_path, saved, collectEvidence(volume_path, { flush: true }));
      } catch (error) {
        all_saved = false;
        this.logger.error({ path: volume_path, err: describeError(error).message }, 'change tracking not saved; the next start begins a new generation');
      }
    }
    if (volumes.length > 0) this.logger.info({ volumes: volumes.length, all_saved }, 'change tracking saved');
    return all_saved;
  }
}

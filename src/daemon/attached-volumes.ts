// The record of volumes attached over IPC, so a restarted daemon attaches
// them again: <state dir>/volumes.json, rewritten durably (state-store.ts)
// on every attach and detach.
//
//   { "format": "ublksnap-volumes", "version": 1,
//     "volumes": [ { "path": "/dev/vdb", "name": "vdb", "frontends": ["nbd", "ublk"] }, … ] }
//
// Volumes from the config file are not recorded: the config attaches them.
// A record that cannot be read is moved aside (volumes.json.corrupt), said
// so loudly, and the daemon starts with none: refusing to start would keep
// every volume down for the sake of one bad file.

import { renameSync } from 'node:fs';
import path from 'node:path';
import type { FrontendKind } from '../frontends/frontend';
import { PATH_LENGTH_MAX, VOLUME_NAME_LENGTH_MAX, VOLUME_NAME_PATTERN } from '../ipc/methods';
import { array, integer, object, oneOf, string, validate } from '../ipc/schema';
import { readStateFile, writeFileDurably } from '../shared/state-file';

export const VOLUMES_FILE_NAME = 'volumes.json';
const FORMAT = 'ublksnap-volumes';
const FORMAT_VERSION = 1;
/** As many as the engine can attach (VOLUME_INDEX_LIMIT is far below). */
const RECORDED_VOLUMES_MAX = 4096;
/** A recorded volume is a few hundred bytes at most. */
const VOLUMES_FILE_BYTES_MAX = RECORDED_VOLUMES_MAX * (PATH_LENGTH_MAX + 256);
const FRONTEND_KINDS = ['nbd', 'ublk'] as const satisfies readonly FrontendKind[];

export interface RecordedVolume {
  path: string;
  name: string;
  frontends: FrontendKind[];
}

const FILE_SCHEMA = object({
  format: oneOf([FORMAT] as const),
  version: integer(FORMAT_VERSION, FORMAT_VERSION),
  volumes: array(object({
    path: string(PATH_LENGTH_MAX),
    name: string(VOLUME_NAME_LENGTH_MAX, { pattern: VOLUME_NAME_PATTERN, pattern_name: 'a volume name' }),
    frontends: array(oneOf(FRONTEND_KINDS), FRONTEND_KINDS.length),
  }), RECORDED_VOLUMES_MAX),
});

export class AttachedVolumes {
  private volumes: RecordedVolume[] = [];
  readonly file: string;

  constructor(state_dir: string) {
    this.file = path.join(state_dir, VOLUMES_FILE_NAME);
  }

  /**
   * Reads the record. Returns null, or the problem with an unreadable
   * record, which was moved aside to `<file>.corrupt`.
   */
  load(): string | null {
    let problem: string;
    try {
      const content = readStateFile(this.file, VOLUMES_FILE_BYTES_MAX);
      if (content === null) return null;
      const parsed = validate(FILE_SCHEMA, JSON.parse(content.toString('utf8')), VOLUMES_FILE_NAME);
      if (parsed.volumes.some((volume) => !path.isAbsolute(volume.path))) throw new Error('a recorded path is relative');
      this.volumes = parsed.volumes.map((volume) => ({ path: volume.path, name: volume.name, frontends: [...volume.frontends] as FrontendKind[] }));
      return null;
    } catch (error) {
      problem = (error as Error).message;
    }
    const aside = `${this.file}.corrupt`;
    renameSync(this.file, aside);
    return `${this.file} is unreadable (${problem}); moved to ${aside}, no recorded volume is attached`;
  }

  list(): readonly RecordedVolume[] {
    return this.volumes;
  }

  find(reference: string): RecordedVolume | undefined {
    return this.volumes.find((volume) => volume.path === reference || volume.name === reference);
  }

  /** Adds or replaces the entry of volume.path, durably. */
  record(volume: RecordedVolume): void {
    this.volumes = [...this.volumes.filter((entry) => entry.path !== volume.path), { ...volume, frontends: [...volume.frontends] }];
    this.save();
  }

  /** Removes the entry of volume_path, durably; true when there was one. */
  forget(volume_path: string): boolean {
    const kept = this.volumes.filter((entry) => entry.path !== volume_path);
    if (kept.length === this.volumes.length) return false;
    this.volumes = kept;
    this.save();
    return true;
  }

  private save(): void {
    writeFileDurably(this.file, [Buffer.from(`${JSON.stringify({ format: FORMAT, version: FORMAT_VERSION, volumes: this.volumes }, null, 2)}\n`)]);
  }
}

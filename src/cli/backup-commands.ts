// The backup commands: `backup`, `restore`, `verify` (docs/backup.md). Each
// parses its options here and runs the matching module of src/backup;
// progress goes to stderr on a terminal, the summary to stdout as
// key=value lines or, with -j, one JSON object.

import { UblksnapError } from '../shared/errors';
import { GiB } from '../shared/units';
import { runBackup, type VolumeBackupSummary } from '../backup/backup-run';
import { runRestore } from '../backup/restore';
import { badError, badLine, runVerify } from '../backup/verify';
import type { Command, CommandContext } from './command';
import { TransferProgress, jsonLine, keyValueInline, keyValueLines } from './output';
import { deviceArgument, parseInteger, parseNbdExportUri, parseSize, pathArgument, storagePathArgument } from './values';

/** The difference storage limit when -l is not given: room for 1 GiB of overwrites while the copy runs. */
export const BACKUP_LIMIT_BYTES_DEFAULT = 1 * GiB;
/** Sequence numbers are 6 digits in file names; beyond that they still work, just unpadded. */
const SEQ_MAX = Number.MAX_SAFE_INTEGER;
/** Signals that interrupt a backup: it then destroys its snapshot and exits non-zero. */
const INTERRUPTING_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function value(context: CommandContext, name: string): string | undefined {
  const raw = context.values[name];
  if (typeof raw === 'string') return raw;
  if (Array.isArray(raw) && raw.length > 0) return raw[raw.length - 1];
  return undefined;
}

function requiredValue(context: CommandContext, name: string, flag: string): string {
  const found = value(context, name);
  if (found === undefined) throw new UblksnapError('EINVAL', `${flag} is required (see 'ublksnap ${context.command} --help')`);
  return found;
}

function pointOf(context: CommandContext): number | undefined {
  const text = value(context, 'point');
  return text === undefined ? undefined : parseInteger(text, '--point', SEQ_MAX);
}

/** Runs work with an AbortSignal that the first SIGINT/SIGTERM/SIGHUP fires; a second one exits at once. */
async function interruptible<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const handler = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
    controller.abort();
  };
  for (const signal of INTERRUPTING_SIGNALS) process.on(signal, handler);
  try {
    return await work(controller.signal);
  } finally {
    for (const signal of INTERRUPTING_SIGNALS) process.off(signal, handler);
  }
}

function volumeRow(volume: VolumeBackupSummary): Record<string, string | number | null> {
  return {
    volume: volume.volume, kind: volume.kind, base_seq: volume.base_seq, copied_bytes: volume.copied_bytes,
    written_bytes: volume.written_bytes, data_file: volume.data_file, reason: volume.full_reason,
  };
}

const DIR_OPTION = { name: 'dir', type: 'string', value_name: 'DIR', help: 'the backup directory' } as const;
const POINT_OPTION = { name: 'point', type: 'string', value_name: 'SEQ', help: 'a backup number (default: the newest complete one)' } as const;

export const BACKUP_COMMANDS: readonly Command[] = [
  {
    name: 'backup',
    summary: 'Back up volumes into a directory: full the first time, then incremental (CBT).',
    usage: '-d PATH|NAME… --dir DIR [-f FILE|DIR|BLOCKDEV] [-l LIMIT] [--full] [--max-rate RATE]',
    options: [
      { name: 'device', short: 'd', type: 'string', multiple: true, multitoken: true, value_name: 'PATH|NAME', help: 'volumes to back up together (one snapshot); repeatable' },
      DIR_OPTION,
      { name: 'file', short: 'f', type: 'string', value_name: 'FILE|DIR|BLOCKDEV', help: "the snapshot's difference storage (default: DIR, an unnamed temporary file in it)" },
      { name: 'limit', short: 'l', type: 'string', value_name: 'LIMIT', help: 'the most the difference storage may grow to (default 1G)' },
      { name: 'full', type: 'boolean', help: 'a full backup even when an incremental is possible' },
      { name: 'max-rate', type: 'string', value_name: 'RATE', help: 'read at most RATE bytes per second (K, M, G suffixes)' },
    ],
    details: 'Prints: seq=, snapshot_id=, copied_bytes=, elapsed_ms=, bytes_per_s=, then one line per volume:\n'
      + 'volume= kind=full|incremental base_seq= copied_bytes= written_bytes= data_file= reason= (why full).\n'
      + 'Ctrl-C destroys the snapshot and leaves the backup incomplete (never a base). See docs/backup.md.',
    run: async (context) => {
      const devices = (Array.isArray(context.values.device) ? context.values.device : []).map((device) => deviceArgument(device));
      if (devices.length === 0) throw new UblksnapError('EINVAL', "-d is required: the volumes to back up (see 'ublksnap backup --help')");
      const dir = pathArgument(requiredValue(context, 'dir', '--dir'), '--dir');
      // As snapshot_create's -f: a trailing '/' asks for a directory.
      const storage = storagePathArgument(value(context, 'file') ?? dir, '-f');
      const limit_text = value(context, 'limit');
      const limit_bytes = limit_text === undefined ? BACKUP_LIMIT_BYTES_DEFAULT : parseSize(limit_text, '-l');
      const rate_text = value(context, 'max-rate');
      const rate_bytes_per_s = rate_text === undefined ? 0 : parseSize(rate_text, '--max-rate');
      const progress = new TransferProgress('backup', context.stderr, context.stderr.isTTY === true);
      try {
        const summary = await interruptible((signal) => runBackup({
          socket_path: context.socket_path, dir, devices, storage, limit_bytes, force_full: context.values.full === true,
          rate_bytes_per_s, signal,
          onProgress: (done, total) => progress.update(done, total),
          onNote: (line) => {
            progress.finish();
            context.stderr.write(`ublksnap: backup: ${line}\n`);
          },
        }));
        progress.finish();
        if (context.json) {
          context.stdout.write(jsonLine(summary));
          return;
        }
        context.stdout.write(keyValueLines({
          seq: summary.seq, snapshot_id: summary.snapshot_id, copied_bytes: summary.copied_bytes,
          elapsed_ms: summary.elapsed_ms, bytes_per_s: summary.bytes_per_s,
        }));
        for (const volume of summary.volumes) context.stdout.write(`${keyValueInline(volumeRow(volume))}\n`);
      } finally {
        progress.finish();
      }
    },
  },
  {
    name: 'restore',
    summary: 'Rebuild a volume image (file or block device) from its backups, at any point.',
    usage: '--dir DIR -d VOLUME --to FILE|BLOCKDEV [--point SEQ]',
    options: [
      DIR_OPTION,
      { name: 'device', short: 'd', type: 'string', value_name: 'VOLUME', help: 'the volume (its folder name in DIR)' },
      { name: 'to', type: 'string', value_name: 'FILE|BLOCKDEV', help: 'where to write: a file (created or replaced, sparse) or a block device' },
      POINT_OPTION,
    ],
    details: 'Prints: volume=, point=, chain= (the backups applied), target=, size_bytes=, written_bytes=.\nNeeds no daemon.',
    run: async (context) => {
      const dir = pathArgument(requiredValue(context, 'dir', '--dir'), '--dir');
      const volume = requiredValue(context, 'device', '-d');
      const target = pathArgument(requiredValue(context, 'to', '--to'), '--to');
      const point = pointOf(context);
      const progress = new TransferProgress('restore', context.stderr, context.stderr.isTTY === true);
      try {
        const summary = runRestore({ dir, volume, target, ...(point === undefined ? {} : { point }), onProgress: (done, total) => progress.update(done, total) });
        progress.finish();
        context.stdout.write(context.json ? jsonLine(summary) : keyValueLines({ ...summary, chain: summary.chain }));
      } finally {
        progress.finish();
      }
    },
  },
  {
    name: 'verify',
    summary: "Check a backup directory's checksums; optionally compare a point with a live image export.",
    usage: '--dir DIR [-d VOLUME] [--point SEQ] [--against-export URI]',
    options: [
      DIR_OPTION,
      { name: 'device', short: 'd', type: 'string', value_name: 'VOLUME', help: 'only this volume (default: every volume of DIR)' },
      POINT_OPTION,
      { name: 'against-export', type: 'string', value_name: 'URI', help: 'an NBD URI (snapshot_info -f nbd) to compare the point with, byte for byte' },
    ],
    details: 'Prints: backups_checked=, bytes_checked=, incomplete= (interrupted backups), and compared= with --against-export.\n'
      + 'A bad range fails with the file and its byte range; every bad range is listed as bad= on stdout first.',
    run: async (context) => {
      const dir = pathArgument(requiredValue(context, 'dir', '--dir'), '--dir');
      const volume = value(context, 'device');
      const point = pointOf(context);
      const export_text = value(context, 'against-export');
      const against_export = export_text === undefined ? undefined : parseNbdExportUri(export_text, '--against-export');
      const progress = new TransferProgress('verify', context.stderr, context.stderr.isTTY === true);
      try {
        const summary = await interruptible((signal) => runVerify({
          dir, signal, onProgress: (done, total) => progress.update(done, total),
          ...(volume === undefined ? {} : { volume }), ...(point === undefined ? {} : { point }),
          ...(against_export === undefined ? {} : { against_export }),
        }));
        progress.finish();
        if (!context.json) for (const bad of summary.bad) context.stdout.write(`bad=${badLine(bad)}\n`);
        if (summary.bad.length > 0) throw badError(summary.bad);
        if (context.json) {
          context.stdout.write(jsonLine(summary));
          return;
        }
        context.stdout.write(keyValueLines({
          backups_checked: summary.backups_checked, bytes_checked: summary.bytes_checked, incomplete: summary.incomplete,
          ...(summary.export_compared ? { compared: `${summary.export_compared.volume}@${summary.export_compared.point}=${summary.export_compared.uri}` } : {}),
        }));
      } finally {
        progress.finish();
      }
    },
  },
];

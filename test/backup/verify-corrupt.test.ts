// Goal: `ublksnap verify` finds one corrupt byte in any backup file and
// names the file and the byte range that holds it; a truncated file and a
// missing base are named too; and --against-export tells a point that
// equals a live image from one that does not.
// Method: a real daemon, a volume, a full and an incremental backup; flip
// one byte of each file in turn (restoring it after), truncate one, hide
// one; compare points with a snapshot's image export.

import { readFileSync, renameSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { segmentPieces } from '../../src/backup/manifest';
import { applyWrites, backupJson, cli, cliOk, keyValues, readManifest, startWithVolume, volumeUri } from '../lib/backup-fixture';
import { disposeDaemon, hardTimeout, type TestDaemon } from '../lib/daemon';
import { gate } from '../lib/system';

const suite = gate(test, 'backup/verify-corrupt', { tools: ['qemu-io'] });
hardTimeout(150_000, 'backup/verify-corrupt');

const MiB = 1 << 20;
const VOLUME_BYTES = 16 * MiB;
/** The checksum piece of the manifests (image-copier.ts COPY_PIECE_BYTES). */
const PIECE_BYTES = MiB;

let daemon: TestDaemon;
let backups: string;

suite.before(async () => {
  ({ daemon, backups } = await startWithVolume('verify', VOLUME_BYTES));
  await backupJson(daemon, ['-d', 'vol', '--dir', backups]);
  await applyWrites(volumeUri(daemon, 'vol'), [{ offset: 5 * MiB + 4096, length_bytes: 200_000, pattern: 0x77 }]);
  const second = await backupJson(daemon, ['-d', 'vol', '--dir', backups]);
  assert.is(second.volumes[0]!.kind, 'incremental');
});

suite.after(async () => {
  await disposeDaemon(daemon);
});

/** The checksum piece of a backup that holds byte_offset: its extent cut at the segment boundaries. */
function pieceOf(seq: number, byte_offset: number): [number, number] {
  const manifest = readManifest(backups, 'vol', seq) as { extents: Array<[number, number]> };
  const piece = segmentPieces(manifest.extents, PIECE_BYTES).find(([start, length]) => byte_offset >= start && byte_offset < start + length);
  assert.ok(piece, `byte ${byte_offset} lies in an extent of backup ${seq}`);
  return piece;
}

async function expectBad(file: string, seq: number, byte_offset: number): Promise<void> {
  const result = await cli(daemon, ['verify', '--dir', backups]);
  assert.is(result.code, 1, `verify must fail: ${result.stdout}`);
  const [start, length] = pieceOf(seq, byte_offset);
  assert.ok(length <= PIECE_BYTES);
  const range = `${file}: bytes ${start}-${start + length - 1}`;
  assert.ok(result.stderr.startsWith(`ublksnap: verify: ${range} do not match their sha256 in the manifest (EIO)`), result.stderr);
  assert.ok(result.stdout.includes(`bad=${range}`), result.stdout);
}

for (const [name, seq, byte_offset] of [['000001-full.img', 1, 9 * MiB + 123], ['000002-incr.img', 2, 5 * MiB + 4096 + 77]] as const) {
  suite.test(`one corrupt byte in ${name}: verify names the file and the range`, async () => {
    const file = path.join(backups, 'vol', name);
    const original = readFileSync(file);
    const corrupt = Buffer.from(original);
    corrupt[byte_offset] = (corrupt[byte_offset]! ^ 0x01) & 0xff;
    writeFileSync(file, corrupt);
    try {
      await expectBad(file, seq, byte_offset);
    } finally {
      writeFileSync(file, original);
    }
    keyValues(await cliOk(daemon, ['verify', '--dir', backups]));
  });
}

suite.test('a truncated file and a missing base are named', async () => {
  const incr = path.join(backups, 'vol', '000002-incr.img');
  const original = readFileSync(incr);
  truncateSync(incr, 6 * MiB);
  try {
    const result = await cli(daemon, ['verify', '--dir', backups]);
    assert.is(result.code, 1);
    assert.match(result.stderr, new RegExp(`${incr}: bytes 0-\\d+ : the file has ${6 * MiB} bytes, its manifest says ${VOLUME_BYTES}`));
  } finally {
    writeFileSync(incr, original);
  }
  const base = path.join(backups, 'vol', '000001.json');
  renameSync(base, `${base}.hidden`);
  try {
    const result = await cli(daemon, ['verify', '--dir', backups]);
    assert.is(result.code, 1);
    assert.match(result.stderr, /000002-incr\.img: .*rests on 000001, which is missing or incomplete/);
  } finally {
    renameSync(`${base}.hidden`, base);
  }
});

suite.test('--against-export: the newest point equals a fresh snapshot image; an older one differs where the volume changed', async () => {
  const id = (await cliOk(daemon, ['snapshot_create', '-d', 'vol', '-f', daemon.dir, '-l', '64M'])).trim();
  await cliOk(daemon, ['snapshot_take', '-i', id]);
  try {
    const uri = (await cliOk(daemon, ['snapshot_info', '-d', 'vol', '-f', 'nbd'])).trim();
    const same = keyValues(await cliOk(daemon, ['verify', '--dir', backups, '-d', 'vol', '--against-export', uri]));
    assert.match(same.compared ?? '', /^vol@2=/);
    const older = await cli(daemon, ['verify', '--dir', backups, '-d', 'vol', '--point', '1', '--against-export', uri]);
    assert.is(older.code, 1);
    assert.match(older.stderr, new RegExp(`point 000001 of vol: bytes ${5 * MiB}-${6 * MiB - 1} differ from `));
  } finally {
    await cliOk(daemon, ['snapshot_destroy', '-i', id]);
  }
});

test.run();

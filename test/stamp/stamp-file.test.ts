// Goal: the file helpers write stamps over exactly the asked range of a
// file, in pieces, record each acknowledged piece in a model, and read a
// range back into one report — finding damage made on disk. Method: a
// temporary file (removed afterwards); ranges that do not divide into
// pieces; a byte flipped and a piece copied elsewhere with plain fs calls.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync, ftruncateSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Report, SECTOR_BYTES, SectorModel, StampGenerator, formatReport } from '../lib/stamp';
import { checkFile, fillFileWithStamps } from '../lib/stamp-file';
import { testSeed } from '../lib/workers';

const SEED = testSeed('stamp file');
const WRITER_ID = 11;
const FILE_SECTORS = 4096 + 3;
const IO_BYTES = 64 * 1024;

const dir = mkdtempSync(path.join(os.tmpdir(), 'ublksnap-stamp-'));
let file_index = 0;

function freshFile(sector_count = FILE_SECTORS): string {
  const file = path.join(dir, `volume-${file_index++}.img`);
  const fd = openSync(file, 'w');
  ftruncateSync(fd, sector_count * SECTOR_BYTES);
  closeSync(fd);
  return file;
}

function ranges(report: Report): [string, number, number][] {
  return report.ranges.map((r) => [r.kind, r.first_lba, r.sector_count]);
}

test.after(() => rmSync(dir, { recursive: true, force: true }));

test('fill a range in uneven pieces, then check it clean, by rules and by model', () => {
  const file = freshFile();
  const model = new SectorModel(FILE_SECTORS);
  const generator = new StampGenerator(SEED, WRITER_ID);
  const written = fillFileWithStamps(file, generator, { first_lba: 1, sector_count: FILE_SECTORS - 2, io_bytes: IO_BYTES, model });
  assert.is(written, FILE_SECTORS - 2);
  const inside = checkFile(file, { first_lba: 1, sector_count: FILE_SECTORS - 2, io_bytes: IO_BYTES, expectation: { writer_id: WRITER_ID } });
  assert.ok(inside.ok, formatReport(inside));
  const whole = checkFile(file, { first_lba: 0, sector_count: FILE_SECTORS, model });
  assert.ok(whole.ok, formatReport(whole));
  const strict = checkFile(file, { first_lba: 0, sector_count: FILE_SECTORS });
  assert.equal(ranges(strict), [['unwritten', 0, 1], ['unwritten', FILE_SECTORS - 1, 1]], 'the edges were left alone');
});

test('damage on disk is found, across piece boundaries, in one report', () => {
  const file = freshFile();
  const model = new SectorModel(FILE_SECTORS);
  fillFileWithStamps(file, new StampGenerator(SEED, WRITER_ID), { first_lba: 0, sector_count: FILE_SECTORS, io_bytes: IO_BYTES, model });
  const piece_sectors = IO_BYTES / SECTOR_BYTES;
  const fd = openSync(file, 'r+');
  // Flip a byte in the last sector of piece 2 and the first of piece 3: one range across the boundary.
  for (const lba of [3 * piece_sectors - 1, 3 * piece_sectors]) {
    const sector = new Uint8Array(SECTOR_BYTES);
    readSync(fd, sector, 0, SECTOR_BYTES, lba * SECTOR_BYTES);
    sector[123]! ^= 0x80;
    writeSync(fd, sector, 0, SECTOR_BYTES, lba * SECTOR_BYTES);
  }
  // Copy 8 sectors to the wrong place, as a misdirected chunk copy would.
  const chunk = new Uint8Array(8 * SECTOR_BYTES);
  readSync(fd, chunk, 0, chunk.byteLength, 1000 * SECTOR_BYTES);
  writeSync(fd, chunk, 0, chunk.byteLength, 2000 * SECTOR_BYTES);
  closeSync(fd);
  const expected = [['corrupt', 3 * piece_sectors - 1, 2], ['misaddressed', 2000, 8]];
  assert.equal(ranges(checkFile(file, { first_lba: 0, sector_count: FILE_SECTORS, io_bytes: IO_BYTES })), expected);
  assert.equal(ranges(checkFile(file, { first_lba: 0, sector_count: FILE_SECTORS, model })), expected);
});

test('an open fd works and stays open; a caller io_buffer is used', () => {
  const file = freshFile(64);
  const fd = openSync(file, 'r+');
  try {
    const io_buffer = new Uint8Array(8 * SECTOR_BYTES);
    fillFileWithStamps(fd, new StampGenerator(SEED, WRITER_ID), { first_lba: 0, sector_count: 64, io_bytes: io_buffer.byteLength, io_buffer });
    assert.ok(checkFile(fd, { first_lba: 0, sector_count: 64, io_buffer, io_bytes: io_buffer.byteLength }).ok);
    assert.is(readSync(fd, new Uint8Array(1), 0, 1, 0), 1, 'fd still open');
  } finally {
    closeSync(fd);
  }
});

test('a file shorter than the range, a missing path, a bad piece size: clear errors', () => {
  const file = freshFile(10);
  assert.throws(() => checkFile(file, { first_lba: 0, sector_count: 20 }), /ends before byte/);
  const missing = path.join(dir, 'no-such-device');
  assert.throws(() => fillFileWithStamps(missing, new StampGenerator(1, 1), { first_lba: 0, sector_count: 1 }), /ENOENT/);
  assert.throws(() => checkFile(file, { first_lba: 0, sector_count: 1, io_bytes: 1000 }), /multiple of 512/);
  fillFileWithStamps(missing, new StampGenerator(1, 1), { first_lba: 0, sector_count: 1, create: true });
  assert.ok(checkFile(missing, { first_lba: 0, sector_count: 1 }).ok);
});

test.run();

// Goal: isolation end to end with real clients (DESIGN §10): a volume
// filled with stamped sectors over NBD, taken, then overwritten whole by
// fio over NBD (two connections at once, multi-conn) while the image is
// being read; the image export still holds exactly the pre-take stamps
// (stamp check with a frozen model, and qemu-img compare against the copy
// the volume was filled from), and the volume holds exactly fio's data
// (fio verify-only).
// Method: stamps generated into a scratch file and copied to the volume
// export with nbdcopy; qemu-img compare before the take proves the copy;
// fio --ioengine=nbd writes with crc32c verify headers; nbdcopy reads the
// image back for the stamp checker.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkFile, fillFileWithStamps } from '../lib/stamp-file';
import { SectorModel, StampGenerator, formatReport } from '../lib/stamp';
import { gate } from '../lib/system';
import { NbdFixture, startNbdFixture } from '../lib/nbd-fixture';
import { runOk } from '../lib/nbd-tools';
import { testSeed } from '../lib/workers';

const suite = gate(test, 'nbd/isolation', { tools: ['nbdcopy', 'qemu-img', 'fio'] });
const VOLUME_BYTES = 64 * 1024 * 1024;
const SECTORS = VOLUME_BYTES / 512;
const WRITER_ID = 7;

let fixture: NbdFixture;

suite.before(async () => {
  fixture = await startNbdFixture();
  await fixture.attach('vol', VOLUME_BYTES);
});

suite.after(async () => {
  await fixture?.close();
});

function fioArgs(uri: string, name: string, extra: string[]): string[] {
  return [`--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, `--size=${VOLUME_BYTES}`, '--verify=crc32c',
    '--verify_fatal=1', '--verify_state_save=0', '--iodepth=16', ...extra];
}

suite.test('stamps before the take stay in the image; fio data fills the volume', async () => {
  const seed = testSeed('isolation stamps');
  const generator = new StampGenerator(seed >>> 0, WRITER_ID, { clock: 'counter' });
  const model = new SectorModel(SECTORS);
  const source = fixture.file('stamps.img', 0);
  fillFileWithStamps(source, generator, { first_lba: 0, sector_count: SECTORS, model });
  const volume_uri = fixture.uri('vol');
  await runOk('nbdcopy', ['--request-size=1048576', source, volume_uri]);
  await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, volume_uri]);

  const id = await fixture.snapshot(['vol']);
  const frozen = model.snapshot();
  const take_sequence = generator.sequence;
  generator.nextGeneration();
  const image_uri = fixture.uri(`vol@${id}`);

  // Overwrite the whole volume: two fio jobs (two connections) on the two
  // halves, and the image read in full at the same time.
  const half = VOLUME_BYTES / 2;
  const writers = Promise.all([0, 1].map((job) => runOk('fio', fioArgs(volume_uri, `half${job}`, [
    '--rw=write', '--bs=256k', `--offset=${job * half}`, `--size=${half}`, '--do_verify=1']), { cwd: fixture.dir })));
  const image_copy = fixture.file('image-during.img', 0);
  const reader = runOk('nbdcopy', ['--request-size=65536', image_uri, image_copy]);
  await Promise.all([writers, reader]);

  const during = checkFile(image_copy, { first_lba: 0, sector_count: SECTORS, model: frozen, expectation: { max_sequence: take_sequence } });
  assert.ok(during.ok, `image read during the overwrite:\n${formatReport(during)}`);
  const image_after = fixture.file('image-after.img', 0);
  await runOk('nbdcopy', [image_uri, image_after]);
  const after = checkFile(image_after, { first_lba: 0, sector_count: SECTORS, model: frozen, expectation: { max_sequence: take_sequence } });
  assert.ok(after.ok, `image after the overwrite:\n${formatReport(after)}`);
  await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, image_uri]);

  // The volume holds exactly what fio wrote: its verify headers check in full.
  for (const job of [0, 1]) {
    await runOk('fio', fioArgs(volume_uri, `half${job}`, ['--rw=write', '--bs=256k', `--offset=${job * half}`, `--size=${half}`, '--verify_only']),
      { cwd: fixture.dir });
  }
  const volume_copy = fixture.file('volume-after.img', 0);
  await runOk('nbdcopy', [volume_uri, volume_copy]);
  const leftovers = checkFile(volume_copy, { first_lba: 0, sector_count: SECTORS });
  assert.is(leftovers.counts.corrupt + leftovers.counts.unwritten, SECTORS, 'no stamp survived in the volume');
  await fixture.engine.snapshotDestroy(id);
});

test.run();

// Goal: the daemon's state files are written durably and read back
// suspiciously. writeFileDurably writes a private temporary file in the
// same directory, fsyncs it, renames it over the target and fsyncs the
// directory, in that order; a reader sees the old or the new content,
// never a temporary. The CBT file format round-trips a map exactly and
// reports every kind of damage as a problem, not a map; CbtMap.restore
// refuses a state that does not fit the volume or breaks the numbering.
// Method: the store's functions on files in a scratch dir; the system
// calls of a real write watched with strace (skipped loudly without it);
// CBT files damaged byte by byte.

import { readFileSync, readdirSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readSaved, writeClean, writeInUse, writeLost } from '../../src/daemon/cbt-store';
import { readStateFile, writeFileDurably } from '../../src/shared/state-file';
import { evidenceDiffers, type FileEvidence } from '../../src/daemon/volume-evidence';
import { Tracker } from '../../src/engine/tracker';
import { CbtMap } from '../../src/shared/cbt-map';
import { trackingGeometry } from '../../src/shared/geometry';
import { DEFAULT_PARAMS } from '../../src/shared/params';
import { REPO_ROOT, removeScratchDir, scratchDir } from '../lib/daemon';
import { run } from '../lib/nbd-tools';
import { missingPrerequisites } from '../lib/system';

let dir: string;
test.before(() => { dir = scratchDir('state-store'); });
test.after(() => { removeScratchDir(dir); });

const CAPACITY_SECTORS = 100_000;

/** A map with some history: two takes, writes on each side. */
function mapWithHistory(): CbtMap {
  const map = CbtMap.create(CAPACITY_SECTORS, trackingGeometry(CAPACITY_SECTORS, DEFAULT_PARAMS));
  map.switchForTake();
  map.mark(0, 8);
  map.switchForTake();
  map.mark(50_000, 300);
  return map;
}

test('writeFileDurably: owner-only, content replaced whole, no temporary left (also over a crashed one)', () => {
  const file = path.join(dir, 'a.json');
  writeFileDurably(file, [Buffer.from('first')]);
  assert.is(readFileSync(file, 'utf8'), 'first');
  assert.is(statSync(file).mode & 0o777, 0o600);
  const inode = statSync(file).ino;
  // A crash left this process's temporary behind.
  writeFileSync(`${file}.${process.pid}.tmp`, 'half a wri');
  writeFileDurably(file, [Buffer.from('sec'), Buffer.from('ond')]);
  assert.is(readFileSync(file, 'utf8'), 'second');
  assert.is.not(statSync(file).ino, inode, 'a new file renamed into place, not the old one rewritten');
  assert.equal(readdirSync(dir).filter((name) => name.startsWith('a.json')), ['a.json']);
});

test('readStateFile: null when missing, EFBIG past the bound, no symlinks followed', () => {
  assert.is(readStateFile(path.join(dir, 'missing'), 10), null);
  const file = path.join(dir, 'big');
  writeFileSync(file, 'x'.repeat(11));
  assert.throws(() => readStateFile(file, 10), (error: Error & { code?: string }) => error.code === 'EFBIG');
  assert.is(readStateFile(file, 11)?.toString(), 'x'.repeat(11));
  symlinkSync(file, path.join(dir, 'link'));
  assert.throws(() => readStateFile(path.join(dir, 'link'), 100), (error: Error & { code?: string }) => error.code === 'ELOOP');
});

const strace_missing = missingPrerequisites({ tools: ['strace'] });
test('writeFileDurably: fsync of the temporary, then rename, then fsync of the directory (strace)', async () => {
  if (strace_missing.length > 0) {
    console.log(`SKIP durability order: ${strace_missing.join(', ')}`);
    return;
  }
  const file = path.join(dir, 'traced.json');
  const trace = path.join(dir, 'trace.txt');
  const store = path.join(REPO_ROOT, 'dist', 'src', 'shared', 'state-file.js');
  const script = `require(${JSON.stringify(store)}).writeFileDurably(${JSON.stringify(file)}, [Buffer.from('traced')])`;
  const result = await run('strace', ['-f', '-y', '-o', trace, '-e', 'trace=openat,fsync,fdatasync,rename,renameat,renameat2', process.execPath, '-e', script]);
  assert.is(result.code, 0, result.stderr);
  const lines = readFileSync(trace, 'utf8').split('\n');
  const temporary_name = path.basename(file) + '.';
  const at = (pattern: RegExp, what: string): number => {
    const index = lines.findIndex((line) => pattern.test(line));
    assert.ok(index >= 0, `no ${what} in the trace:\n${lines.filter((line) => line.includes(dir)).join('\n')}`);
    return index;
  };
  const escaped = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const open_tmp = at(new RegExp(`openat\\(.*${escaped(temporary_name)}\\d+\\.tmp".*O_EXCL`), 'O_EXCL open of the temporary');
  const sync_tmp = at(new RegExp(`fsync\\(\\d+<${escaped(file)}\\.\\d+\\.tmp>\\)`), 'fsync of the temporary');
  const rename = at(new RegExp(`rename(at2?)?\\(.*${escaped(temporary_name)}\\d+\\.tmp".*${escaped(file)}"`), 'rename over the file');
  const sync_dir = at(new RegExp(`fsync\\(\\d+<${escaped(dir)}>\\)`), 'fsync of the directory');
  assert.ok(open_tmp < sync_tmp && sync_tmp < rename && rename < sync_dir, `order: open ${open_tmp}, fsync ${sync_tmp}, rename ${rename}, dir fsync ${sync_dir}`);
  assert.is(readFileSync(file, 'utf8'), 'traced');
});

const EVIDENCE: FileEvidence = { kind: 'file', dev: '1', ino: '2', size: '3', mtime_ns: '4', ctime_ns: '5' };

test('CBT file: a clean map round-trips exactly; in_use and lost say so', () => {
  const file = path.join(dir, 'vol.cbt');
  const map = mapWithHistory();
  writeClean(file, '/v/vol.img', { state: map.exportState(), generation_reason: 'first attach' }, EVIDENCE);
  assert.is(statSync(file).mode & 0o777, 0o600);
  const saved = readSaved(file, '/v/vol.img');
  assert.is(saved.status, 'clean');
  if (saved.status !== 'clean') return;
  assert.equal(saved.cbt.state, map.exportState());
  assert.is(saved.cbt.generation_reason, 'first attach');
  assert.equal(saved.evidence, EVIDENCE);
  const restored = CbtMap.restore(saved.cbt.state, CAPACITY_SECTORS, trackingGeometry(CAPACITY_SECTORS, DEFAULT_PARAMS));
  assert.instance(restored, CbtMap);
  assert.equal((restored as CbtMap).info(), map.info());
  assert.equal((restored as CbtMap).exportState(), map.exportState());

  writeInUse(file, '/v/vol.img');
  assert.is(readSaved(file, '/v/vol.img').status, 'in_use');
  writeLost(file, '/v/vol.img', 'gone away');
  assert.equal(readSaved(file, '/v/vol.img'), { status: 'lost', reason: 'gone away' });
  assert.equal(readSaved(path.join(dir, 'none.cbt'), '/v/vol.img'), { status: 'missing' });
});

test('CBT file: damage of every kind is a problem, never a map', () => {
  const file = path.join(dir, 'damaged.cbt');
  const write = (): Buffer => {
    writeClean(file, '/v/vol.img', { state: mapWithHistory().exportState(), generation_reason: 'first attach' }, EVIDENCE);
    return readFileSync(file);
  };
  const problem = (): string => {
    const saved = readSaved(file, '/v/vol.img');
    assert.is(saved.status, 'unreadable', JSON.stringify(saved).slice(0, 200));
    return saved.status === 'unreadable' ? saved.problem : '';
  };
  const bytes = write();
  const header_end = bytes.indexOf(0x0a);
  truncateSync(file, bytes.length - 1);
  assert.match(problem(), /truncated/);
  truncateSync(file, 0);
  assert.match(problem(), /empty/);
  const flipped = Buffer.from(bytes);
  flipped[header_end + 1 + 3] ^= 0x80;
  writeFileSync(file, flipped);
  assert.match(problem(), /checksum/);
  writeFileSync(file, bytes.subarray(0, header_end - 5));
  assert.match(problem(), /no header line/);
  writeFileSync(file, Buffer.concat([Buffer.from('{"format":'), bytes.subarray(header_end)]));
  assert.match(problem(), /header is not JSON/);
  const header = JSON.parse(bytes.subarray(0, header_end).toString());
  const rewrite = (change: (h: Record<string, any>) => void): void => {
    const copy = JSON.parse(JSON.stringify(header));
    change(copy);
    writeFileSync(file, Buffer.concat([Buffer.from(JSON.stringify(copy)), bytes.subarray(header_end)]));
  };
  rewrite((h) => { h.version = 99; });
  assert.match(problem(), /format version 99/);
  rewrite((h) => { h.path = '/v/other.img'; });
  assert.match(problem(), /saved for \/v\/other\.img/);
  rewrite((h) => { h.cbt.block_count = -1; });
  assert.match(problem(), /block_count is not a whole number/);
  rewrite((h) => { delete h.evidence.ctime_ns; });
  assert.match(problem(), /no evidence/);
  rewrite((h) => { h.status = 'maybe'; });
  assert.match(problem(), /unknown status/);
});

test('CbtMap.restore: refuses another size, another geometry, broken numbering', () => {
  const geometry = trackingGeometry(CAPACITY_SECTORS, DEFAULT_PARAMS);
  const state = mapWithHistory().exportState();
  assert.match(CbtMap.restore(state, CAPACITY_SECTORS + 1, trackingGeometry(CAPACITY_SECTORS + 1, DEFAULT_PARAMS)) as string, /^size changed/);
  assert.match(CbtMap.restore(state, CAPACITY_SECTORS, { ...geometry, shift: geometry.shift + 1 }) as string, /^tracking block size changed/);
  assert.match(CbtMap.restore({ ...state, changes_number: 0 }, CAPACITY_SECTORS, geometry) as string, /changes number 0 with active number 2/);
  const active = Uint8Array.from(state.active);
  active[3] = 7;
  assert.match(CbtMap.restore({ ...state, active }, CAPACITY_SECTORS, geometry) as string, /block 3 is marked 7 in the active copy/);
  assert.match(CbtMap.restore({ ...state, generation_id: 'x' }, CAPACITY_SECTORS, geometry) as string, /not a UUID/);
});

test('Tracker: restored state keeps its reason; a state that does not fit says why; the 256-take wrap is a reason too', () => {
  const state = mapWithHistory().exportState();
  const kept = new Tracker(CAPACITY_SECTORS, DEFAULT_PARAMS, { state, state_reason: 'first attach', new_generation_reason: 'unused' });
  assert.is(kept.info().generation_id, state.generation_id);
  assert.is(kept.info().generation_reason, 'first attach');
  const grown = new Tracker(CAPACITY_SECTORS * 2, DEFAULT_PARAMS, { state, state_reason: 'first attach' });
  assert.is.not(grown.info().generation_id, state.generation_id);
  assert.match(grown.info().generation_reason as string, /^size changed \(100000 sectors when saved, 200000 now\)$/);
  const fresh = new Tracker(CAPACITY_SECTORS, DEFAULT_PARAMS, { new_generation_reason: 'unclean stop' });
  assert.is(fresh.info().generation_reason, 'unclean stop');
  const first_generation = fresh.info().generation_id;
  for (let take = 1; take <= 255; take += 1) fresh.map.switchForTake();
  assert.is(fresh.info().generation_id, first_generation, '255 takes fit in one generation');
  assert.is(fresh.info().generation_reason, 'unclean stop');
  fresh.map.switchForTake();
  assert.is.not(fresh.info().generation_id, first_generation);
  assert.is(fresh.info().generation_reason, 'change numbers wrapped (a generation holds at most 255 takes)');
});

test('evidence: the first field that moved names the reason; equal evidence is none', () => {
  assert.is(evidenceDiffers(EVIDENCE, { ...EVIDENCE }), null);
  assert.is(evidenceDiffers(EVIDENCE, { ...EVIDENCE, ino: '9', mtime_ns: '9' }), 'file replaced while the daemon was down (inode)');
  assert.is(evidenceDiffers(EVIDENCE, { ...EVIDENCE, ctime_ns: '9' }), 'file modified while the daemon was down (ctime)');
  assert.match(evidenceDiffers(EVIDENCE, { kind: 'block', boot_id: 'b', rdev: '7:0', sectors_written: '0', size_sectors: '8' }) as string, /was a file at the clean stop and is a block now/);
});

test('README: every generation reason the code can give is in the Restarts table', () => {
  const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const table = readme.slice(readme.indexOf('| `generation_reason` | meaning |'));
  const block = { kind: 'block' as const, boot_id: 'b', rdev: '7:0', sectors_written: '0', size_sectors: '8' };
  const reasons = [
    ...(['dev', 'ino', 'size', 'mtime_ns', 'ctime_ns'] as const).map((field) => evidenceDiffers(EVIDENCE, { ...EVIDENCE, [field]: 'x' })),
    ...(['boot_id', 'rdev', 'size_sectors', 'sectors_written'] as const).map((field) => evidenceDiffers(block, { ...block, [field]: 'x' })),
    new Tracker(CAPACITY_SECTORS, DEFAULT_PARAMS).info().generation_reason,
    new Tracker(CAPACITY_SECTORS * 2, DEFAULT_PARAMS, { state: mapWithHistory().exportState(), state_reason: 'first attach' }).info().generation_reason,
    'unclean stop', 'state missing', 'the volume could not be attached', 'saved change tracking unreadable', 'change numbers wrapped',
  ];
  for (const reason of reasons) {
    // The table names the phrase; the part in parentheses varies (fields, sizes, errors).
    const phrase = (reason as string).replace(/ \(.*$/, '');
    assert.ok(table.includes(`\`${phrase}`), `README's Restarts table lacks ${JSON.stringify(phrase)}`);
  }
});

test.run();

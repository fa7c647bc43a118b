// Goal: a script written for upstream blksnap's console tool runs unchanged
// against ublksnap (issue 13, items 1-10): the same command lines, the same
// parsing of the output, the same exit statuses; and the richer forms
// (-j, --all-events) carry every key the text does.
// Method: a real daemon (test/lib/daemon.ts) and a `ublksnap` wrapper on
// PATH, called from bash exactly as upstream's tests/*.sh helpers call
// `blksnap`: `--device=DEV`, `ID=$(… snapshot_create …)`, `for ID in
// $(… snapshot_collect)`, `grep`/`cut` on key=value lines. Where upstream's
// format is fixed the output is compared byte for byte. markdirtyblock
// --file and -d by a loop device need root, losetup, mkfs.ext4 and filefrag
// (ext4 on a loop device over the volume file, the extents checked against
// filefrag's).

import { spawn } from 'node:child_process';
import { chmodSync, linkSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CLI_PATH, HAS_NBD, disposeDaemon, hardTimeout, keyValues, sparseFile, startDaemon, type RunResult, type TestDaemon,
} from '../lib/daemon';
import { gate, makeLoopDevice, mkfsExt4AndMount, runTool } from '../lib/system';

const MiB = 1 << 20;
const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
/** One bash script (several CLI runs on a loaded 2-core machine). */
const SCRIPT_TIMEOUT_MS = 90_000;
let daemon: TestDaemon;
let bin_dir: string;

hardTimeout(420_000, 'cli/upstream-scripts');

/** Runs a bash script (set -e) in the daemon's dir with `ublksnap` on PATH, as an upstream test would run. */
function bash(script: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-ec', script], {
      cwd: daemon.dir,
      env: { ...process.env, PATH: `${bin_dir}:${process.env.PATH ?? ''}`, UBLKSNAP_SOCKET: daemon.socket, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`bash script: no exit within ${SCRIPT_TIMEOUT_MS} ms\n${script}\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, SCRIPT_TIMEOUT_MS);
    child.on('error', (error) => { clearTimeout(timer); reject(error); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The script must exit 0; returns its stdout. */
async function bashOk(script: string): Promise<string> {
  const result = await bash(script);
  if (result.code !== 0) throw new Error(`script exited ${result.code}:\n${script}\nstderr: ${result.stderr}`);
  return result.stdout;
}

test.before(async () => {
  daemon = await startDaemon('cli-upstream');
  bin_dir = daemon.file('bin');
  mkdirSync(bin_dir);
  // What an installed ublksnap is: a command on PATH (the install itself is another test's).
  writeFileSync(path.join(bin_dir, 'ublksnap'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI_PATH)} "$@"\n`);
  chmodSync(path.join(bin_dir, 'ublksnap'), 0o755);
  for (const name of ['a.img', 'b.img', 'c.img', 'd.img', 'e.img', 'f.img', 'g.img', 'h.img']) sparseFile(daemon.file(name), 8 * MiB);
  mkdirSync(daemon.file('diff'));
  // Volumes attached up front, so a test depends on no other test's attach (a-d: the tests attach those).
  for (const name of ['e.img', 'f.img', 'g.img', 'h.img']) await daemon.ok(['attach', '-d', daemon.file(name)]);
});

test.after(async () => {
  await disposeDaemon(daemon);
});

test('3. version: MAJOR.MINOR.REVISION.BUILD alone on its line', async () => {
  const version = JSON.parse(readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')).version as string;
  assert.is(await bashOk('ublksnap version'), `${version}.0\n`);
  assert.equal(JSON.parse(await bashOk('ublksnap version -j')), { version: `${version}.0` });
});

test('4. snapshot_create --device and snapshot_add attach a device that is not attached yet', async () => {
  const out = await bashOk(`
    ID=$(ublksnap snapshot_create --device ${daemon.file('a.img')} --file=${daemon.file('diff')} --limit=64M)
    echo "New snapshot \${ID} was created"
    ublksnap snapshot_add --id=\${ID} --device=${daemon.file('b.img')}
    ublksnap snapshot_take --id=\${ID}
    ublksnap snapshot_destroy --id=\${ID}`);
  assert.match(out, new RegExp(`^New snapshot ${UUID} was created\n$`));
  const names = JSON.parse(await daemon.ok(['status', '-j'])).volumes.map((volume: { name: string }) => volume.name);
  assert.ok(names.includes('a.img') && names.includes('b.img'), `both stay attached, as upstream leaves its filter on: ${names}`);
});

test('5. attach twice: exit 0 and the same name=, a note on stderr', async () => {
  const result = await bash(`ublksnap attach --device=${daemon.file('e.img')}`);
  assert.is(result.code, 0, result.stderr);
  assert.is(result.stdout, 'name=e.img\n');
  assert.is(result.stderr, `ublksnap: attach: ${daemon.file('e.img')} was already attached as e.img\n`);
  // Another name for it is a real conflict.
  const renamed = await bash(`ublksnap attach --device=${daemon.file('e.img')} --name other`);
  assert.is(renamed.code, 1);
  assert.match(renamed.stderr, /already attached as e\.img, not other \(EALREADY\)/);
});

test('2. snapshot_collect: one bare id per line; upstream\'s clean-up loop destroys every snapshot', async () => {
  const ids = (await bashOk(`
    ublksnap snapshot_create --device=${daemon.file('e.img')} --file=${daemon.file('diff')} --limit=64M
    ublksnap snapshot_create --device=${daemon.file('f.img')} --file=${daemon.file('diff')} --limit=64M`)).trim().split('\n');
  assert.is(ids.length, 2);
  const listed = await bashOk('ublksnap snapshot_collect');
  assert.equal(listed.trim().split('\n').sort(), [...ids].sort(), 'the same ids');
  assert.match(listed, new RegExp(`^(${UUID}\n){2}$`));
  assert.equal(JSON.parse(await bashOk('ublksnap snapshot_collect -j')).ids.sort(), [...ids].sort());
  await bashOk('for ID in $(ublksnap snapshot_collect); do ublksnap snapshot_destroy --id=${ID}; done');
  assert.is(await bashOk('ublksnap snapshot_collect'), '');
});

test('6. snapshot_waitevent on an unknown id: result=not found, exit 0', async () => {
  const result = await bash('ublksnap snapshot_waitevent --id=5f0c3a1e-8d2b-4c6f-9a7e-0b1c2d3e4f50 --timeout=100');
  assert.is(result.code, 0, result.stderr);
  assert.is(result.stdout, 'result=not found\n');
  assert.is(result.stderr, '');
});

test('7. after a take, a waiting script sees no event upstream lacks (the take\'s low_space stays hidden)', async () => {
  const out = await bashOk(`
    ID=$(ublksnap snapshot_create --device=${daemon.file('e.img')} --file=${daemon.file('diff')} --limit=64M)
    ublksnap snapshot_take --id=\${ID}
    ublksnap snapshot_waitevent --id=\${ID} --timeout=1500
    ublksnap snapshot_waitevent --id=\${ID} --timeout=3000 --all-events | grep '^event=' | cut -d= -f2
    ublksnap snapshot_destroy --id=\${ID}`);
  const [first, all_event] = out.trim().split('\n');
  assert.is(first, 'result=timeout');
  assert.ok(all_event === 'low_space' || all_event === 'grown', `--all-events shows the take's events: ${out}`);
});

test('8. -d by any path naming the volume: a symlink, a hard link, an unnormalised path', async () => {
  symlinkSync(daemon.file('e.img'), daemon.file('link-e.img'));
  linkSync(daemon.file('e.img'), daemon.file('hard-e.img'));
  const out = await bashOk(`
    ublksnap cbtinfo --device=${daemon.file('link-e.img')} | grep '^block_count='
    ublksnap cbtinfo --device=${daemon.file('hard-e.img')} | grep '^block_count='
    ublksnap cbtinfo --device=${daemon.dir}/bin/../e.img | grep '^block_count='`);
  assert.is(out, 'block_count=128\n'.repeat(3));
  const unknown = await bash(`ublksnap cbtinfo --device=${daemon.file('d.img')}`);
  assert.is(unknown.code, 1);
  assert.match(unknown.stderr, /no attached volume .*d\.img \(ESRCH\)/);
});

test('9. cbtinfo: device_capacity in bytes, as upstream documents; text and JSON agree', async () => {
  assert.is(await bashOk(`ublksnap cbtinfo --device=${daemon.file('g.img')} | grep device_capacity | cut -d= -f2`), `${8 * MiB}\n`);
  const text = keyValues(await bashOk(`ublksnap cbtinfo --device=${daemon.file('g.img')}`));
  assert.equal(Object.keys(text).slice(0, 5), ['block_size', 'device_capacity', 'block_count', 'generation_id', 'changes_number']);
  const json = JSON.parse(await bashOk(`ublksnap cbtinfo --device=${daemon.file('g.img')} -j`));
  for (const [key, value] of Object.entries(text)) assert.is(String(json[key]), value, key);
});

test('10. long options abbreviate to any unambiguous prefix; an ambiguous one names both; an unknown command exits 1', async () => {
  assert.match(await bashOk(`ublksnap cbtinfo --dev=${daemon.file('g.img')}`), /^block_size=65536\n/);
  assert.match(await bashOk(`ublksnap cbtinfo --dev ${daemon.file('g.img')}`), /^block_size=65536\n/);
  const ambiguous = await bash(`ublksnap attach --device=${daemon.file('d.img')} --n x`);
  assert.is(ambiguous.code, 1);
  assert.is(ambiguous.stderr, 'ublksnap: attach: option --n is ambiguous: it could be --name or --nbd (EINVAL)\n');
  const unknown = await bash('ublksnap tracker_collect');
  assert.is(unknown.code, 1);
  assert.match(unknown.stderr, /^ublksnap: unknown command "tracker_collect"/);
});

test('-j carries the text keys: status, readcbtmap -f - -j refused rather than JSON after the map', async () => {
  const text = await bashOk('ublksnap status');
  const json = JSON.parse(await bashOk('ublksnap status -j'));
  for (const key of ['version', 'pid', 'uptime_s', 'socket', 'state_dir', 'connections', 'requests_in_flight']) {
    assert.match(text, new RegExp(`^${key}=`, 'm'), `text has ${key}`);
    assert.ok(key in json.daemon, `JSON daemon has ${key}`);
  }
  const refused = await bash(`ublksnap readcbtmap --device=${daemon.file('g.img')} --file=- -j`);
  assert.is(refused.code, 1);
  assert.is(refused.stdout, '', 'nothing on stdout: no half map, no JSON');
  assert.match(refused.stderr, /-j with -f -: the map itself goes to stdout; give -f FILE/);
});

test('errors say what is wrong: not a socket, not our socket, -l -5, --name, storage in use, a file of 1000 bytes', async () => {
  writeFileSync(daemon.file('plain'), 'not a socket');
  const plain = await bash(`ublksnap --socket ${daemon.file('plain')} version`);
  assert.is(plain.stderr, `ublksnap: version: ${daemon.file('plain')} is not a socket (a regular file): give the daemon's control socket (EINVAL)\n`);
  if (HAS_NBD) {
    const nbd = await bash(`ublksnap --socket ${daemon.nbd_socket} version`);
    assert.match(nbd.stderr, new RegExp(`^ublksnap: version: ${daemon.nbd_socket} is not a ublksnap daemon socket \\(an NBD server answered\\)`));
  }
  const negative = await bash(`ublksnap snapshot_create -d g.img -f ${daemon.file('diff')} -l -5`);
  assert.match(negative.stderr, /^ublksnap: snapshot_create: -l: expected a size like .*, got "-5" \(EINVAL\)\n$/);
  const name = await bash(`ublksnap attach -d ${daemon.file('d.img')} --name 'two words'`);
  assert.match(name.stderr, /^ublksnap: attach: --name: expected 1-64 of letters.*got "two words" \(EINVAL\)\n$/);

  const holder = (await bashOk(`ublksnap snapshot_create -d g.img -f ${daemon.file('store.bin')} -l 16M`)).trim();
  const busy = await bash(`ublksnap snapshot_create -d h.img -f ${daemon.file('store.bin')} -l 16M`);
  assert.is(busy.code, 1);
  assert.match(busy.stderr, new RegExp(`difference storage .*store\\.bin is in use by snapshot ${holder}`));
  await bashOk(`ublksnap snapshot_destroy --id=${holder}`);

  writeFileSync(daemon.file('odd.img'), Buffer.alloc(1000));
  const odd = await bash(`ublksnap attach --device=${daemon.file('odd.img')}`);
  assert.is(odd.code, 0, odd.stderr);
  assert.is(odd.stdout, 'name=odd.img\n', 'stdout keeps upstream\'s keys only');
  assert.is(odd.stderr, `ublksnap: attach: warning: ${daemon.file('odd.img')} is not a whole number of 512-byte sectors; its last 488 bytes are not part of the volume (1 sectors)\n`);
  assert.match(daemon.logs, /file size is not a multiple of 512/);
  await bashOk('ublksnap detach --device=odd.img');
});

// ── root: a file system on a loop device of a volume ────────────────────

const root = gate(test, 'cli/upstream-scripts (loop devices)', { root: true, tools: ['losetup', 'mkfs.ext4', 'mount', 'filefrag'] });

/** [first, end) in 512-byte sectors of every extent filefrag reports. */
function filefragSectors(file: string): [number, number][] {
  const out = runTool('filefrag', ['-e', '-b512', file]);
  return [...out.matchAll(/^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)].map((match) => [Number(match[1]), Number(match[2]) + 1]);
}

root.test('8. -d by a loop device of the volume file, a symlink to it, and another node of the same MAJ:MIN (as /dev/block/MAJ:MIN is)', async () => {
  const loop = makeLoopDevice(daemon.file('f.img'));
  try {
    const rdev = statSync(loop.device).rdev;
    const major = (rdev >>> 8) & 0xfff;
    const minor = (rdev & 0xff) | ((rdev >>> 12) & 0xfff00);
    // udev makes /dev/block/MAJ:MIN a symlink; this machine has no udev, so a node of our own stands for it.
    runTool('mknod', [daemon.file(`${major}:${minor}`), 'b', String(major), String(minor)]);
    symlinkSync(loop.device, daemon.file('by-id-f'));
    const out = await bashOk(`
      ublksnap cbtinfo --device=${loop.device} | grep '^block_count='
      ublksnap cbtinfo --device=${daemon.file(`${major}:${minor}`)} | grep '^block_count='
      ublksnap cbtinfo --device=${daemon.file('by-id-f')} | grep '^block_count='`);
    assert.is(out, 'block_count=128\n'.repeat(3));
  } finally {
    loop.detach();
  }
});

root.test('1. markdirtyblock --file marks exactly the file\'s extents (ext4 on a loop device of the volume file)', async () => {
  sparseFile(daemon.file('fs.img'), 64 * MiB);
  await bashOk(`ublksnap attach --device=${daemon.file('fs.img')}`);
  const loop = makeLoopDevice(daemon.file('fs.img'));
  const mount = mkfsExt4AndMount(loop.device);
  try {
    const data = path.join(mount.path, 'data');
    writeFileSync(data, Buffer.alloc(3 * MiB + 4096, 0x5a));
    // A first take: the generation's map starts from here (mkfs wrote around the daemon, unseen).
    await bashOk(`ID=$(ublksnap snapshot_create --device=fs.img --file=${daemon.file('diff')} --limit=64M); ublksnap snapshot_take --id=$ID; ublksnap snapshot_destroy --id=$ID`);
    await bashOk(`ublksnap markdirtyblock --file=${data}`);
    const out = await bashOk(`
      ID=$(ublksnap snapshot_create --device=fs.img --file=${daemon.file('diff')} --limit=64M)
      ublksnap snapshot_take --id=$ID
      ublksnap readcbtmap --device=fs.img --file=${daemon.file('fs.map')}
      ublksnap cbtinfo --device=fs.img | grep -E '^(block_size|changes_number)='
      ublksnap snapshot_destroy --id=$ID`);
    const info = keyValues(out);
    const block_sectors = Number(info.block_size) / 512;
    const map = readFileSync(daemon.file('fs.map'));
    const expected = new Set<number>();
    for (const [first, end] of filefragSectors(data)) {
      for (let block = Math.floor(first / block_sectors); block < Math.ceil(end / block_sectors); block += 1) expected.add(block);
    }
    const marked = new Set<number>();
    map.forEach((value, block) => { if (value !== 0) marked.add(block); });
    console.log(`  ${expected.size} blocks under the file's extents; ${marked.size} marked (changes_number ${info.changes_number})`);
    assert.ok(expected.size >= 48, 'a 3 MiB file covers at least 48 blocks of 64 KiB');
    assert.equal([...marked].sort((a, b) => a - b), [...expected].sort((a, b) => a - b));
  } finally {
    mount.unmount();
    loop.detach();
  }
  await bashOk('ublksnap detach --device=fs.img');
});

root.test('1. markdirtyblock --file on a file system with no volume under it: ESRCH naming the device', async () => {
  // The checkout's own file system is no volume of this daemon.
  const result = await bash(`ublksnap markdirtyblock --file=${CLI_PATH}`);
  assert.is(result.code, 1);
  assert.match(result.stderr, /^ublksnap: markdirtyblock: no attached volume \/dev\/\S+ \(ESRCH\)\n$/);
});

test('the daemon still serves after all of it', async () => {
  assert.match(await bashOk('ublksnap version'), /^\d+\.\d+\.\d+\.\d+\n$/);
});

test.run();

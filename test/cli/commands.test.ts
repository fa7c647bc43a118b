// Goal: every CLI command works end to end against a real daemon process,
// with upstream blksnap's key=value output and, with -j, one JSON object
// holding the same keys; --help works for each command and overall.
// Method: spawn `ublksnap daemon` on a scratch socket, attach sparse files
// in /dev/shm, and run each command as its own `ublksnap` process (text,
// then -j), checking output and exit status; a CBT cycle (markdirtyblock,
// take, readcbtmap) checks the map bytes the CLI writes.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { COMMANDS } from '../../src/cli/commands';
import {
  CLI_PATH, HAS_NBD, disposeDaemon, hardTimeout, keyValues, runNode, sparseFile, startDaemon, type TestDaemon,
} from '../lib/daemon';
import { BUILTIN_FRONTENDS } from '../../src/daemon/frontends';

const MiB = 1 << 20;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
let daemon: TestDaemon;

hardTimeout(240_000, 'cli/commands');

test.before(async () => {
  daemon = await startDaemon('cli-commands');
  sparseFile(daemon.file('v1.img'), 16 * MiB);
  sparseFile(daemon.file('v2.img'), 8 * MiB);
  sparseFile(daemon.file('v3.img'), 4 * MiB);
});

test.after(async () => {
  await disposeDaemon(daemon);
});

test('version: MAJOR.MINOR.REVISION.BUILD as upstream, and {"version"}', async () => {
  const text = await daemon.ok(['version']);
  assert.match(text, /^\d+\.\d+\.\d+\.\d+\n$/);
  assert.equal(JSON.parse(await daemon.ok(['version', '-j'])), { version: text.trim() });
  // -j before the command works too.
  assert.equal(JSON.parse(await daemon.ok(['-j', 'version'])), { version: text.trim() });
});

test('attach: name= by default from the file name, --name, relative paths, JSON', async () => {
  assert.equal(keyValues(await daemon.ok(['attach', '-d', daemon.file('v1.img')])), { name: 'v1.img' });
  // A relative path is the CLI's cwd (the daemon's scratch dir here), not the daemon's.
  const json = JSON.parse(await daemon.ok(['attach', '-d', './v2.img', '--name', 'two', '-j']));
  assert.equal(json, { name: 'two', path: daemon.file('v2.img'), capacity_sectors: 16384, already_attached: false, ignored_tail_bytes: 0 });
});

test('attach --nbd: nbd= the export URI when the NBD frontend is built in, else ENODEV and nothing attached', async () => {
  sparseFile(daemon.file('n.img'), 4 * MiB);
  const result = await daemon.cli(['attach', '-d', 'n.img', '--nbd']);
  if (HAS_NBD) {
    assert.is(result.code, 0, result.stderr);
    assert.equal(keyValues(result.stdout), { name: 'n.img', nbd: `nbd+unix:///n.img?socket=${daemon.nbd_socket}` });
  } else {
    assert.is(result.code, 1);
    assert.match(result.stderr, /^ublksnap: attach: no NBD frontend in this daemon .*\(ENODEV\)\n$/);
  }
  const ublk = await daemon.cli(['attach', '-d', 'n.img', '--name', 'n2', '--ublk']);
  // Not loaded (modprobe it), or not in this kernel at all (say so, and offer NBD).
  assert.match(ublk.stderr, /^ublksnap: attach: ublk is not available: .*(modprobe ublk_drv|has no ublk_drv.*--nbd).*\(ENODEV\)\n$/, 'this kernel has no ublk: the reason, and nothing attached');
  await daemon.cli(['detach', '-d', 'n.img']);
  const volumes = JSON.parse(await daemon.ok(['status', '-j'])).volumes.map((v: { name: string }) => v.name);
  assert.equal(volumes, ['v1.img', 'two']);
});

test('cbtinfo: the five upstream keys in order, then generation_reason; text and JSON agree', async () => {
  const text = keyValues(await daemon.ok(['cbtinfo', '-d', 'v1.img']));
  assert.equal(Object.keys(text), ['block_size', 'device_capacity', 'block_count', 'generation_id', 'changes_number', 'generation_reason']);
  assert.is(text.generation_reason, 'first attach');
  assert.is(text.block_size, '65536');
  assert.is(text.device_capacity, String(16 * MiB), 'bytes, as upstream documents');
  assert.is(text.block_count, '256');
  assert.match(text.generation_id as string, UUID);
  assert.is(text.changes_number, '0');
  const json = JSON.parse(await daemon.ok(['cbtinfo', '-d', daemon.file('v1.img'), '--json']));
  assert.equal(Object.fromEntries(Object.entries(json).map(([k, v]) => [k, String(v)])), text);
});

test('snapshot cycle: create (multitoken -d), collect, add, take, info, waitevent, status, destroy', async () => {
  await daemon.ok(['attach', '-d', 'v3.img']);
  const id = (await daemon.ok(['snapshot_create', '-d', 'v1.img', 'two', '-f', daemon.dir, '-l', '64M'])).trim();
  assert.match(id, UUID, 'snapshot_create prints the bare id, as upstream');
  assert.ok((await daemon.ok(['snapshot_collect'])).split('\n').includes(id), 'one bare id per line, as upstream');
  assert.ok(JSON.parse(await daemon.ok(['snapshot_collect', '-j'])).ids.includes(id));

  assert.is(await daemon.ok(['snapshot_add', '-i', id, '-d', 'v3.img']), '', 'snapshot_add prints nothing');
  assert.equal(JSON.parse(await daemon.ok(['snapshot_take', '-i', id, '-j'])), {});

  // The image's NBD URI, when the NBD frontend is built in.
  const image_nbd = HAS_NBD ? `nbd+unix:///v3.img%40${id}?socket=${daemon.nbd_socket}` : '';
  const info = keyValues(await daemon.ok(['snapshot_info', '-d', 'v3.img']));
  assert.equal(info, { error_code: '0', image: '', nbd: image_nbd, snapshot_id: id });
  assert.is(await daemon.ok(['snapshot_info', '-d', 'v3.img', '-f', 'error_code']), '0\n');
  assert.equal(JSON.parse(await daemon.ok(['snapshot_info', '-d', 'v3.img', '-f', 'snapshot_id', '-j'])), { snapshot_id: id });
  assert.equal(JSON.parse(await daemon.ok(['snapshot_info', '-d', 'v3.img', '-j'])), { error_code: 0, image: '', nbd: image_nbd, snapshot_id: id });

  // The storage starts empty and grows at take: low_space (requested_nr_sect=), then grown (capacity_sectors=).
  // Events upstream lacks come with --all-events only.
  const first = keyValues(await daemon.ok(['snapshot_waitevent', '-i', id, '-t', '5000', '--all-events']));
  assert.is(first.result, 'ok');
  assert.match(first.time as string, /^\d{13}$/);
  assert.ok(['low_space', 'grown'].includes(first.event as string), first.event);
  if (first.event === 'low_space') assert.match(first.requested_nr_sect as string, /^\d+$/);
  for (let round = 0; round < 10; round += 1) {
    const next = JSON.parse(await daemon.ok(['snapshot_waitevent', '-i', id, '-t', '500', '-j', '--all-events']));
    if (next.result === 'timeout') break;
    assert.ok(['low_space', 'grown'].includes(next.event), next.event);
    assert.type(next.time, 'number');
  }
  assert.equal(keyValues(await daemon.ok(['snapshot_waitevent', '-i', id, '-t', '50'])), { result: 'timeout' });
  assert.equal(JSON.parse(await daemon.ok(['snapshot_waitevent', '-i', id, '-t', '0', '-j'])), { result: 'timeout' });

  const status = await daemon.ok(['status']);
  assert.match(status, /^version=/m);
  assert.match(status, new RegExp(`^volume=v1\\.img path=${daemon.file('v1.img')} kind=file capacity_sectors=32768 size="16 MiB" snapshot=${id}`, 'm'));
  assert.match(status, new RegExp(`^snapshot=${id} state=taken error_code=0 volumes=v1\\.img,two,v3\\.img .* limit_sectors=131072 fill=0\\.0%$`, 'm'));
  assert.match(status, new RegExp(`^diff_area=two@${id} chunk_bytes=65536 chunk_count=128 `, 'm'));
  // tmpfs does not clone: the copy path, and why (engine/cow-path.ts).
  assert.match(status, new RegExp(`^diff_area=two@${id} .* cbw=copy cloned=0 copied=\\d+ cbw_reason="the filesystem does not clone ranges \\(E[A-Z]+\\)"$`, 'm'));
  assert.match(status, /^workers=threads cow=\d+ image=\d+ store=\d+$/m);
  if (HAS_NBD) assert.match(status, new RegExp(`^frontend=nbd listening=${daemon.nbd_socket} connections=0`, 'm'));
  else assert.match(status, /^frontend=none$/m);
  const json = JSON.parse(await daemon.ok(['status', '-j']));
  assert.is(json.daemon.socket, daemon.socket);
  assert.equal(json.volumes.map((v: { name: string }) => v.name), ['v1.img', 'two', 'v3.img']);
  assert.is(json.snapshots[0].id, id);
  assert.is(json.snapshots[0].storage.limit_sectors, 131072);
  assert.equal(json.frontends.map((frontend: { kind: string }) => frontend.kind), BUILTIN_FRONTENDS.map((factory) => factory.kind));
  const ublk_frontend = json.frontends.find((frontend: { kind: string }) => frontend.kind === 'ublk');
  if (ublk_frontend !== undefined && !existsSync('/dev/ublk-control')) {
    assert.is(ublk_frontend.details.available, false, 'without ublk_drv the frontend says it is unavailable');
    assert.match(ublk_frontend.details.reason, /modprobe ublk_drv|has no ublk_drv/);
  }

  assert.is(await daemon.ok(['snapshot_destroy', '-i', id]), '');
  assert.equal(keyValues(await daemon.ok(['snapshot_info', '-d', 'v3.img'])), { error_code: '0', image: '', nbd: '', snapshot_id: '' });
  assert.not.ok((await daemon.ok(['snapshot_collect'])).includes(id));
});

test('snapshot_watcher --all-events: streams events and ends with the snapshot', async () => {
  const id = (await daemon.ok(['snapshot_create', '-d', 'v3.img', '-f', daemon.dir, '-l', '16M'])).trim();
  await daemon.ok(['snapshot_take', '-i', id]);
  const watcher = daemon.cli(['snapshot_watcher', '-i', id, '--all-events']);
  const watcher_json = daemon.cli(['snapshot_watcher', '-i', id, '-j', '--all-events']);
  // Both watchers must be waiting before the destroy; give their processes time to connect.
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const status = JSON.parse(await daemon.ok(['status', '-j']));
    if (status.daemon.ipc_requests_in_flight >= 3) break; // two waits + this status
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await daemon.ok(['snapshot_destroy', '-i', id]);
  const [text, json] = await Promise.all([watcher, watcher_json]);
  assert.is(text.code, 0, text.stderr);
  assert.is(json.code, 0, json.stderr);
  // Growth events of the take may come first (each to one watcher); the last
  // event of a snapshot reaches every waiter, as the engine's queue does.
  const lines = text.stdout.trim().split('\n');
  for (const line of lines) assert.match(line, /^time=\d+ event=(low_space|grown|destroyed)( \w+=\d+)*$/);
  assert.match(lines.at(-1) as string, /^time=\d+ event=destroyed$/);
  const events = json.stdout.trim().split('\n').map((line) => JSON.parse(line));
  assert.is(events.at(-1).event, 'destroyed');
  assert.type(events.at(-1).time, 'number');
});

test('readcbtmap and markdirtyblock: the map bytes reach the file', async () => {
  // Take 1 (changes_number 0) then destroy; marks after it carry number 1; take 2 freezes them.
  let id = (await daemon.ok(['snapshot_create', '-d', 'v1.img', '-f', daemon.dir, '-l', '16M'])).trim();
  await daemon.ok(['snapshot_take', '-i', id]);
  await daemon.ok(['snapshot_destroy', '-i', id]);
  // Multitoken -r and a repeated -r: blocks 0, 10 and 20..21 (64 KiB = 128-sector blocks).
  assert.is(await daemon.ok(['markdirtyblock', '-d', 'v1.img', '-r', '0:8', '1280:128', '-r', '2560:129']), '');
  id = (await daemon.ok(['snapshot_create', '-d', 'v1.img', '-f', daemon.dir, '-l', '16M'])).trim();
  await daemon.ok(['snapshot_take', '-i', id]);
  // Earlier tests took v1.img too: the marks carry whatever number this take reports.
  const changes_number = Number(keyValues(await daemon.ok(['cbtinfo', '-d', 'v1.img'])).changes_number);
  assert.ok(changes_number >= 1);

  assert.is(await daemon.ok(['readcbtmap', '-d', 'v1.img', '-f', 'map.bin']), '', 'readcbtmap prints nothing');
  const map = readFileSync(daemon.file('map.bin'));
  assert.is(map.length, 256);
  const marked = [...map.entries()].filter(([, value]) => value !== 0).map(([block, value]) => `${block}:${value}`);
  assert.equal(marked, [0, 10, 20, 21].map((block) => `${block}:${changes_number}`));

  const json = JSON.parse(await daemon.ok(['readcbtmap', '-d', 'v1.img', '-f', daemon.file('map2.bin'), '-j']));
  assert.is(json.file, daemon.file('map2.bin'));
  assert.is(json.block_count, 256);
  assert.is(json.changes_number, changes_number);
  assert.equal(readFileSync(daemon.file('map2.bin')), map);
  const to_stdout = await runNode(CLI_PATH, ['--socket', daemon.socket, 'readcbtmap', '-d', 'v1.img', '-f', '-'], { cwd: daemon.dir });
  assert.is(to_stdout.code, 0, to_stdout.stderr);
  assert.is(Buffer.from(to_stdout.stdout, 'latin1').length, 256);
  assert.is(statSync(daemon.file('map.bin')).mode & 0o777, 0o644);
  await daemon.ok(['snapshot_destroy', '-i', id]);
});

test('detach: by name and by path, text and JSON', async () => {
  assert.is(await daemon.ok(['detach', '-d', 'two']), '');
  assert.equal(JSON.parse(await daemon.ok(['detach', '-d', daemon.file('v3.img'), '-j'])), {});
  const volumes = JSON.parse(await daemon.ok(['status', '-j'])).volumes.map((v: { name: string }) => v.name);
  assert.equal(volumes, ['v1.img']);
});

test('detach --force destroys the snapshot that holds the volume', async () => {
  const id = (await daemon.ok(['snapshot_create', '-d', 'v1.img', '-f', daemon.dir, '-l', '16M'])).trim();
  await daemon.ok(['snapshot_take', '-i', id]);
  await daemon.ok(['detach', '-d', 'v1.img', '--force']);
  assert.is(await daemon.ok(['snapshot_collect']), '');
});

test('--help: overall and for every command, exit 0 and a usage line', async () => {
  const overall = await runNode(CLI_PATH, ['--help']);
  assert.is(overall.code, 0);
  for (const command of COMMANDS) assert.match(overall.stdout, new RegExp(`^  ${command.name} `, 'm'));
  for (const command of COMMANDS) {
    const result = await runNode(CLI_PATH, [command.name, '--help']);
    assert.is(result.code, 0, `${command.name} --help`);
    assert.match(result.stdout, new RegExp(`^Usage: ublksnap ${command.name}`));
    assert.match(result.stdout, /--json/);
  }
  const daemon_help = await runNode(CLI_PATH, ['daemon', '--help']);
  assert.is(daemon_help.code, 0);
  assert.match(daemon_help.stdout, /--nbd-listen/);
});

test.run();

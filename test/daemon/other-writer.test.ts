// Goal: a process that writes an attached volume file directly, bypassing
// the exports, is noticed: the daemon logs it, the snapshot holding the
// volume breaks (snapshot_info error_code=5, a `corrupted` event) and the
// CBT starts a new generation whose generation_reason says why. A process
// that only reads the file breaks nothing, and the watch comes back once it
// has closed the file; attaching the same file again by another path (a
// symlink) is refused without opening it. The writer is held up only briefly (the lease break
// is answered at once, not after the kernel's 45 s lease-break-time).
// Method: a real daemon (which holds a write lease on each file volume),
// real `cat` and `dd` processes as the reader and the writer, the real CLI
// to look at snapshot state and CBT, the daemon's log for the watch's
// messages.

import { spawn } from 'node:child_process';
import { symlinkSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { disposeDaemon, hardTimeout, keyValues, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';

const MiB = 1 << 20;
const EIO = 5;
/** The writer's open waits for the daemon's main loop to answer the break: far below lease-break-time (45 s). */
const WRITER_WAIT_MS_MAX = 10_000;
/** The watch re-arms within its check interval (1 s); generous for a loaded machine. */
const REARM_WAIT_MS = 15_000;
const WRITER_REASON = 'another process opened the volume file for writing, bypassing the exports';
let daemon: TestDaemon;

hardTimeout(120_000, 'daemon/other-writer');

test.before(async () => {
  daemon = await startDaemon('other-writer');
  sparseFile(daemon.file('vol.img'), 8 * MiB);
});

test.after(async () => {
  await disposeDaemon(daemon);
});

function run(command: string, args: string[]): Promise<{ code: number | null; elapsed_ms: number; stderr: string }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    child.on('close', (code) => resolve({ code, elapsed_ms: Date.now() - started, stderr }));
  });
}

async function waitForLog(text: string, after: number, timeout_ms: number): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  while (!daemon.logs.slice(after).includes(text)) {
    if (Date.now() > deadline) throw new Error(`the daemon never logged "${text}":\n${daemon.logs.slice(after)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test('a reader breaks nothing; a direct writer breaks the snapshot and resets the CBT generation', async () => {
  await daemon.ok(['attach', '-d', 'vol.img', '--name', 'vol']);
  assert.not.match(daemon.logs, /no write lease/, 'the daemon holds a lease on the file');
  const id = (await daemon.ok(['snapshot_create', '-d', 'vol', '-f', `${daemon.dir}/`, '-l', '16M'])).trim();
  await daemon.ok(['snapshot_take', '-i', id]);
  const before = keyValues(await daemon.ok(['cbtinfo', '-d', 'vol']));

  // A reader: nothing written, nothing broken; the watch comes back after it closed.
  let mark = daemon.logs.length;
  const reader = await run('cat', [daemon.file('vol.img')]);
  assert.is(reader.code, 0, reader.stderr);
  assert.is(keyValues(await daemon.ok(['snapshot_info', '-d', 'vol'])).error_code, '0', 'a reader does not break the snapshot');
  assert.is(keyValues(await daemon.ok(['cbtinfo', '-d', 'vol'])).generation_id, before.generation_id);
  await waitForLog('opened the volume file for reading', mark, REARM_WAIT_MS);
  await waitForLog('writes that bypass the exports are noticed again', mark, REARM_WAIT_MS);

  // The same file attached again by another path is found by its identity
  // without being opened (an open would break the daemon's own lease), and
  // answered as upstream does: already attached, exit 0.
  symlinkSync(daemon.file('vol.img'), daemon.file('link.img'));
  const again = await daemon.cli(['attach', '-d', 'link.img']);
  assert.is(again.code, 0, again.stderr);
  assert.is(keyValues(again.stdout).name, 'vol');
  assert.match(again.stderr, /was already attached as vol/);
  assert.is(keyValues(await daemon.ok(['snapshot_info', '-d', 'vol'])).error_code, '0', 'the second attach broke nothing');

  // A writer that bypasses the exports.
  mark = daemon.logs.length;
  const writer = await run('dd', ['if=/dev/urandom', `of=${daemon.file('vol.img')}`, 'bs=4096', 'count=1', 'seek=3', 'conv=notrunc', 'status=none']);
  assert.is(writer.code, 0, writer.stderr);
  console.log(`  the writer's dd took ${writer.elapsed_ms} ms (lease break answered by the daemon)`);
  assert.ok(writer.elapsed_ms < WRITER_WAIT_MS_MAX, `the writer waited ${writer.elapsed_ms} ms`);
  await waitForLog(WRITER_REASON, mark, REARM_WAIT_MS);

  const info = keyValues(await daemon.ok(['snapshot_info', '-d', 'vol']));
  assert.is(info.error_code, String(EIO), 'the snapshot is broken');
  // Events queue in order (a low_space came at take): the corrupted one follows
  // (--all-events: its error_code, which upstream's keys lack).
  const events: string[] = [];
  for (let event = ''; event !== 'corrupted' && events.length < 5;) {
    const reply = keyValues(await daemon.ok(['snapshot_waitevent', '-i', id, '-t', '1000', '--all-events']));
    event = reply.event ?? reply.result ?? '';
    events.push(event);
    if (event === 'corrupted') assert.is(reply.error_code, String(EIO));
  }
  assert.is(events.at(-1), 'corrupted', `events: ${events.join(', ')}`);
  const after = keyValues(await daemon.ok(['cbtinfo', '-d', 'vol']));
  assert.is.not(after.generation_id, before.generation_id, 'a new CBT generation');
  assert.is(after.generation_reason, WRITER_REASON);
  await daemon.ok(['snapshot_destroy', '-i', id]);
  await daemon.ok(['detach', '-d', 'vol']);
});

test.run();

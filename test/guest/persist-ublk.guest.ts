// Goal: a volume attached with --ublk comes back after a clean daemon
// restart as a ublk device again, with its data and its change tracking
// (generation, changes number, both map copies), so a backup tool's next
// incremental over the device's writes is still incremental.
// Method: a standalone program run in the guest (test/vm/guest-driver.sh):
// a real daemon (test/lib/daemon.ts) on a file in /dev/shm; writes with dd
// (O_DIRECT) to /dev/ublkbN between takes; SIGTERM and a new daemon on
// the same state dir; status names the new device; the data reads back;
// cbtinfo and readcbtmap match. Each check prints one ok/FAIL line.
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/persist-ublk.guest.js

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { disposeDaemon, keyValues, sparseFile, startDaemon, type TestDaemon } from '../lib/daemon';
import {
  expect, GUEST_CLI_TIMEOUT_MS, GUEST_DAEMON_START_TIMEOUT_MS, GUEST_TOOL_TIMEOUT_MS, log, sh, stepRunner,
} from '../lib/guest-program';

const MIB = 1024 * 1024;
const VOLUME_BYTES = 32 * MIB;
const BLOCK_BYTES = 64 * 1024;
/** Node starts 6-8× slower under TCG: every CLI call and the daemon's start get room. */
const CLI_TIMEOUT_MS = GUEST_CLI_TIMEOUT_MS;
const DAEMON_START_TIMEOUT_MS = GUEST_DAEMON_START_TIMEOUT_MS;
const TOOL_TIMEOUT_MS = GUEST_TOOL_TIMEOUT_MS;

let daemon: TestDaemon | undefined;




const step = stepRunner(() => daemon, () => disposeDaemon(daemon));

async function cli(args: string[]): Promise<string> {
  return daemon!.ok(args, { timeout_ms: CLI_TIMEOUT_MS });
}

async function takeAndDrop(): Promise<void> {
  const id = (await cli(['snapshot_create', '-d', 'vol', '-f', daemon!.dir, '-l', '16M'])).trim();
  await cli(['snapshot_take', '-i', id]);
  await cli(['snapshot_destroy', '-i', id]);
}

function writeBlock(device: string, offset: number, file: string): void {
  sh('dd', [`if=${file}`, `of=${device}`, `bs=${BLOCK_BYTES}`, 'count=1', `seek=${offset / BLOCK_BYTES}`, 'oflag=direct', 'conv=notrunc', 'status=none']);
}

function readBlock(device: string, offset: number): Buffer {
  return execFileSync('dd', [`if=${device}`, `bs=${BLOCK_BYTES}`, 'count=1', `skip=${offset / BLOCK_BYTES}`, 'iflag=direct', 'status=none'], { timeout: TOOL_TIMEOUT_MS });
}

async function ublkDeviceOf(name: string): Promise<string> {
  const status = JSON.parse(await cli(['status', '-j'])) as { frontends: { kind: string; details?: Record<string, string> }[] };
  const detail = status.frontends.find((frontend) => frontend.kind === 'ublk')?.details?.[name] ?? '';
  return detail.split(' ')[0] ?? '';
}

async function main(): Promise<void> {
  sh('modprobe', ['ublk_drv']);
  daemon = await startDaemon('persist-ublk', { log_level: 'info', start_timeout_ms: DAEMON_START_TIMEOUT_MS });
  const volume = sparseFile(daemon.file('vol.img'), VOLUME_BYTES);
  const data = daemon.file('block.bin');
  writeFileSync(data, randomBytes(BLOCK_BYTES));
  let device = '';
  let before: Record<string, string> = {};
  let map_before = Buffer.alloc(0);

  await step('attach --ublk, writes to the device around a take', async () => {
    device = keyValues(await cli(['attach', '-d', volume, '--name', 'vol', '--ublk'])).ublk ?? '';
    expect(/^\/dev\/ublkb\d+$/.test(device) && existsSync(device), `ublk=${device}`);
    await takeAndDrop();
    writeBlock(device, 1 * MIB, data);
    await takeAndDrop();
    writeBlock(device, 3 * MIB, data);
    before = keyValues(await cli(['cbtinfo', '-d', 'vol']));
    expect(before.changes_number === '1', `changes_number=${before.changes_number}`);
    await cli(['readcbtmap', '-d', 'vol', '-f', daemon!.file('before.cbt')]);
    map_before = readFileSync(daemon!.file('before.cbt'));
    expect(map_before[MIB / BLOCK_BYTES] === 1, 'the write between the takes is in the map');
  });

  await step('clean restart: the volume is a ublk device again, with its data', async () => {
    const exit = await daemon!.stop('SIGTERM');
    expect(exit.code === 0, `daemon exit ${JSON.stringify(exit)}`);
    await daemon!.start({ log_level: 'info', start_timeout_ms: DAEMON_START_TIMEOUT_MS });
    device = await ublkDeviceOf('vol');
    expect(/^\/dev\/ublkb\d+$/.test(device) && existsSync(device), `status names ${JSON.stringify(device)} for vol`);
    expect(readBlock(device, 3 * MIB).equals(readFileSync(data)), 'the block written before the restart reads back');
  });

  await step('clean restart: CBT generation, changes number and map kept; the next take sees the last write', async () => {
    const after = keyValues(await cli(['cbtinfo', '-d', 'vol']));
    expect(JSON.stringify(after) === JSON.stringify(before), `cbtinfo ${JSON.stringify(after)} != ${JSON.stringify(before)}`);
    await cli(['readcbtmap', '-d', 'vol', '-f', daemon!.file('after.cbt')]);
    expect(readFileSync(daemon!.file('after.cbt')).equals(map_before), 'the map is the same');
    await takeAndDrop();
    await cli(['readcbtmap', '-d', 'vol', '-f', daemon!.file('next.cbt')]);
    const next = readFileSync(daemon!.file('next.cbt'));
    expect(next[3 * MIB / BLOCK_BYTES] === 2, `the write after take 1 is marked ${next[3 * MIB / BLOCK_BYTES]}, not 2`);
  });

  // Detach forgetting the record across a restart is checked on the host (test/daemon/persist.test.ts):
  // one more restart here would cost two minutes of the guest program's budget.
  await step('detach removes the device', async () => {
    await cli(['detach', '-d', 'vol']);
    expect(!existsSync(device), `${device} is still there after detach`);
    const record = JSON.parse(readFileSync(`${daemon!.state_dir}/volumes.json`, 'utf8')) as { volumes: unknown[] };
    expect(record.volumes.length === 0, `volumes.json still records ${JSON.stringify(record.volumes)}`);
  });

  await disposeDaemon(daemon);
  log('persist-ublk: all ok');
}

main().catch(async (error: unknown) => {
  log(`FAIL - unexpected: ${(error as Error).stack ?? String(error)}`);
  await disposeDaemon(daemon);
  process.exit(1);
});

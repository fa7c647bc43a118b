// Goal: on a kernel without ublk (our hosts and CI), the native ublk layer
// says so clearly and never crashes: ublkControlAvailable() reports the
// modprobe message, every control command rejects with code ENOENT and that
// message, UblkQueue fails with ENOENT on /dev/ublkcN; a bad argument to any
// of them is a synchronous TypeError naming the function. The UAPI structs
// the addon was built with have the documented sizes, and the constants the
// documented values.
// Method: call everything with good and bad arguments on this host; the
// suite that needs ublk to be absent skips itself where /dev/ublk-control
// exists (the guest test, test/guest/native-queue.guest.ts, covers that case).

import { existsSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as ublk from '../../src/native/ublk';
import { thrownBy } from '../lib/system';

const TIMEOUT_MS = 1000;
const DEPTH = 4;
const SLOT_BYTES = 4096;
const GOOD_SPEC = { queue_count: 1, queue_depth: DEPTH, max_io_bytes: SLOT_BYTES, flags: 0n };
const GOOD_PARAMS: ublk.UblkParams = {
  capacity_sectors: 2048, logical_block_shift: 9, physical_block_shift: 12, io_min_shift: 9, io_opt_shift: 12,
  max_sectors: 8, read_only: false, volatile_cache: true, fua: true,
  discard: { granularity_bytes: 4096, alignment_bytes: 0, max_discard_sectors: 2048, max_write_zeroes_sectors: 0,
    max_discard_segments: 1 },
};
const ublk_absent = !existsSync('/dev/ublk-control');

type Call = (...args: unknown[]) => unknown;

function goodQueueOptions(): Record<string, unknown> {
  return {
    dev_id: 0, queue_id: 0, queue_depth: DEPTH, slot_bytes: SLOT_BYTES,
    buffer: new SharedArrayBuffer(DEPTH * SLOT_BYTES), buffer_offset_bytes: 0,
    requests: new Int32Array(DEPTH * ublk.REQUEST_WORDS),
  };
}

/** call(...args) throws a TypeError at once (not a rejected Promise) naming name. */
function expectTypeError(name: string, call: Call, args: unknown[], label: string): void {
  const error = thrownBy(() => call(...args));
  assert.instance(error, TypeError, `${name} with ${label}: expected a TypeError, got ${String(error)}`);
  assert.ok((error as Error).message.includes(name), `${name} with ${label}: message names it: ${(error as Error).message}`);
}

async function expectUnavailable(label: string, promise: Promise<unknown>): Promise<void> {
  const error = await promise.then(() => undefined, (e: unknown) => e) as { code?: string; errno?: number; syscall?: string; message?: string };
  assert.ok(error !== undefined, `${label}: rejected`);
  assert.is(error.code, 'ENOENT', `${label}: code`);
  assert.is(error.errno, 2, `${label}: errno`);
  assert.is(error.syscall, 'open', `${label}: syscall`);
  assert.is(error.message, ublk.UBLK_UNAVAILABLE_MESSAGE, `${label}: message`);
}

const absent = suite('without the ublk driver');

absent('ublkControlAvailable() explains how to get ublk', () => {
  if (!ublk_absent) return;
  const availability = ublk.ublkControlAvailable();
  assert.equal(availability, { available: false, reason: ublk.UBLK_UNAVAILABLE_MESSAGE, code: 'ENOENT' });
  assert.match(ublk.UBLK_UNAVAILABLE_MESSAGE, 'modprobe ublk_drv');
});

absent('every control command rejects with ENOENT and the same message', async () => {
  if (!ublk_absent) return;
  await expectUnavailable('ublkGetFeatures', ublk.ublkGetFeatures(TIMEOUT_MS));
  await expectUnavailable('ublkAddDevice', ublk.ublkAddDevice(GOOD_SPEC, TIMEOUT_MS));
  await expectUnavailable('ublkAddDevice dev_id -1', ublk.ublkAddDevice({ ...GOOD_SPEC, dev_id: -1 }, TIMEOUT_MS));
  await expectUnavailable('ublkGetDeviceInfo', ublk.ublkGetDeviceInfo(0, TIMEOUT_MS));
  await expectUnavailable('ublkSetParams', ublk.ublkSetParams(0, GOOD_PARAMS, TIMEOUT_MS));
  await expectUnavailable('ublkStartDevice', ublk.ublkStartDevice(0, TIMEOUT_MS));
  await expectUnavailable('ublkStopDevice', ublk.ublkStopDevice(0, TIMEOUT_MS));
  await expectUnavailable('ublkDeleteDevice', ublk.ublkDeleteDevice(0, TIMEOUT_MS));
  await expectUnavailable('ublkStartUserRecovery', ublk.ublkStartUserRecovery(0, TIMEOUT_MS));
  await expectUnavailable('ublkEndUserRecovery', ublk.ublkEndUserRecovery(0, TIMEOUT_MS));
});

absent('UblkQueue fails to open /dev/ublkcN with ENOENT', () => {
  if (!ublk_absent) return;
  const error = thrownBy(() => new ublk.UblkQueue(goodQueueOptions() as unknown as ublk.UblkQueueOptions)) as
    { code?: string; syscall?: string; message?: string };
  assert.is(error.code, 'ENOENT');
  assert.is(error.syscall, 'open');
  assert.match(error.message ?? '', '/dev/ublkc0');
});

absent('UblkQueue on a native thread reports the same ENOENT (the thread opens, fails, is joined)', () => {
  if (!ublk_absent) return;
  const options = { ...goodQueueOptions(), native_thread: true };
  const error = thrownBy(() => new ublk.UblkQueue(options as unknown as ublk.UblkQueueOptions)) as
    { code?: string; syscall?: string; message?: string };
  assert.is(error.code, 'ENOENT');
  assert.is(error.syscall, 'open');
  assert.match(error.message ?? '', '/dev/ublkc0');
});

absent.run();

const bad = suite('bad arguments are TypeErrors');

const BAD_TIMEOUTS: unknown[] = [undefined, null, '1000', 0, -1, 1.5, NaN, Infinity, 2 ** 31, 1000n];
const BAD_DEV_IDS: unknown[] = [undefined, null, '0', -1, 1.5, NaN, 2 ** 31, 0n];

bad('commands taking (dev_id, timeout_ms)', () => {
  const commands: Array<[string, Call]> = [
    ['ublkGetDeviceInfo', ublk.ublkGetDeviceInfo as Call], ['ublkStartDevice', ublk.ublkStartDevice as Call],
    ['ublkStopDevice', ublk.ublkStopDevice as Call], ['ublkDeleteDevice', ublk.ublkDeleteDevice as Call],
    ['ublkStartUserRecovery', ublk.ublkStartUserRecovery as Call],
    ['ublkEndUserRecovery', ublk.ublkEndUserRecovery as Call],
  ];
  for (const [name, call] of commands) {
    expectTypeError(name, call, [], 'no arguments');
    expectTypeError(name, call, [0], 'one argument');
    for (const value of BAD_DEV_IDS) expectTypeError(name, call, [value, TIMEOUT_MS], `dev_id ${String(value)}`);
    for (const value of BAD_TIMEOUTS) expectTypeError(name, call, [0, value], `timeout ${String(value)}`);
  }
  for (const value of BAD_TIMEOUTS) {
    expectTypeError('ublkGetFeatures', ublk.ublkGetFeatures as Call, [value], `timeout ${String(value)}`);
  }
});

bad('ublkAddDevice', () => {
  const call = ublk.ublkAddDevice as Call;
  const specs: Array<[string, unknown]> = [
    ['null', null], ['a number', 1], ['an array', []], ['no flags', { ...GOOD_SPEC, flags: undefined }],
    ['flags a number', { ...GOOD_SPEC, flags: 0 }], ['flags negative', { ...GOOD_SPEC, flags: -1n }],
    ['flags 2^64', { ...GOOD_SPEC, flags: 2n ** 64n }], ['queue_count 0', { ...GOOD_SPEC, queue_count: 0 }],
    ['queue_depth 0', { ...GOOD_SPEC, queue_depth: 0 }], ['queue_depth 4097', { ...GOOD_SPEC, queue_depth: 4097 }],
    ['max_io_bytes 1000', { ...GOOD_SPEC, max_io_bytes: 1000 }], ['max_io_bytes 0', { ...GOOD_SPEC, max_io_bytes: 0 }],
    ['dev_id -2', { ...GOOD_SPEC, dev_id: -2 }], ['dev_id 1.5', { ...GOOD_SPEC, dev_id: 1.5 }],
  ];
  for (const [label, spec] of specs) expectTypeError('ublkAddDevice', call, [spec, TIMEOUT_MS], label);
  for (const value of BAD_TIMEOUTS) expectTypeError('ublkAddDevice', call, [GOOD_SPEC, value], `timeout ${String(value)}`);
  const trap = new Error('getter trap');
  const trapping = { ...GOOD_SPEC, get queue_depth(): number { throw trap; } };
  assert.is(thrownBy(() => call(trapping, TIMEOUT_MS)), trap, 'a throwing getter propagates its error');
});

bad('ublkSetParams', () => {
  const call = ublk.ublkSetParams as Call;
  const params: Array<[string, unknown]> = [
    ['null', null], ['missing capacity', { ...GOOD_PARAMS, capacity_sectors: undefined }],
    ['logical shift 8', { ...GOOD_PARAMS, logical_block_shift: 8 }],
    ['io_opt_shift 40', { ...GOOD_PARAMS, io_opt_shift: 40 }], ['max_sectors 0', { ...GOOD_PARAMS, max_sectors: 0 }],
    ['read_only 1', { ...GOOD_PARAMS, read_only: 1 }], ['fua missing', { ...GOOD_PARAMS, fua: undefined }],
    ['discard a number', { ...GOOD_PARAMS, discard: 1 }],
    ['discard segments 2^16', { ...GOOD_PARAMS, discard: { ...GOOD_PARAMS.discard, max_discard_segments: 2 ** 16 } }],
    ['discard granularity missing', { ...GOOD_PARAMS, discard: { ...GOOD_PARAMS.discard, granularity_bytes: undefined } }],
  ];
  for (const [label, value] of params) expectTypeError('ublkSetParams', call, [0, value, TIMEOUT_MS], label);
  expectTypeError('ublkSetParams', call, [0, GOOD_PARAMS], 'two arguments');
});

bad('new UblkQueue', () => {
  const make = (options: unknown): unknown => new ublk.UblkQueue(options as ublk.UblkQueueOptions);
  const cases: Array<[string, unknown]> = [
    ['undefined', undefined], ['null', null], ['a number', 3],
    ['an unknown key', { ...goodQueueOptions(), drect: true }],
    ['queue_depth 0', { ...goodQueueOptions(), queue_depth: 0 }],
    ['slot_bytes 1000', { ...goodQueueOptions(), slot_bytes: 1000 }],
    ['buffer too small', { ...goodQueueOptions(), buffer: new SharedArrayBuffer(SLOT_BYTES) }],
    ['buffer offset past the end', { ...goodQueueOptions(), buffer_offset_bytes: SLOT_BYTES }],
    ['buffer a string', { ...goodQueueOptions(), buffer: 'slots' }],
    ['requests too short', { ...goodQueueOptions(), requests: new Int32Array(DEPTH) }],
    ['requests a Uint32Array', { ...goodQueueOptions(), requests: new Uint32Array(DEPTH * ublk.REQUEST_WORDS) }],
    ['flags a number', { ...goodQueueOptions(), flags: 64 }],
    ['native_thread a string', { ...goodQueueOptions(), native_thread: 'yes' }],
  ];
  for (const [label, options] of cases) expectTypeError('UblkQueue', make, [options], label);
  // node-addon-api refuses it with its own wording, before our code runs.
  const NativeQueue = Object.getPrototypeOf(ublk.UblkQueue) as Call;
  assert.instance(thrownBy(() => NativeQueue(goodQueueOptions())), TypeError, 'a call without new');
});

bad.run();

const layout = suite('UAPI layout and constants');

layout('struct sizes and opcodes are the documented ones', () => {
  assert.equal(ublk.ublkLayoutSizes(), {
    ctrl_cmd: 32, ctrl_dev_info: 64, io_desc: 24, io_cmd: 16, param_basic: 32, param_discard: 20, param_devt: 16,
    params_set_bytes: 60, add_dev_opcode: 0xc0207504, fetch_req_opcode: 0xc0107520,
  });
});

layout('flags, states, ops and record words', () => {
  const flags = [ublk.UBLK_F_SUPPORT_ZERO_COPY, ublk.UBLK_F_URING_CMD_COMP_IN_TASK, ublk.UBLK_F_NEED_GET_DATA,
    ublk.UBLK_F_USER_RECOVERY, ublk.UBLK_F_USER_RECOVERY_REISSUE, ublk.UBLK_F_UNPRIVILEGED_DEV,
    ublk.UBLK_F_CMD_IOCTL_ENCODE, ublk.UBLK_F_USER_COPY];
  flags.forEach((flag, bit) => assert.is(flag, 1n << BigInt(bit)));
  assert.equal([ublk.UBLK_S_DEV_DEAD, ublk.UBLK_S_DEV_LIVE, ublk.UBLK_S_DEV_QUIESCED], [0, 1, 2]);
  assert.equal([ublk.UBLK_IO_OP_READ, ublk.UBLK_IO_OP_WRITE, ublk.UBLK_IO_OP_FLUSH, ublk.UBLK_IO_OP_DISCARD,
    ublk.UBLK_IO_OP_WRITE_ZEROES], [0, 1, 2, 3, 5]);
  assert.is(ublk.UBLK_IO_F_FUA, 1 << 13);
  assert.is(ublk.UBLK_IO_F_NOUNMAP, 1 << 15);
  const words = [ublk.REQUEST_TAG, ublk.REQUEST_OP, ublk.REQUEST_FLAGS, ublk.REQUEST_NR_SECTORS,
    ublk.REQUEST_START_SECTOR_LOW, ublk.REQUEST_START_SECTOR_HIGH];
  assert.is(new Set(words).size, words.length, 'record words are distinct');
  for (const word of words) assert.ok(word >= 0 && word < ublk.REQUEST_WORDS);
});

layout('setIoFlusher answers with a boolean', () => {
  assert.type(ublk.setIoFlusher(), 'boolean');
});

layout.run();

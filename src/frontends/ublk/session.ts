// One ublk queue served inside an I/O actor: the ublk frontend's session
// module (actors/session-contract.ts).
//
//   kernel ─► io_uring CQE (FETCH done: a request in iod[tag]) ─► eventfd ─► this thread's event loop
//          ─► onRequests: per record, queue.submit(tag, …)  (the engine's handler runs at once)
//          ─► completion (microtask) ─► commit(tag, result) ─► one io_uring_enter per batch
//
// Hosting: where the queue's io_uring lives (UBLKSNAP_UBLK_HOSTING, read
// here in the actor; workers copy the daemon's environment at start):
//
//   actor            this thread: the io_uring is created here, so this
//                    thread is the queue's daemon task; the kernel delivers
//                    requests as task work, which runs while the event loop
//                    sleeps in epoll, and only this thread commits
//                    (native/src/ublk-queue.cc).
//   thread (default) a native queue thread owns the io_uring (FETCH, COMMIT)
//                    and passes requests and commits over two SPSC rings,
//                    each with an eventfd doorbell: one this loop polls, one
//                    read by a READ in the thread's own io_uring, so its
//                    io_uring_enter wakes on a request or a commit
//                    (native/src/ublk-queue-thread.h). This file's code is
//                    the same for both.
//
// Why thread is the default (issue 11). Before direct serving, every
// request took the JavaScript path and the hosting made no difference that
// held from one run to the next (two runs, 2026-12-02 02:12 and 02:30,
// thread ÷ actor 0.45-2.47×): the per-request JavaScript was the cost.
// With direct serving, a volume's plain requests never reach JavaScript,
// and what is left is the serving thread's own loop: the native thread
// sleeps in io_uring_enter like ublk-mini, where the actor wakes from
// epoll, reads an eventfd and runs a libuv callback per batch. Measured
// with `UBLKSNAP_UBLK_STATS=1 npm run bench -- --only=ublk`, 2026-12-02
// 08:57, host load 1.7-3.3, 3 rounds, per-round ratios thread ÷ actor:
//
//   no snapshot     4 KiB randread 1.09 1.30 1.40   randwrite 1.19 1.41 1.53   1 MiB write 0.96 0.99 0.97
//   with snapshot   4 KiB randread 1.05 (median)    randwrite 0.62             1 MiB write 0.96
//
// CPU per 4 KiB write in round 1: actor thread 140 µs, native thread
// 107 µs, ublk-mini 104 µs. The no-snapshot case is the common one (a
// snapshot lives for a backup); the cost is the JavaScript path while a
// snapshot is taken (first-touch 4 KiB writes 0.62× the actor's), whose
// requests cross two SPSC rings and two eventfds. bench/README.md "Queue
// hosting" has the tables.
//
// Direct serving: a volume's plain reads, and its writes
// while no snapshot needs copy-before-write, are served by the native queue
// itself (native/src/direct-volume.h) under the volume's write gate, the
// CBT mark included; only the rest reaches serve() below. The JavaScript
// per-request path cost a 4 KiB request 2.5-4× the CPU of a minimal C
// server (bench/README.md "ublk"). Direct serving stops before the session
// ends or hands its queue back, so every later request comes here.
//
// Buffers: tag t's kernel buffer is slot t of the session queue's slab, so
// the kernel copies a write's data straight into the slot the engine reads,
// and a read's data out of the slot the engine filled. No copy in between.
//
// Results: READ and WRITE commit exactly their byte count, everything else
// 0; failures commit −errno from the shared error table's block answers,
// never −EAGAIN (the kernel would fail the request, not retry it).
//
// Ending: close() answers new requests with EIO (the device is going away);
// drain() hands the queue back for the next daemon (user recovery): what
// the engine holds is answered, new requests are left uncommitted — the
// kernel requeues them when the queue's io_uring goes and reissues them to
// the next server (UBLK_F_USER_RECOVERY_REISSUE).

import { IoFlags, IoOp, type RunningSession, type SessionContext, type SessionCounters } from '../../engine/api';
import { blockErrnoOf, ERRNO_BY_CODE, UblksnapError } from '../../shared/errors';
import { notifyGateDrained } from '../../shared/volume-control';
import { SECTOR_BYTES } from '../../shared/units';
import {
  REQUEST_FLAGS, REQUEST_NR_SECTORS, REQUEST_OP, REQUEST_START_SECTOR_HIGH, REQUEST_START_SECTOR_LOW, REQUEST_TAG,
  REQUEST_WORDS, UBLK_IO_F_FUA, UBLK_IO_F_NOUNMAP, UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ,
  UBLK_IO_OP_WRITE, UBLK_IO_OP_WRITE_ZEROES, UblkQueue, setIoFlusher,
} from '../../native/ublk';

/** This module's path, for engine.hostSession. */
export const UBLK_SESSION_MODULE = __filename;

/** What the ublk frontend hands a hosted queue session (SessionDescriptor.payload). */
export interface UblkSessionPayload {
  dev_id: number;
  queue_id: number;
  /** The export's size: requests past it are refused. */
  size_bytes: number;
  /** The flags ADD_DEV granted (they pick the I/O command encoding). */
  flags: bigint;
}

/**
 * Which thread owns a queue's io_uring: 'actor' — this I/O actor's event
 * loop; 'thread' — a native queue thread beside it (ublk-queue-thread.h).
 */
export type UblkHosting = 'actor' | 'thread';
export const UBLK_HOSTINGS: readonly UblkHosting[] = ['actor', 'thread'];
export const UBLK_HOSTING_DEFAULT: UblkHosting = 'thread';
/** The switch, read in the actor (workers copy the daemon's environment at start). */
export const UBLK_HOSTING_ENV = 'UBLKSNAP_UBLK_HOSTING';

/** The hosting the environment asks for; unset or empty gives the default. */
export function ublkHostingFrom(env: NodeJS.ProcessEnv): UblkHosting {
  const value = env[UBLK_HOSTING_ENV];
  if (value === undefined || value === '') return UBLK_HOSTING_DEFAULT;
  if ((UBLK_HOSTINGS as readonly string[]).includes(value)) return value as UblkHosting;
  throw new UblksnapError('EINVAL', `${UBLK_HOSTING_ENV}=${value}: expected one of ${UBLK_HOSTINGS.join(', ')}`);
}

const EIO = ERRNO_BY_CODE.EIO;
const EINVAL = ERRNO_BY_CODE.EINVAL;
const ENOTSUP = ERRNO_BY_CODE.ENOTSUP;
const TWO_POW_32 = 2 ** 32;

export function runSession(context: SessionContext, payload: UblkSessionPayload): RunningSession {
  const hosting = ublkHostingFrom(process.env);
  // Memory reclaim may write back through this very device: this thread
  // must not wait for reclaim that waits for it (PF_MEMALLOC_NOIO).
  if (!setIoFlusher()) context.logger.log('warn', { dev_id: payload.dev_id }, 'PR_SET_IO_FLUSHER refused: reclaim could deadlock on this device');
  const engine_queue = context.queue;
  const depth = engine_queue.depth;
  const size_bytes = payload.size_bytes;
  const requests = new Int32Array(depth * REQUEST_WORDS);
  const slab = engine_queue.slab;
  const ublk = new UblkQueue({
    dev_id: payload.dev_id,
    queue_id: payload.queue_id,
    queue_depth: depth,
    slot_bytes: slab.slot_bytes,
    buffer: slab.data,
    buffer_offset_bytes: slab.data_offset,
    requests,
    flags: payload.flags,
    native_thread: hosting === 'thread',
  });
  const direct = context.directVolume();
  const direct_control = direct === null ? null : new Int32Array(direct.control);
  if (direct !== null) ublk.serveDirect(direct);
  /** Per tag: what a success commits (the byte count for READ and WRITE, else 0). */
  const success_result = new Int32Array(depth);
  const counters: SessionCounters = { requests: 0, errors: 0, bytes_read: 0, bytes_written: 0 };
  let in_flight = 0;
  let submit_scheduled = false;
  let closing = false;
  let handing_back = false;
  let closed = false;
  let finish: (counters: SessionCounters) => void = () => undefined;
  const finished = new Promise<SessionCounters>((resolve) => { finish = resolve; });

  // Opt-in wake-up statistics (UBLKSNAP_UBLK_STATS=1; the ublk bench's
  // --ublk-stats): requests per wake-up and commits per io_uring_enter for
  // the requests JavaScript serves, how many the queue served directly and
  // how many of its direct transfers failed and were redone by JavaScript,
  // logged at info once a second while requests arrive.
  const stats = process.env.UBLKSNAP_UBLK_STATS === '1'
    ? { wakeups: 0, requests: 0, single: 0, submits: 0, commits: 0, since_ms: Date.now(), thread_wakeups_before: 0, direct_before: 0, redone_before: 0, mapped_before: 0 }
    : null;
  const reportStats = (): void => {
    if (stats === null) return;
    const queue_stats = ublk.stats();
    const direct_total = queue_stats.direct_reads + queue_stats.direct_writes;
    if (stats.wakeups === 0 && direct_total === stats.direct_before) return;
    const now = Date.now();
    context.logger.log('info', {
      dev_id: payload.dev_id, hosting, thread_wakeups: queue_stats.wakeups - stats.thread_wakeups_before, seconds: (now - stats.since_ms) / 1000, wakeups: stats.wakeups, requests: stats.requests,
      requests_per_wakeup: Number((stats.requests / Math.max(1, stats.wakeups)).toFixed(2)), single_request_wakeups: stats.single,
      submits: stats.submits, commits_per_submit: Number((stats.commits / Math.max(1, stats.submits)).toFixed(2)),
      direct: direct_total - stats.direct_before, redone: queue_stats.direct_redone - stats.redone_before,
      mapped: queue_stats.direct_mapped_writes - stats.mapped_before, mapped_failed: queue_stats.direct_mapped_failed,
    }, 'ublk queue stats');
    Object.assign(stats, {
      wakeups: 0, requests: 0, single: 0, submits: 0, commits: 0, since_ms: now, thread_wakeups_before: queue_stats.wakeups, direct_before: direct_total, redone_before: queue_stats.direct_redone,
      mapped_before: queue_stats.direct_mapped_writes,
    });
  };
  // Directly served requests never reach serve(): a timer reports them.
  const stats_timer = stats === null ? null : setInterval(reportStats, 1000).unref();

  const submitCommits = (): void => {
    submit_scheduled = false;
    if (stats !== null) {
      stats.submits += 1;
      stats.commits += ublk.stats().unsubmitted;
    }
    ublk.submit();
    if (closing && in_flight === 0) closeNow();
  };

  const commit = (tag: number, result: number): void => {
    ublk.commit(tag, result);
    if (submit_scheduled) return;
    // One io_uring_enter for every commit of this turn.
    submit_scheduled = true;
    queueMicrotask(submitCommits);
  };

  const fail = (tag: number, errno: number): void => {
    counters.errors! += 1;
    commit(tag, -blockErrnoOf(errno));
  };

  engine_queue.onComplete((tag, errno) => {
    in_flight -= 1;
    if (errno !== 0) fail(tag, errno);
    else commit(tag, success_result[tag]!);
  });

  const serve = (count: number, gate_drained: boolean): void => {
    if (gate_drained && direct_control !== null) notifyGateDrained(direct_control);
    // Handing back: these stay with the kernel, uncommitted, for the next daemon.
    if (handing_back) return;
    if (stats !== null) {
      stats.wakeups += 1;
      stats.requests += count;
      if (count === 1) stats.single += 1;
    }
    for (let i = 0; i < count; i += 1) {
      const base = i * REQUEST_WORDS;
      const tag = requests[base + REQUEST_TAG]!;
      const ublk_op = requests[base + REQUEST_OP]!;
      const ublk_flags = requests[base + REQUEST_FLAGS]!;
      let length_bytes = (requests[base + REQUEST_NR_SECTORS]! >>> 0) * SECTOR_BYTES;
      let offset_bytes = ((requests[base + REQUEST_START_SECTOR_HIGH]! >>> 0) * TWO_POW_32 +
        (requests[base + REQUEST_START_SECTOR_LOW]! >>> 0)) * SECTOR_BYTES;
      counters.requests! += 1;
      if (closing || !context.isLive()) {
        // A detached volume or a destroyed image: its holders get EIO, never stale data.
        fail(tag, EIO);
        continue;
      }
      let op: IoOp;
      let flags: number = IoFlags.NONE;
      success_result[tag] = 0;
      switch (ublk_op) {
        case UBLK_IO_OP_READ:
          op = IoOp.READ;
          success_result[tag] = length_bytes;
          counters.bytes_read! += length_bytes;
          break;
        case UBLK_IO_OP_WRITE:
          op = IoOp.WRITE;
          success_result[tag] = length_bytes;
          counters.bytes_written! += length_bytes;
          if ((ublk_flags & UBLK_IO_F_FUA) !== 0) flags = IoFlags.FUA;
          break;
        case UBLK_IO_OP_FLUSH:
          // A flush addresses no range: the kernel leaves its sector undefined (all ones seen).
          op = IoOp.FLUSH;
          offset_bytes = 0;
          length_bytes = 0;
          break;
        case UBLK_IO_OP_DISCARD:
          op = IoOp.DISCARD;
          break;
        case UBLK_IO_OP_WRITE_ZEROES:
          op = IoOp.WRITE_ZEROES;
          // Like the loop driver: punch unless the caller forbade unmapping.
          if ((ublk_flags & UBLK_IO_F_NOUNMAP) === 0) flags = IoFlags.MAY_UNMAP;
          break;
        default:
          fail(tag, ENOTSUP);
          continue;
      }
      // The kernel keeps requests inside the device and max_sectors; a
      // request outside them is refused here, never allowed to crash the actor.
      if (offset_bytes + length_bytes > size_bytes || length_bytes > engine_queue.max_io_bytes) {
        fail(tag, EINVAL);
        continue;
      }
      in_flight += 1;
      engine_queue.submit(tag, op, context.target_handle, offset_bytes, length_bytes, flags);
    }
  };

  /** Releases the queue once no request is left with the engine. */
  function closeNow(): void {
    if (closed) return;
    closing = true;
    closed = true;
    if (stats_timer !== null) clearInterval(stats_timer);
    reportStats();
    const queue_stats = ublk.stats();
    ublk.close();
    counters.requests! += queue_stats.direct_reads + queue_stats.direct_writes;
    counters.bytes_read! += queue_stats.direct_bytes_read;
    counters.bytes_written! += queue_stats.direct_bytes_written;
    finish({ ...counters });
  }

  const end = (): void => {
    // From the next request on, everything comes to serve().
    ublk.serveDirect(null);
    closing = true;
    if (in_flight === 0 && !submit_scheduled) closeNow();
  };

  const handBack = (): void => {
    handing_back = true;
    end();
  };

  ublk.start(serve);
  return { finished, drain: handBack, close: end };
}

// Noticing other writers of a regular-file volume.
//
// A volume is written only through its exports: a write that reaches the
// file any other way changes a snapshot's image behind copy-on-write (the
// old data was never saved) and is missing from the CBT map. The flock
// the engine holds keeps out only processes that ask for it too.
//
// Design notes
// - The kernel can tell us, for regular files on local filesystems: a
//   write lease (fcntl F_SETLEASE F_WRLCK) on the volume's own descriptor
//   is broken by any other open of the file, and the opener's open() waits
//   until the holder lets go (or lease-break-time, 45 s by default, runs
//   out). So we learn of the open *before* the other process can write.
// - The break is signalled with SIGIO to this process. We listen for it
//   with process.on('SIGIO') (libuv turns the signal into an event on the
//   main loop) while any lease is held, and on each signal ask F_GETLEASE
//   of every watched volume: a pending break says what the lease must fall
//   to — 'read' for a reader, 'none' for a writer or a truncate. Signals
//   coalesce, so every volume is asked, not just one. A slow timer
//   (LEASE_CHECK_INTERVAL_MS) asks too, in case a signal was missed, and
//   re-arms leases given up earlier.
// - Chosen over a native thread with signalfd (which would need the signal
//   blocked in every thread of Node, including those already running) and
//   over polling alone (a writer would wait for the poll). The cost: the
//   main loop must run for the opener to go on, so this is for the daemon,
//   whose main thread never opens a volume file itself (a synchronous open
//   of a watched file on the main thread would wait for lease-break-time).
//   Engine.start enables it only with watch_other_writers.
// - A writer: we report it, then give the lease up (the opener goes on);
//   the engine breaks the volume's snapshot and starts a new CBT
//   generation, with the reason. A reader: nothing was written; we give the
//   lease up (a write descriptor cannot hold a read lease) and re-arm once
//   the reader has closed, so a writer that opens while a reader holds the
//   file open is not seen. That gap, and what cannot be leased at all, are
//   the limits: block devices (no leases; their exclusive open O_EXCL keeps
//   out other exclusive openers only), network filesystems (NFS, 9p) and a
//   process without CAP_LEASE that does not own the file. watch() says why
//   when it cannot watch, and the engine logs it.

import { getLease, setLease, type LeaseType } from '../native';

/** How often leases are checked (a missed signal) and lost ones re-armed; a re-armed lease costs one fcntl. */
export const LEASE_CHECK_INTERVAL_MS = 1_000;

/** What happened to a watched file. */
export type WatchNotice =
  | { kind: 'writer'; key: number }
  | { kind: 'reader'; key: number }
  | { kind: 'rearmed'; key: number };

interface Watched {
  fd: number;
  /** True while our write lease is in place. */
  held: boolean;
}

export class WriterWatch {
  private readonly watched = new Map<number, Watched>();
  private timer: NodeJS.Timeout | null = null;
  private readonly on_signal = (): void => this.check();

  constructor(private readonly notify: (notice: WatchNotice) => void) {}

  /**
   * Starts watching the file open at fd under key (the volume index).
   * Returns null when watching, else why it cannot (EINVAL: not a regular
   * file or no leases on this filesystem; EAGAIN: open elsewhere right now,
   * retried by the timer).
   */
  watch(key: number, fd: number): string | null {
    if (this.watched.has(key)) throw new Error(`writer watch: key ${key} is watched already`);
    // Listen first: a break that comes before the listener would end the process.
    this.listen();
    const entry: Watched = { fd, held: false };
    try {
      setLease(fd, 'write');
      entry.held = true;
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code !== 'EAGAIN' && code !== 'EBUSY') {
        this.quietIfIdle();
        return `no write lease (${code ?? (error as Error).message}): writes that bypass the exports cannot be noticed`;
      }
      // EAGAIN: someone has the file open now; the timer re-arms once they close it.
      this.watched.set(key, entry);
      return 'the file is open elsewhere: writes that bypass the exports are noticed once it is closed';
    }
    this.watched.set(key, entry);
    return null;
  }

  /** Stops watching: gives the lease up (before the descriptor closes). */
  unwatch(key: number): void {
    const entry = this.watched.get(key);
    if (entry === undefined) return;
    this.watched.delete(key);
    if (entry.held) this.release(entry);
    this.quietIfIdle();
  }

  stop(): void {
    for (const key of [...this.watched.keys()]) this.unwatch(key);
  }

  /** Asks every watched file for a pending break; re-arms lost leases. */
  check(): void {
    for (const [key, entry] of this.watched) {
      if (!entry.held) {
        this.rearm(key, entry);
        continue;
      }
      let now: LeaseType;
      try {
        now = getLease(entry.fd);
      } catch {
        // The descriptor is being closed by a detach racing this check: unwatch follows.
        continue;
      }
      if (now === 'write') continue;
      // A pending break (or a lease the kernel revoked after lease-break-time).
      // Report first: the snapshot is broken before the opener's open()
      // returns, so no image read can see what it is about to write.
      this.notify({ kind: now === 'read' ? 'reader' : 'writer', key });
      this.release(entry);
    }
  }

  private rearm(key: number, entry: Watched): void {
    try {
      setLease(entry.fd, 'write');
    } catch {
      // EAGAIN: still open elsewhere. Any other error: try again at the next check.
      return;
    }
    entry.held = true;
    this.notify({ kind: 'rearmed', key });
  }

  private release(entry: Watched): void {
    entry.held = false;
    try {
      setLease(entry.fd, 'none');
    } catch {
      // The kernel already removed it (lease-break-time passed): nothing is held.
    }
  }

  private listen(): void {
    if (this.timer !== null) return;
    process.on('SIGIO', this.on_signal);
    this.timer = setInterval(() => this.check(), LEASE_CHECK_INTERVAL_MS);
    this.timer.unref();
  }

  private quietIfIdle(): void {
    if (this.watched.size > 0 || this.timer === null) return;
    clearInterval(this.timer);
    this.timer = null;
    process.off('SIGIO', this.on_signal);
  }
}

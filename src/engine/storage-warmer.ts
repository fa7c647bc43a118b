// Keeps a difference storage on tmpfs warm ahead of its writers: after
// every growth step, the warm actor (actors/warm.ts, which says why) makes
// what growth reserved since the last step real memory. One task at a
// time, each from where the last ended to the capacity it finds; a step
// published while a task runs is warmed by the next. A storage elsewhere
// is never warmed, and a kernel that cannot warm stops it for the snapshot
// (logged once).

import type { Logger } from 'pino';
import type { WarmResult, WarmTask } from '../actors/messages';
import type { StorageCounters } from '../shared/storage-counters';

/**
 * A piece warmed faster than this was memory the host backs already. On
 * the bench's VM 4 MiB of backed tmpfs pages warmed in 0.5-1.5 ms
 * (0.12-0.37 ms per MiB), pages the host had taken back in 5-10 ms
 * (1.2-2.5 ms per MiB; a scratch C loop over 6 GiB in 4 MiB pieces,
 * session 14).
 */
export const BACKED_NS_PER_MIB = 600_000;

export class StorageWarmer {
  /** Everything below this was warmed (or filled, which warms as well). */
  private warmed = 0;
  private skipped = 0;
  private running: Promise<void> | null = null;
  /** The nice value the next task runs at follows the step that asked for it. */
  private background = true;
  private stopped = false;

  constructor(private readonly counters: StorageCounters, private readonly storage_fd: number,
    private readonly snapshot_control: Int32Array, private readonly run: (task: WarmTask) => Promise<WarmResult>,
    private readonly logger: Logger) {}

  get warmed_sectors(): number {
    return this.warmed;
  }

  /** Of warmed_sectors, those stepped over because the memory around them was backed already. */
  get skipped_sectors(): number {
    return this.skipped;
  }

  /**
   * Growth published room (background: a step nobody waited for). Returns
   * the promise of the warming it started, for the caller to wait for at
   * destroy, or null when it started none (one runs, or nothing to warm).
   */
  warm(background: boolean): Promise<void> | null {
    this.background = background;
    if (!this.counters.in_memory || this.stopped || this.running !== null) return null;
    if (this.counters.capacity_sectors <= this.warmed) return null;
    this.running = this.warmUpToCapacity();
    return this.running;
  }

  private async warmUpToCapacity(): Promise<void> {
    try {
      for (let to = this.counters.capacity_sectors; to > this.warmed && !this.stopped; to = this.counters.capacity_sectors) {
        const result = await this.run({
          storage_fd: this.storage_fd,
          storage_counters: this.counters.buffer,
          snapshot_control: this.snapshot_control.buffer as SharedArrayBuffer,
          from_sectors: this.warmed,
          to_sectors: to,
          background: this.background,
          backed_ns_per_mib: BACKED_NS_PER_MIB,
        });
        if (result.error) {
          this.stop(result.error);
          return;
        }
        // Short of the target: the snapshot is being destroyed, or broke.
        if (result.warmed_sectors < to) return;
        this.warmed = to;
        this.skipped += result.skipped_sectors;
      }
    } catch (error) {
      this.stop({ code: 'EIO', message: (error as Error).message });
    } finally {
      // Here, not in a .then: a warm() that comes after the loop's last look at the capacity starts a new loop.
      this.running = null;
    }
  }

  private stop(error: { code: string; message: string }): void {
    this.stopped = true;
    this.logger.warn({ error }, 'the difference storage cannot be warmed: writers make its pages real themselves');
  }
}

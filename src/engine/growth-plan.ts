// When and by how much a difference-storage file grows: from the fill
// rate measured between growth steps and the speed the last step was
// fallocated at, so that growth starts early enough to be done before the
// writers need the room (growth never sits on the write path), and steps
// are large enough that a fast writer does not start one every few
// milliseconds.
//
//   low water = max(minimum / 2, fill rate × time the next step takes × LEAD_FACTOR)
//   step      = max(minimum, fill rate × STEP_HORIZON_MS)
//
// Both are capped elsewhere (storage-counters.ts request()): never past the
// limit, never past what every chunk of the snapshot's volumes can take.
// Before the first measurement the plan is blksnap's: grow by the minimum
// when free space falls to half of it.

import { assert } from '../shared/assert';

/** A step should last the writers this long at the measured rate: fewer, larger fallocate calls. */
const STEP_HORIZON_MS = 2_000;
/** Start a step when the room left would last this many times the step's own duration. */
const LEAD_FACTOR = 2;
/** The weight of the newest rate measurement against the history (exponential average). */
const RATE_WEIGHT_NEW = 0.5;
/** Measurements over less than this are mostly timer noise; they are skipped. */
const SAMPLE_SPAN_MS_MIN = 5;

export class GrowthPlan {
  private fill_sectors_per_ms = 0;
  private grow_sectors_per_ms = 0;
  private last_time_ms = -1;
  private last_filled_sectors = 0;

  constructor(private readonly minimum_sectors: number) {
    assert(Number.isSafeInteger(minimum_sectors) && minimum_sectors > 0, `bad growth minimum ${minimum_sectors}`);
  }

  /** Records how full the storage is now (at every growth step). */
  sampleFill(now_ms: number, filled_sectors: number): void {
    if (this.last_time_ms >= 0) {
      const span_ms = now_ms - this.last_time_ms;
      if (span_ms < SAMPLE_SPAN_MS_MIN) return;
      const rate = Math.max(0, filled_sectors - this.last_filled_sectors) / span_ms;
      this.fill_sectors_per_ms = average(this.fill_sectors_per_ms, rate);
    }
    this.last_time_ms = now_ms;
    this.last_filled_sectors = filled_sectors;
  }

  /** Records how fast a finished step was fallocated. */
  sampleGrowth(grown_sectors: number, took_ms: number): void {
    if (grown_sectors <= 0 || took_ms < SAMPLE_SPAN_MS_MIN) return;
    this.grow_sectors_per_ms = average(this.grow_sectors_per_ms, grown_sectors / took_ms);
  }

  get fill_rate_sectors_per_ms(): number {
    return this.fill_sectors_per_ms;
  }

  step_sectors(): number {
    return Math.max(this.minimum_sectors, Math.ceil(this.fill_sectors_per_ms * STEP_HORIZON_MS));
  }

  low_water_sectors(): number {
    const floor = Math.floor(this.minimum_sectors / 2);
    if (this.fill_sectors_per_ms === 0 || this.grow_sectors_per_ms === 0) return floor;
    const step_ms = this.step_sectors() / this.grow_sectors_per_ms;
    return Math.max(floor, Math.ceil(this.fill_sectors_per_ms * step_ms * LEAD_FACTOR));
  }
}

function average(old_rate: number, new_rate: number): number {
  return old_rate === 0 ? new_rate : old_rate * (1 - RATE_WEIGHT_NEW) + new_rate * RATE_WEIGHT_NEW;
}

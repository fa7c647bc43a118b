// The tracker of one volume: its CBT map for as long as the volume is
// attached. It owns the map's life: a capacity change (the volume grew or
// shrank) replaces the map with a fresh one under a new generation UUID,
// because block numbers no longer mean what they meant.
//
// It also knows why the current generation began (generation_reason), so
// a backup tool that finds a new generation can tell an operator why a
// full backup is due: the first attach, a saved map that could not be
// trusted after a restart (the daemon says why), a size change, or the
// 256-take wrap of the change numbers.

import { CbtMap, type CbtInfo, type CbtState } from '../shared/cbt-map';
import { trackingGeometry } from '../shared/geometry';
import type { Params } from '../shared/params';

/** The reason of a generation started by a plain attach. */
export const FIRST_ATTACH_REASON = 'first attach';
/** switchForTake reset the map: a map byte holds change numbers up to 255. */
const WRAP_REASON = 'change numbers wrapped (a generation holds at most 255 takes)';

/** Where a tracker's first map comes from (EngineControl.attach). */
export interface TrackerStart {
  /** A saved map to continue, when it fits the volume as it is now. */
  state?: CbtState;
  /** Why its generation began, kept with a restored state. */
  state_reason?: string;
  /** Why a new generation begins when no state is given or it does not fit. */
  new_generation_reason?: string;
}

export class Tracker {
  private current: CbtMap;
  private reason: string;
  /** The generation the reason belongs to: a take that reset the map leaves it behind. */
  private reason_generation: string;

  constructor(capacity_sectors: number, private readonly params: Params, start: TrackerStart = {}) {
    const geometry = trackingGeometry(capacity_sectors, params);
    const restored = start.state ? CbtMap.restore(start.state, capacity_sectors, geometry) : null;
    if (restored instanceof CbtMap) {
      this.current = restored;
      this.reason = start.state_reason ?? FIRST_ATTACH_REASON;
    } else {
      this.current = CbtMap.create(capacity_sectors, geometry);
      // A state that did not fit says why; that beats the caller's reason.
      this.reason = restored ?? start.new_generation_reason ?? FIRST_ATTACH_REASON;
    }
    this.reason_generation = this.current.generation_id;
  }

  get map(): CbtMap {
    return this.current;
  }

  /** Why the current generation began. */
  get generation_reason(): string {
    if (this.current.generation_id !== this.reason_generation) {
      this.reason = WRAP_REASON;
      this.reason_generation = this.current.generation_id;
    }
    return this.reason;
  }

  /**
   * Starts a new generation now (both copies zeroed, a new UUID), because
   * the map can no longer be trusted: something changed the volume without
   * marking it. Numbers keep counting: a writer racing this reset marks
   * with the current number, which stays consistent.
   */
  resetGeneration(reason: string): void {
    this.current.resetGeneration();
    this.reason = reason;
    this.reason_generation = this.current.generation_id;
  }

  /** Returns true when the map was replaced (the capacity changed). */
  resize(capacity_sectors: number): boolean {
    if (capacity_sectors === this.current.capacity_sectors) return false;
    this.current = CbtMap.create(capacity_sectors, trackingGeometry(capacity_sectors, this.params));
    this.reason = `size changed (${capacity_sectors} sectors)`;
    this.reason_generation = this.current.generation_id;
    return true;
  }

  info(): CbtInfo {
    return { ...this.current.info(), generation_reason: this.generation_reason };
  }

  exportState(): { state: CbtState; generation_reason: string } {
    return { state: this.current.exportState(), generation_reason: this.generation_reason };
  }
}

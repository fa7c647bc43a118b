// The tracker of one volume: its CBT map for as long as the volume is
// attached. It owns the map's life: a capacity change (the volume grew or
// shrank) replaces the map with a fresh one under a new generation UUID,
// because block numbers no longer mean what they meant.

import { CbtMap, type CbtInfo } from '../shared/cbt-map';
import { trackingGeometry } from '../shared/geometry';
import type { Params } from '../shared/params';

export class Tracker {
  private current: CbtMap;

  constructor(capacity_sectors: number, private readonly params: Params) {
    this.current = CbtMap.create(capacity_sectors, trackingGeometry(capacity_sectors, params));
  }

  get map(): CbtMap {
    return this.current;
  }

  /** Returns true when the map was replaced (the capacity changed). */
  resize(capacity_sectors: number): boolean {
    if (capacity_sectors === this.current.capacity_sectors) return false;
    this.current = CbtMap.create(capacity_sectors, trackingGeometry(capacity_sectors, this.params));
    return true;
  }

  info(): CbtInfo {
    return this.current.info();
  }
}

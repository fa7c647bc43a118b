// From a CBT map to the extents an incremental backup copies: the tracking
// blocks whose map byte is greater than the changes_number K recorded by the
// base backup (the map's rule, shared/cbt-map.ts), merged into runs and
// clipped to the volume's size (the last block may be short).

import type { Extent } from './manifest';

export function changedExtents(map: Uint8Array, base_changes_number: number, block_bytes: number, size_bytes: number): Extent[] {
  const extents: Extent[] = [];
  let run_start = -1;
  const close = (end_block: number): void => {
    const offset = run_start * block_bytes;
    const end = Math.min(size_bytes, end_block * block_bytes);
    if (end > offset) extents.push([offset, end - offset]);
    run_start = -1;
  };
  for (let block = 0; block < map.length; block += 1) {
    if ((map[block] as number) > base_changes_number) {
      if (run_start < 0) run_start = block;
    } else if (run_start >= 0) {
      close(block);
    }
  }
  if (run_start >= 0) close(map.length);
  return extents;
}

export function extentBytes(extents: readonly Extent[]): number {
  return extents.reduce((sum, [, length_bytes]) => sum + length_bytes, 0);
}

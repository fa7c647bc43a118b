// Metadata contexts: which ones an export offers, how LIST_META_CONTEXT and
// SET_META_CONTEXT queries select them, and the extents BLOCK_STATUS
// reports for each. docs/nbd.md documents the names for users.
//
//   base:allocation                     every export. We cannot see holes
//                                       through the engine, so every extent
//                                       is reported as data (status 0), which
//                                       proto.md allows ("MAY always safely
//                                       report a status of 0").
//   ublksnap:changed-since:K            image exports (NAME@ID). Status bit 0
//   qemu:dirty-bitmap:changed-since-K   (NBD_STATE_DIRTY in QEMU's terms) set
//                                       on the tracking blocks that changed
//                                       after the take whose changes_number
//                                       was K, i.e. whose byte in the frozen
//                                       CBT map is > K (cbt-map.ts). Offered
//                                       for 0 ≤ K < changes_number; a K the
//                                       map cannot answer selects nothing, so
//                                       a backup tool notices and takes a
//                                       full copy instead of a wrong
//                                       incremental.
//
// Queries (proto.md "Metadata querying"): LIST accepts exact names and the
// wildcards `base:`, `ublksnap:`, `ublksnap:changed-since:`, `qemu:` and
// `qemu:dirty-bitmap:`; an empty query list lists everything. SET accepts
// exact names only; unknown namespaces and unknown leaf names are ignored,
// as the spec requires.

import { BLOCK_DESCRIPTOR_BYTES, STRING_BYTES_MAX } from './protocol';

export const BASE_ALLOCATION = 'base:allocation';
export const CHANGED_SINCE_PREFIX = 'ublksnap:changed-since:';
export const QEMU_DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';
export const QEMU_BITMAP_LEAF_PREFIX = 'changed-since-';
/** The status bit of a changed block in both change contexts. */
export const STATE_CHANGED = 1;
/** A CBT map byte holds 0..255, so K is at most 254 (cbt-map.ts CBT_NUMBER_LIMIT - 2). */
export const CHANGE_NUMBER_MAX = 254;

const WILDCARDS_BASE = ['base:'];
const WILDCARDS_CHANGED = ['ublksnap:', CHANGED_SINCE_PREFIX];
const WILDCARDS_QEMU = ['qemu:', QEMU_DIRTY_BITMAP_PREFIX];

export type MetaContextKind = 'allocation' | 'changed';

/** One selected context: its wire id, its name, and for 'changed' the K. */
export interface MetaContext {
  id: number;
  name: string;
  kind: MetaContextKind;
  since: number;
}

/**
 * What an export's change contexts are computed from: the frozen CBT map of
 * the image's volume. `read` copies map bytes from first_block into target
 * and returns how many it copied (engine.readCbtMap).
 */
export interface ChangeMap {
  block_bytes: number;
  block_count: number;
  changes_number: number;
  read(first_block: number, target: Uint8Array): number;
}

/** The contexts an export offers: only images carry change contexts. */
export interface ContextOffer {
  changes_number: number | null;
}

export function changedSinceName(since: number): string {
  return `${CHANGED_SINCE_PREFIX}${since}`;
}

export function qemuBitmapName(since: number): string {
  return `${QEMU_DIRTY_BITMAP_PREFIX}${QEMU_BITMAP_LEAF_PREFIX}${since}`;
}

/** Every context name the export offers, in a stable order. */
export function allContextNames(offer: ContextOffer): string[] {
  const names = [BASE_ALLOCATION];
  if (offer.changes_number !== null) {
    for (let since = 0; since < offer.changes_number; since += 1) names.push(changedSinceName(since));
    for (let since = 0; since < offer.changes_number; since += 1) names.push(qemuBitmapName(since));
  }
  return names;
}

/** K parsed from a decimal leaf with no sign, no leading zeroes, no spaces; -1 otherwise. */
function parseSince(leaf: string): number {
  if (!/^(0|[1-9][0-9]{0,2})$/.test(leaf)) return -1;
  const since = Number(leaf);
  return since <= CHANGE_NUMBER_MAX ? since : -1;
}

/** The context an exact name selects on this export, without an id yet; null if none. */
export function resolveContextName(name: string, offer: ContextOffer): Omit<MetaContext, 'id'> | null {
  if (name === BASE_ALLOCATION) return { name, kind: 'allocation', since: 0 };
  if (offer.changes_number === null) return null;
  let leaf: string | null = null;
  if (name.startsWith(CHANGED_SINCE_PREFIX)) leaf = name.slice(CHANGED_SINCE_PREFIX.length);
  else if (name.startsWith(QEMU_DIRTY_BITMAP_PREFIX + QEMU_BITMAP_LEAF_PREFIX)) {
    leaf = name.slice(QEMU_DIRTY_BITMAP_PREFIX.length + QEMU_BITMAP_LEAF_PREFIX.length);
  }
  if (leaf === null) return null;
  const since = parseSince(leaf);
  if (since < 0 || since >= offer.changes_number) return null;
  return { name, kind: 'changed', since };
}

/** True when the query is syntactically a context query: `namespace:leaf`, a valid string. */
export function isWellFormedQuery(query: string): boolean {
  const colon = query.indexOf(':');
  return colon > 0 && Buffer.byteLength(query) <= STRING_BYTES_MAX && !query.includes('\0') &&
    !/\s/.test(query.slice(0, colon));
}

/**
 * LIST_META_CONTEXT: the names matching any query (all of them for no
 * query), each once, in catalogue order.
 */
export function listContexts(queries: readonly string[], offer: ContextOffer): string[] {
  const all = allContextNames(offer);
  if (queries.length === 0) return all;
  const chosen = new Set<string>();
  for (const query of queries) {
    if (WILDCARDS_BASE.includes(query)) {
      chosen.add(BASE_ALLOCATION);
    } else if (WILDCARDS_CHANGED.includes(query)) {
      for (const name of all) if (name.startsWith(CHANGED_SINCE_PREFIX)) chosen.add(name);
    } else if (WILDCARDS_QEMU.includes(query)) {
      for (const name of all) if (name.startsWith(QEMU_DIRTY_BITMAP_PREFIX)) chosen.add(name);
    } else if (resolveContextName(query, offer) !== null) {
      chosen.add(query);
    }
  }
  return all.filter((name) => chosen.has(name));
}

/**
 * SET_META_CONTEXT: the contexts the queries select, with ids 1, 2, … in
 * query order; duplicates select once. Returns null when more than
 * contexts_max would be selected (the caller answers REP_ERR_TOO_BIG).
 */
export function selectContexts(queries: readonly string[], offer: ContextOffer, contexts_max: number): MetaContext[] | null {
  const selected: MetaContext[] = [];
  for (const query of queries) {
    const context = resolveContextName(query, offer);
    if (context === null || selected.some((chosen) => chosen.name === context.name)) continue;
    if (selected.length === contexts_max) return null;
    selected.push({ id: selected.length + 1, ...context });
  }
  return selected;
}

/**
 * Writes base:allocation's one descriptor for [offset, offset + length)
 * into out at position and returns the descriptor count (always 1): all
 * data, status 0. The caller has checked the range against the export.
 */
export function allocationExtents(length: number, out: Buffer, position: number): number {
  out.writeUInt32BE(length, position);
  out.writeUInt32BE(0, position + 4);
  return 1;
}

/**
 * Writes the change context's descriptors for [offset, offset + length):
 * runs of tracking blocks with the same changed-or-not status, clipped to
 * the request, at most descriptors_max of them (one with req_one), reading
 * the map through scratch (which bounds how many blocks one reply covers).
 * Returns the descriptor count, at least 1. The range lies inside the export.
 */
export function changedExtents(map: ChangeMap, since: number, offset: number, length: number,
  req_one: boolean, descriptors_max: number, scratch: Uint8Array, out: Buffer, position: number): number {
  const end = offset + length;
  const first_block = Math.floor(offset / map.block_bytes);
  const last_block = Math.min(Math.ceil(end / map.block_bytes), map.block_count) - 1;
  const wanted_blocks = Math.max(0, last_block - first_block + 1);
  const blocks = wanted_blocks === 0 ? 0 : map.read(first_block, scratch.subarray(0, Math.min(wanted_blocks, scratch.length)));
  const limit = req_one ? 1 : descriptors_max;
  let count = 0;
  let run_start = offset;
  // A range past the map (a size not a whole number of blocks) reads as unchanged.
  let run_status = blocks > 0 && scratch[0]! > since ? STATE_CHANGED : 0;
  let cursor = offset;
  for (let index = 0; index < blocks && count < limit; index += 1) {
    const status = scratch[index]! > since ? STATE_CHANGED : 0;
    const block_end = Math.min((first_block + index + 1) * map.block_bytes, end);
    if (status !== run_status) {
      out.writeUInt32BE(cursor - run_start, position + count * BLOCK_DESCRIPTOR_BYTES);
      out.writeUInt32BE(run_status, position + count * BLOCK_DESCRIPTOR_BYTES + 4);
      count += 1;
      run_start = cursor;
      run_status = status;
    }
    cursor = block_end;
  }
  if (count < limit) {
    // The open run ends where the blocks we read end, or at the request end.
    const run_end = blocks === wanted_blocks ? end : cursor;
    if (run_end > run_start) {
      out.writeUInt32BE(run_end - run_start, position + count * BLOCK_DESCRIPTOR_BYTES);
      out.writeUInt32BE(run_status, position + count * BLOCK_DESCRIPTOR_BYTES + 4);
      count += 1;
    }
  }
  if (count === 0) {
    // No map bytes at all (an empty map): the whole range is unchanged.
    out.writeUInt32BE(length, position);
    out.writeUInt32BE(0, position + 4);
    count = 1;
  }
  return count;
}

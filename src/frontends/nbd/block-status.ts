// The whole reply to one BLOCK_STATUS request, written into one buffer (a
// slab slot): one BLOCK_STATUS chunk per selected context, in id order,
// the last one flagged DONE. proto.md: exactly one chunk per context; the
// extents start at the request offset; with REQ_ONE each chunk holds one
// extent no longer than the request; otherwise the server may describe less
// than asked (the client asks again from where we stopped).

import { assert } from '../../shared/assert';
import { ChangeMap, MetaContext, allocationExtents, changedExtents } from './meta-context';
import { BLOCK_DESCRIPTOR_BYTES, REPLY_FLAG_DONE } from './protocol';
import { BLOCK_STATUS_HEADER_BYTES, writeBlockStatusHeader } from './reply-codec';

/** Descriptors per context per reply: 4096 × 8 bytes = 32 KiB; clients ask again for the rest. */
export const DESCRIPTORS_PER_CONTEXT_MAX = 4096;

/** How many descriptors each context may use so that the whole reply fits in out_bytes. */
export function descriptorsPerContext(out_bytes: number, contexts_count: number): number {
  assert(contexts_count >= 1, 'BLOCK_STATUS needs a context');
  const per_context_bytes = Math.floor(out_bytes / contexts_count) - BLOCK_STATUS_HEADER_BYTES;
  const fitting = Math.floor(per_context_bytes / BLOCK_DESCRIPTOR_BYTES);
  assert(fitting >= 1, `a ${out_bytes}-byte buffer cannot hold ${contexts_count} BLOCK_STATUS chunks`);
  return Math.min(fitting, DESCRIPTORS_PER_CONTEXT_MAX);
}

export interface BlockStatusQuery {
  offset: number;
  length: number;
  req_one: boolean;
}

/**
 * Writes the reply for query into out from 0 and returns its bytes. The
 * range was checked against the export. change_map is needed only when a
 * 'changed' context is selected; scratch receives CBT map bytes.
 */
export function writeBlockStatusReply(out: Buffer, contexts: readonly MetaContext[], query: BlockStatusQuery,
  change_map: ChangeMap | null, scratch: Uint8Array, handles: Buffer, handle_position: number): number {
  const descriptors_max = descriptorsPerContext(out.length, contexts.length);
  let position = 0;
  for (let index = 0; index < contexts.length; index += 1) {
    const context = contexts[index]!;
    const descriptors_at = position + BLOCK_STATUS_HEADER_BYTES;
    let count: number;
    if (context.kind === 'allocation') {
      count = allocationExtents(query.length, out, descriptors_at);
    } else {
      assert(change_map !== null, `context ${context.name} selected without a change map`);
      count = changedExtents(change_map, context.since, query.offset, query.length, query.req_one,
        descriptors_max, scratch, out, descriptors_at);
    }
    const flags = index === contexts.length - 1 ? REPLY_FLAG_DONE : 0;
    writeBlockStatusHeader(out, position, flags, handles, handle_position, context.id, count);
    position = descriptors_at + count * BLOCK_DESCRIPTOR_BYTES;
  }
  return position;
}

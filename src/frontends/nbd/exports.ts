// The NBD view of the engine's exports (docs/design.md §6): `NAME` is the live
// volume, `NAME@ID` the image of snapshot ID from take to destroy. This
// adapts EngineControl.resolveExport to negotiation's ExportCatalog and
// decides what each export advertises.
//
// Multi-conn (proto.md: FLUSH and FUA on one connection must cover every
// connection's completed writes, and every connection must see them): all
// connections of the daemon share one engine, with no cache per connection.
// A volume's FLUSH is an fdatasync of the whole volume file, so it covers
// every connection's writes: CAN_MULTI_CONN holds. An image's written
// chunks live in the snapshot's shared buffers and diff storage, equally
// visible to every connection, and its FLUSH is per image, not per queue; an
// image is never durable across a daemon crash anyway (docs/design.md §10: a crash
// may break a snapshot), so there is nothing a second connection could miss.
// CAN_MULTI_CONN holds for images too.

import type { EngineControl, ExportTarget } from '../../engine/api';
import { isUblksnapError } from '../../shared/errors';
import { BlockSizes } from './handshake-codec';
import { ContextOffer } from './meta-context';
import { ExportCatalog, ExportDescription } from './negotiation';

/** Preferred block: a page, so aligned requests never need read-modify-write below it. */
export const PREFERRED_BLOCK_BYTES = 4096;

export function exportNameOf(target: ExportTarget): string {
  return target.kind === 'image' ? `${target.volume_name}@${target.snapshot_id}` : target.volume_name;
}

/** The smallest request the engine serves: it does buffered I/O (no O_DIRECT), so any byte. */
export const MINIMUM_BLOCK_BYTES = 1;

/**
 * Block sizes advertised for a target. Minimum 1: the engine's volume and
 * image I/O is buffered and byte-granular (copy-on-write works per chunk,
 * whatever the request's alignment), so unaligned requests are served, not
 * refused; proto.md allows 1 for exports backed by files. Preferred: the
 * larger of a page and the device's logical block, below which a block
 * device does read-modify-write. Maximum: the largest request this server
 * takes.
 */
export function blockSizesOf(target: ExportTarget, maximum_request_bytes: number): BlockSizes {
  return {
    minimum_bytes: MINIMUM_BLOCK_BYTES,
    preferred_bytes: Math.max(PREFERRED_BLOCK_BYTES, target.logical_block_bytes),
    maximum_bytes: maximum_request_bytes,
  };
}

function describeTarget(target: ExportTarget): string {
  return target.kind === 'image'
    ? `ublksnap image of volume ${target.volume_name} at snapshot ${target.snapshot_id}`
    : `ublksnap volume ${target.volume_name}`;
}

export class EngineCatalog implements ExportCatalog<ExportTarget> {
  constructor(private readonly engine: EngineControl, private readonly maximum_request_bytes: number) {}

  names(): string[] {
    return this.engine.exportNames();
  }

  describe(name: string): ExportDescription<ExportTarget> | null {
    let target: ExportTarget;
    try {
      target = this.engine.resolveExport(name);
    } catch (error) {
      // ESRCH / EINVAL: no such export. Anything else is a bug and propagates.
      if (isUblksnapError(error)) return null;
      throw error;
    }
    return {
      name: exportNameOf(target),
      description: describeTarget(target),
      size_bytes: target.size_bytes,
      writable: target.writable,
      multi_conn: true,
      block_sizes: blockSizesOf(target, this.maximum_request_bytes),
      offer: this.offerOf(target),
      target,
    };
  }

  private offerOf(target: ExportTarget): ContextOffer {
    if (target.kind !== 'image') return { changes_number: null };
    return { changes_number: this.engine.cbtInfo(target.volume_name).changes_number };
  }

  /** The shape of the frozen CBT map behind an image's change contexts (its bytes are read where the session runs). */
  changeMapOf(target: ExportTarget): { block_bytes: number; block_count: number; changes_number: number } {
    const info = this.engine.cbtInfo(target.volume_name);
    return { block_bytes: info.block_size, block_count: info.block_count, changes_number: info.changes_number };
  }
}

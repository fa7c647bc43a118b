// Decoding one sector's header whatever it holds: for reports, debugging
// and tests that read a stamp's fields (allocates; not the hot path).

import { assert } from '../../../src/shared/assert';
import {
  MAGIC_BYTES, SECTOR_BYTES, STAMP_CRC_FIRST_BYTE, STAMP_OFFSET_CRC, STAMP_OFFSET_LBA, STAMP_OFFSET_SEQUENCE,
  STAMP_OFFSET_TIME, STAMP_OFFSET_VERSION, STAMP_OFFSET_WRITER, TWO_POW_32, crc32, readU32,
} from './layout';

/** One sector's header as found, for reports and debugging. */
export interface StampHeader {
  magic: string;
  magic_ok: boolean;
  checksum_stored: number;
  checksum_computed: number;
  sequence: number;
  lba: number;
  time_ns: bigint;
  writer_id: number;
  version: number;
}

/** Decodes the header at buffer[offset] whatever it holds (allocates; not for the hot path). */
export function decodeStamp(buffer: Uint8Array, offset = 0): StampHeader {
  assert(offset >= 0 && offset + SECTOR_BYTES <= buffer.byteLength, `no whole sector at offset ${offset}`);
  let magic = '';
  let magic_ok = true;
  for (let i = 0; i < MAGIC_BYTES.length; i += 1) {
    const byte = buffer[offset + i]!;
    magic += byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
    if (byte !== MAGIC_BYTES[i]) magic_ok = false;
  }
  return {
    magic,
    magic_ok,
    checksum_stored: readU32(buffer, offset + STAMP_OFFSET_CRC),
    checksum_computed: crc32(buffer, offset + STAMP_CRC_FIRST_BYTE, offset + SECTOR_BYTES),
    sequence: readU32(buffer, offset + STAMP_OFFSET_SEQUENCE),
    lba: readU32(buffer, offset + STAMP_OFFSET_LBA) + readU32(buffer, offset + STAMP_OFFSET_LBA + 4) * TWO_POW_32,
    time_ns: BigInt(readU32(buffer, offset + STAMP_OFFSET_TIME)) + (BigInt(readU32(buffer, offset + STAMP_OFFSET_TIME + 4)) << 32n),
    writer_id: readU32(buffer, offset + STAMP_OFFSET_WRITER),
    version: readU32(buffer, offset + STAMP_OFFSET_VERSION),
  };
}

/** True when the sector at buffer[offset] is all zero (never written). */
export function isAllZero(buffer: Uint8Array, offset: number): boolean {
  for (let i = offset; i < offset + SECTOR_BYTES; i += 1) if (buffer[i] !== 0) return false;
  return true;
}

// The limits of the I/O path, each derived from the one above it so that
// the relations hold by construction:
//
//   open tags (all queues and sessions) ≤ OPEN_TAGS_MAX
//   request ring capacity  = OPEN_TAGS_MAX   → a submission never finds its ring full
//   parked capacity        = OPEN_TAGS_MAX   → every open tag may wait at a frozen gate at once
//   queue depth            ≤ QUEUE_DEPTH_MAX = OPEN_TAGS_MAX / 4 → at least four full queues fit
//
// Costs: a ring record is REQUEST_WORDS × 4 = 36 bytes, so each request
// ring and each actor's parked ring takes OPEN_TAGS_MAX × 36 B = 144 KiB.

import { isPowerOfTwo } from './units';
import { assert } from './assert';

/** Tags open at once over every queue and hosted session of one engine. */
export const OPEN_TAGS_MAX = 4096;
export const REQUEST_RING_CAPACITY = OPEN_TAGS_MAX;
export const PARKED_CAPACITY = OPEN_TAGS_MAX;
/** The deepest one queue may be: a quarter of the open tags. */
export const QUEUE_DEPTH_MAX = OPEN_TAGS_MAX / 4;
/** The largest request buffer (slot) of a queue: 32 MiB, the usual maximum payload of network block protocols. */
export const QUEUE_IO_BYTES_MAX = 32 * 1024 * 1024;

assert(isPowerOfTwo(OPEN_TAGS_MAX), 'rings need a power-of-two capacity');

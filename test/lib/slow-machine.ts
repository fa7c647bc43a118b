// How tests size themselves for a slow machine: the ublk guest, where node
// runs 6-14x slower under TCG emulation than on the host.
//
// - UBLKSNAP_TEST_TIME_SCALE=N (a number ≥ 1, default 1) stretches every
//   hang bound of the load machinery (within(), waitStored()) and the
//   contract harness's scenario bound by N: a bound says "this hangs", and
//   what hangs on the host at 20 s may only be slow in the guest.
// - UBLKSNAP_CONTRACT_SIZE=guest picks each contract scenario's smaller
//   size (fewer takes, smaller volumes; `sized(full, guest)` in the
//   scenario): the same checks, on less data. Default `full`.
// Both are read once; a bad value throws, naming the variable.

export const TIME_SCALE_ENV = 'UBLKSNAP_TEST_TIME_SCALE';
export const CONTRACT_SIZE_ENV = 'UBLKSNAP_CONTRACT_SIZE';
/** Past this a scale is a typo, not a slow machine. */
const TIME_SCALE_MAX = 100;

function readTimeScale(): number {
  const text = process.env[TIME_SCALE_ENV];
  if (text === undefined || text === '') return 1;
  const scale = Number(text);
  if (!Number.isFinite(scale) || scale < 1 || scale > TIME_SCALE_MAX) {
    throw new Error(`${TIME_SCALE_ENV}=${text}: want a number in [1, ${TIME_SCALE_MAX}]`);
  }
  return scale;
}

function readGuestSize(): boolean {
  const text = process.env[CONTRACT_SIZE_ENV];
  if (text === undefined || text === '' || text === 'full') return false;
  if (text === 'guest') return true;
  throw new Error(`${CONTRACT_SIZE_ENV}=${text}: want full or guest`);
}

const time_scale = readTimeScale();
const guest_size = readGuestSize();

/** A hang bound of timeout_ms, stretched by UBLKSNAP_TEST_TIME_SCALE. */
export function scaledTimeout(timeout_ms: number): number {
  return Math.round(timeout_ms * time_scale);
}

/** The scenario's full size, or its guest size under UBLKSNAP_CONTRACT_SIZE=guest. */
export function sized<T>(full: T, guest: T): T {
  return guest_size ? guest : full;
}

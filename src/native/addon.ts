// Loads the C++ addon (native/src) once for every typed face of it
// (index.ts: files and memory; ublk.ts: the ublk driver). Node caches the
// module per thread, so each face gets the same object.

import path from 'node:path';

/** Where `node scripts/build-native.js` leaves the addon, from dist/src/native/. */
const ADDON_PATH = path.join(__dirname, '../../../native/build/Release/ublksnap.node');

/** The addon's exports, typed by the caller. */
export function loadAddon<T>(): T {
  try {
    return require(ADDON_PATH) as T;
  } catch (error) {
    // An environmental failure: say what is missing and how to make it.
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`ublksnap: cannot load the native addon at ${ADDON_PATH} (${reason}); build it with "node scripts/build-native.js"`);
  }
}

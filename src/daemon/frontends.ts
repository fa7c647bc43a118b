// The frontends built into this daemon. Each entry is started at daemon
// start and stopped before the engine at shutdown (see frontend.ts).
//
// The NBD frontend (src/nbd/, branch nbd) plugs in by adding its factory
// here, e.g. `import { nbdFrontendFactory } from '../nbd/frontend';` and
// listing it below; `--nbd-socket` and `--nbd-listen` already reach it
// through FrontendContext. The ublk frontend does the same.

import type { FrontendFactory } from './frontend';

export const BUILTIN_FRONTENDS: readonly FrontendFactory[] = [];

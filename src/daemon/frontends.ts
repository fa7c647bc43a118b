// The frontends built into this daemon. Each entry is started at daemon
// start (after the engine) and stopped before the engine at shutdown; see
// frontend.ts for the interface. `--nbd-socket` and `--nbd-listen` reach the
// NBD frontend through FrontendContext. The ublk frontend starts even where
// the kernel lacks ublk: it then refuses each publish with the reason.

import { nbdFrontendFactory } from '../frontends/nbd/frontend';
import { ublkFrontendFactory } from '../frontends/ublk/frontend';
import type { FrontendFactory } from '../frontends/frontend';

export const BUILTIN_FRONTENDS: readonly FrontendFactory[] = [nbdFrontendFactory, ublkFrontendFactory];

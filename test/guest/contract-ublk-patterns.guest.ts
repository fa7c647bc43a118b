// Goal and method: those of contract-ublk.guest.ts, for the frontend
// contract scenarios about data placement, through ublk: unaligned and boundary writes
// on the volume and the image (ACCEPTANCE 8 and 11), and image writes that
// never reach the volume. A program of its own so that each half gets the
// guest suite's 420 s per program (test/vm/guest-suite.test.ts).
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/contract-ublk-patterns.guest.js [FILTER...]

import { runContractInGuest } from './contract-ublk.guest';

void runContractInGuest(['unaligned', 'image-writes']);

// Goal and method: those of contract-ublk.guest.ts, for the contract
// scenarios where the engine fails requests on purpose, through ublk:
// overflow breaks the snapshot and never the volume (image I/O fails with
// EIO through /dev/ublkbN), and destroy under load (image requests end
// with EIO or ENODEV, never stale data). A program of its own so that it
// gets the guest suite's 420 s per program (test/vm/guest-suite.test.ts).
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/contract-ublk-errors.guest.js [FILTER...]

import { runContractInGuest } from './contract-ublk.guest';

void runContractInGuest(['overflow', 'destroy-load']);

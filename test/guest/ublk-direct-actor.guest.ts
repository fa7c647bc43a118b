// Goal: ublk-direct.guest.ts's checks pass with the queue hosted in the I/O
// actor (UBLKSNAP_UBLK_HOSTING=actor; the default is a native queue
// thread): the actor's event loop serves a volume's plain requests directly
// too, under the same gate.
// Method: the same program with the hosting asked in the environment, which
// the daemon it starts inherits; the program checks the stats lines name it.
//
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/ublk-direct-actor.guest.js

process.env.UBLKSNAP_UBLK_HOSTING = 'actor';
// eslint-disable-next-line @typescript-eslint/no-require-imports
require('./ublk-direct.guest');

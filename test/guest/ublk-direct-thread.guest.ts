// Goal: ublk-direct.guest.ts's checks pass with the queue hosted on a native
// queue thread (UBLKSNAP_UBLK_HOSTING=thread): that thread serves a
// volume's plain requests directly too, under the same gate, and a take is
// never held up by a wake-up it cannot send (the take's wait polls).
// Method: the same program with the hosting asked in the environment, which
// the daemon it starts inherits; the program checks the stats lines name it.
//
// By hand: test/vm/run-in-guest.sh -- node dist/test/guest/ublk-direct-thread.guest.js

process.env.UBLKSNAP_UBLK_HOSTING = 'thread';
// eslint-disable-next-line @typescript-eslint/no-require-imports
require('./ublk-direct.guest');

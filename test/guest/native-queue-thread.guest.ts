// Goal: native-queue.guest.ts's checks (fio crc32c verify, dd readback,
// blkdiscard, clean stop, double commit refused) pass with the queue's
// io_uring hosted on a native thread (UblkQueue native_thread: true), and
// the queue really ran there (stats: native_thread, io_uring_enter wake-ups).
// Method: the same program with UBLK_NATIVE_THREAD=1; its worker reads the
// choice from workerData.
//
// Usage (host): run-in-guest.sh 'timeout 600 node dist/test/guest/native-queue-thread.guest.js'

process.env.UBLK_NATIVE_THREAD = '1';
// eslint-disable-next-line @typescript-eslint/no-require-imports
require('./native-queue.guest');

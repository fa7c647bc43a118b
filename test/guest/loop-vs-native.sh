#!/bin/bash
# loop-vs-native.sh: the kernel loop driver (--direct-io=on) against our
# UblkQueue server (native-queue.guest.js --serve) over the same tmpfs file,
# in one boot; prints each run and the median ublk/loop ratio per job.
# Runs in the guest, as root, from the checkout:
#   run-in-guest.sh 'test/guest/loop-vs-native.sh'     knobs: RT (s per job), SIZE_MB, ROUNDS
set -u
cd "$(dirname "$0")/../.." || exit 1
RT=${RT:-6}; SIZE_MB=${SIZE_MB:-256}; ROUNDS=${ROUNDS:-3}
BACK=/dev/shm/ublk-native.img
OUT=/dev/shm/loop-vs-native.txt
SERVING=/dev/shm/ublk-native.serving
echo "kernel $(uname -r) nproc $(nproc) runtime ${RT}s size ${SIZE_MB}M rounds $ROUNDS"
modprobe loop && modprobe ublk_drv || exit 1
dd if=/dev/zero of=$BACK bs=1M count=$SIZE_MB status=none   # allocate the tmpfs pages up front
: > $OUT

job() { # device label rw bs  -> one line "label rw bs iops mib/s"
  fio --name=job --filename="$1" --ioengine=io_uring --direct=1 --rw="$3" --bs="$4" --iodepth=32 \
      --runtime="$RT" --time_based --size=${SIZE_MB}M --randrepeat=0 --output-format=terse --terse-version=3 2>/dev/null |
  awk -F';' -v n="$2" -v rw="$3" -v bs="$4" '{ if (rw ~ /read/) {bw=$7; iops=$8} else {bw=$48; iops=$49};
       printf "%s %s-%s %d %.1f\n", n, bs, rw, iops, bw/1024 }' | tee -a $OUT
}
suite() { job "$1" "$2" randread 4k; job "$1" "$2" randwrite 4k; job "$1" "$2" write 1M; }

for r in $(seq "$ROUNDS"); do
  L=$(losetup -f --show --direct-io=on $BACK) || { echo "losetup failed"; exit 1; }
  suite "$L" loop
  losetup -d "$L"
  rm -f $SERVING
  BACKING_FILE=$BACK BACKING_MB=$SIZE_MB node dist/test/guest/native-queue.guest.js --serve > /dev/shm/serve.log 2>&1 &
  SRV=$!
  for i in $(seq 600); do [ -s $SERVING ] && break; sleep 0.1; done
  [ -s $SERVING ] || { echo "server did not start"; cat /dev/shm/serve.log; exit 1; }
  suite "$(cat $SERVING)" ublk
  kill -TERM $SRV; wait $SRV; echo "server exit $? ($(tail -1 /dev/shm/serve.log))"
done

echo "--- medians over $ROUNDS rounds (IOPS, MiB/s) and ublk/loop ratio of the medians"
for j in 4k-randread 4k-randwrite 1M-write; do
  lo=$(awk -v j=$j '$1=="loop" && $2==j {print $3, $4}' $OUT | sort -n | awk '{a[NR]=$1; b[NR]=$2} END {m=int((NR+1)/2); print a[m], b[m]}')
  ub=$(awk -v j=$j '$1=="ublk" && $2==j {print $3, $4}' $OUT | sort -n | awk '{a[NR]=$1; b[NR]=$2} END {m=int((NR+1)/2); print a[m], b[m]}')
  echo "$j loop $lo ublk $ub" | awk '{ printf "%-13s loop %7d IOPS %8.1f MiB/s | ublk %7d IOPS %8.1f MiB/s | ratio %.2f\n", $1, $3, $4, $6, $7, ($3 > 0 ? $6/$3 : 0) }'
done

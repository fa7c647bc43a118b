#!/usr/bin/env bash
# test/vm/guest-driver.sh BUDGET_SECONDS PROGRAM.guest.js...
#
# Runs inside the guest (test/vm/run-in-guest.sh), started once per boot by
# test/vm/guest-suite.test.ts: runs each guest program in turn, each bounded by
# BUDGET_SECONDS, and prints for each, on stdout:
#
#   GUEST-BEGIN <name>
#   ...the program's stdout and stderr, merged in order...
#   GUEST-RESULT <name> <pass|fail|timeout> <exit status> <seconds>
#
# Why merged: the runner carries stdout and stderr on separate ports, so a
# program's stderr could not be told apart from another program's otherwise.
# Why one boot for all: a boot costs 4-10 s of TCG, more than most programs.
# Exits 0 when every program passed, 1 otherwise.
set -uo pipefail

# After the budget, timeout sends TERM; a program that ignores it is killed this much later.
readonly KILL_AFTER_S=10
# timeout(1)'s status when the budget ran out (137 when it had to KILL).
readonly TIMEOUT_STATUSES=" 124 137 "

[ $# -ge 1 ] && [[ $1 =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 BUDGET_SECONDS PROGRAM.guest.js..." >&2; exit 2; }
budget_s=$1; shift

all_passed=1
for program in "$@"; do
  name=$(basename "$program" .js)
  echo "GUEST-BEGIN $name"
  started_ns=$(date +%s%N)
  timeout --kill-after="$KILL_AFTER_S" "$budget_s" node --enable-source-maps "$program" < /dev/null 2>&1
  status=$?
  seconds=$(awk -v a="$started_ns" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
  if [ "$status" = 0 ]; then verdict=pass
  elif [[ $TIMEOUT_STATUSES == *" $status "* ]]; then verdict=timeout; all_passed=0
  else verdict=fail; all_passed=0; fi
  # on a line of its own even when the program's output did not end with a newline
  printf '\nGUEST-RESULT %s %s %s %s\n' "$name" "$verdict" "$status" "$seconds"
done
[ "$all_passed" = 1 ]

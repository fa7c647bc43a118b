#!/usr/bin/env bash
# test/vm/run-in-guest.sh — run one command inside a throw-away qemu guest whose
# Debian kernel has ublk (CONFIG_BLK_DEV_UBLK=m).
#
# Why: the machines that run our tests (and CI) have a kernel without ublk and
# no usable KVM, so the ublk frontend can only be tested for real under TCG
# emulation. This header holds the recipe and its measurements; README
# "Tests in a ublk guest" says how the suite uses it.
#
# Usage:
#   test/vm/run-in-guest.sh [--kernel bookworm|trixie] [--timeout SECONDS] [--mem MiB]
#                           [--keep] [--verbose] -- COMMAND [ARG...]
#   test/vm/run-in-guest.sh [--kernel ...] --setup   # install qemu, fetch and cache the
#                                                      # kernel; print its release; no boot
#
# What the guest looks like:
#   - root: the host's / over 9p read-only, under a tmpfs overlay (writes vanish);
#     so the host's node, fio, mkfs.*, util-linux tools are there as they are;
#   - read-write at the same paths as on the host: this checkout (dist/,
#     node_modules, the native build) and a per-run scratch dir ($UBLKSNAP_VM_SCRATCH);
#   - COMMAND runs as root, cwd = this checkout, environment: PATH and HOME, plus
#     CI and every UBLKSNAP_* variable of the caller; TMPDIR=/dev/shm because
#     AF_UNIX sockets cannot be created on 9p;
#   - nothing ublk-related is loaded: tests `modprobe ublk_drv` themselves
#     (modules.dep is prepared at cache time, modprobe works).
#
# Exit status: COMMAND's own, or
#   2   usage
#   120 setup failed: not root, qemu could not be installed, the kernel could not be fetched
#   123 the guest ended without an exit status after COMMAND had started (crash, power loss)
#   124 --timeout reached (qemu killed)
#   125 the guest never reached COMMAND, even after one automatic second boot
#
# Cache (never inside a checkout): $UBLKSNAP_VM_CACHE, default /var/cache/ublksnap-vm:
#   kernels/<release>/   extracted kernel + modules (depmod done), vmlinux, initramfs
#   tools/               static busybox, and kmod when the host has no depmod
#   suite-<suite>        the kernel release this suite resolved to (kept until
#                        UBLKSNAP_VM_REFRESH=1 --setup, so runs are reproducible)
#   runs/run.*           one dir per run (stdout/stderr FIFOs, status, console log, scratch)
#   .lock                serialises setup between concurrent runs
#
# Knobs (environment): UBLKSNAP_VM_CACHE (the cache dir), UBLKSNAP_VM_MIRROR (the
# Debian mirror; default: the machine's own), UBLKSNAP_VM_REFRESH=1 with --setup
# (resolve the suite's current kernel again), UBLKSNAP_VM_NO_INSTALL=1 (never
# apt-get install qemu), UBLKSNAP_VM_APPEND (extra guest kernel arguments).
set -uo pipefail

# ── constants ────────────────────────────────────────────────────────────
readonly EXIT_USAGE=2
readonly EXIT_SETUP=120
readonly EXIT_LOST=123
readonly EXIT_TIMEOUT=124
readonly EXIT_NO_BOOT=125
readonly CACHE=${UBLKSNAP_VM_CACHE:-/var/cache/ublksnap-vm}
readonly DEFAULT_TIMEOUT_S=1800
readonly DEFAULT_MEM_MIB=2048
readonly GUEST_CPUS=2
# The command must start this long after qemu starts; measured 3-8 s (11 s at load 5).
readonly BOOT_TIMEOUT_S=120
# A boot that never reached the command is retried this many times (7.x kernels
# oops during boot about 1 in 70 times under multi-threaded TCG).
readonly BOOT_RETRIES=1
readonly WATCHDOG_POLL_S=0.5
# Wait this long for qemu to die after SIGTERM before SIGKILL.
readonly QEMU_KILL_GRACE_S=5
# How long to wait for the host's dpkg lock when installing qemu.
readonly DPKG_LOCK_TIMEOUT_S=600
# Run dirs older than this were left by a SIGKILLed runner.
readonly STALE_RUN_MIN=1440
# Bump when the guest init or the initramfs layout changes: rebuilds only the initramfs.
readonly INITRD_VERSION=1
# Modules needed to mount the 9p root (their dependencies come from modules.dep).
readonly BOOT_MODULES="virtio_mmio 9pnet_virtio 9p overlay"
# The modprobe family, made available in the guest when the host root lacks kmod.
readonly KMOD_TOOLS="modprobe insmod rmmod lsmod modinfo depmod"
readonly KHZ_PER_MHZ=1000
readonly ARCHIVE_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
readonly CHECKOUT

log() { echo "run-in-guest: $*" >&2; }
die_setup() { log "$*"; exit "$EXIT_SETUP"; }
usage() { sed -n '10,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit "$EXIT_USAGE"; }
help() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0; }

# ── arguments ────────────────────────────────────────────────────────────
KERNEL_CHOICE=bookworm
TIMEOUT_S=$DEFAULT_TIMEOUT_S
MEM_MIB=$DEFAULT_MEM_MIB
MODE=run
KEEP=0
VERBOSE=0
while [ $# -gt 0 ]; do
  case $1 in
    --kernel) [ $# -ge 2 ] || usage; KERNEL_CHOICE=$2; shift 2;;
    --timeout) [ $# -ge 2 ] || usage; TIMEOUT_S=$2; shift 2;;
    --mem) [ $# -ge 2 ] || usage; MEM_MIB=$2; shift 2;;
    --setup) MODE=setup; shift;;
    --keep) KEEP=1; shift;;
    --verbose) VERBOSE=1; shift;;
    --) shift; break;;
    -h|--help) help;;
    *) log "unknown argument: $1"; usage;;
  esac
done
[[ $TIMEOUT_S =~ ^[1-9][0-9]*$ ]] || { log "--timeout wants whole seconds"; usage; }
[[ $MEM_MIB =~ ^[1-9][0-9]*$ ]] || { log "--mem wants MiB"; usage; }
case $KERNEL_CHOICE in
  # bookworm-backports: 6.12, 60+ boots without a failure — the default for CI.
  bookworm) SUITE=bookworm-backports;;
  # trixie-backports: 7.x with AUTO_BUF_REG, PER_IO_DAEMON, QUIESCE, BATCH_IO.
  trixie) SUITE=trixie-backports;;
  *) log "--kernel is bookworm or trixie, not $KERNEL_CHOICE"; usage;;
esac
readonly SUITE
[ "$MODE" = setup ] || [ $# -ge 1 ] || { log "no COMMAND after --"; usage; }
[ "$(id -u)" = 0 ] || die_setup "must run as root (qemu's 9p share of / and the cache in $CACHE)"

# ── setup: qemu, tools, kernel (all under the lock) ──────────────────────
host_suite() { ( . /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-bookworm}" ); }

mirror_uri() {  # the Debian mirror this machine already uses (deb822 first, then one-line sources)
  local uri=${UBLKSNAP_VM_MIRROR:-}
  [ -n "$uri" ] || uri=$(sed -n 's/^URIs: *\([^ ]*\/debian\)\/\{0,1\} *$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
  [ -n "$uri" ] || uri=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\/debian\)\/\{0,1\} [a-z].*/\2/p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1)
  echo "${uri:-http://deb.debian.org/debian}"
}

# apt with a private state: its own sources, lists, cache and an empty dpkg status,
# so the host's apt configuration and package database are never touched.
apt_private() {
  local a=$CACHE/apt
  "$@" -o Dir::Etc::SourceList="$a/sources.list" -o Dir::Etc::SourceParts="$a/sources.list.d" \
       -o Dir::Etc::Preferences="$a/preferences" -o Dir::Etc::PreferencesParts="$a/preferences.d" \
       -o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" -o Dir::State::status=/dev/null \
       -o Acquire::Languages=none -o APT::Sandbox::User=root
}

APT_READY=0
apt_private_update() {
  [ "$APT_READY" = 1 ] && return 0
  local a=$CACHE/apt uri hs
  rm -rf "$a"; mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/sources.list.d" "$a/preferences.d"
  uri=$(mirror_uri); hs=$(host_suite)
  {
    # the host's suite: busybox-static and kmod that run on the host's libraries
    printf 'deb [signed-by=%s] %s %s main\n' "$ARCHIVE_KEYRING" "$uri" "$hs"
    printf 'deb [signed-by=%s] %s %s main\n' "$ARCHIVE_KEYRING" "$uri" "$SUITE"
  } > "$a/sources.list"
  apt_private apt-get -q update >&2 || die_setup "apt-get update of the private lists ($hs, $SUITE from $uri) failed"
  APT_READY=1
}

ensure_qemu() {
  command -v qemu-system-x86_64 >/dev/null && return 0
  [ "${UBLKSNAP_VM_NO_INSTALL:-0}" = 1 ] && die_setup "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
  log "installing qemu-system-x86 (once per machine; .ci/run installs it up front)"
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout="$DPKG_LOCK_TIMEOUT_S"
                 --no-install-recommends qemu-system-x86)
  # the host's lists may be missing or stale on a fresh machine: update once and retry
  "${install[@]}" >&2 || { apt-get -q -o DPkg::Lock::Timeout="$DPKG_LOCK_TIMEOUT_S" update >&2 && "${install[@]}" >&2; } \
    || die_setup "apt-get install qemu-system-x86 failed"
}

is_static() { LC_ALL=C ldd "$1" 2>&1 | grep -q 'not a dynamic executable'; }

# Sets BUSYBOX (static: it is PID 1 of the initramfs) and KMOD_SBIN (a dir of
# modprobe, depmod... links to kmod or, failing that, busybox; empty when the host
# has its own kmod). busybox depmod takes 23 s, kmod's 9 s.
ensure_tools() {
  local t=$CACHE/tools hs deb
  mkdir -p "$t"
  BUSYBOX=
  for deb in /bin/busybox /usr/bin/busybox; do [ -x "$deb" ] && is_static "$deb" && { BUSYBOX=$deb; break; }; done
  if [ -z "$BUSYBOX" ]; then
    if [ ! -x "$t/busybox/bin/busybox" ]; then
      apt_private_update; hs=$(host_suite)
      rm -rf "$t/debs" "$t/busybox"; mkdir -p "$t/debs"
      ( cd "$t/debs" && apt_private apt-get -q download "busybox-static/$hs" ) >&2 || die_setup "apt-get download busybox-static failed"
      dpkg-deb -x "$t"/debs/busybox-static_*.deb "$t/busybox" || die_setup "dpkg-deb -x busybox-static failed"
      rm -rf "$t/debs"
    fi
    BUSYBOX=$t/busybox/bin/busybox
  fi
  KMOD_SBIN=
  command -v depmod >/dev/null && return 0
  if ! "$t/kmod/bin/kmod" --version >/dev/null 2>&1; then
    apt_private_update; hs=$(host_suite)
    rm -rf "$t/debs" "$t/kmod"; mkdir -p "$t/debs"
    ( cd "$t/debs" && apt_private apt-get -q download "kmod/$hs" ) >&2 \
      && dpkg-deb -x "$t"/debs/kmod_*.deb "$t/kmod" || log "WARNING: no kmod; falling back to busybox depmod (slow)"
    rm -rf "$t/debs"
  fi
  # kmod acts by the name it is called under
  local target=$BUSYBOX tool
  "$t/kmod/bin/kmod" --version >/dev/null 2>&1 && target=$t/kmod/bin/kmod
  rm -rf "$t/sbin"; mkdir -p "$t/sbin"
  for tool in $KMOD_TOOLS; do ln -s "$target" "$t/sbin/$tool"; done
  KMOD_SBIN=$t/sbin
}

# Prints module paths (relative to the module dir) of BOOT_MODULES and their
# dependencies, dependencies first, from modules.dep.
boot_module_closure() {
  local md=$1 m rel seen=" "
  visit() {
    local rel=$1 line dep
    case $seen in *" $rel "*) return 0;; esac
    seen="$seen$rel "
    line=$(grep -m1 "^$rel:" "$md/modules.dep") || return 0
    for dep in ${line#*:}; do visit "$dep"; done
    echo "$rel"
  }
  for m in $BOOT_MODULES; do
    rel=$(grep -m1 -E "(^|/)$m\.ko(\.[a-z]+)?:" "$md/modules.dep" | cut -d: -f1)
    if [ -n "$rel" ]; then visit "$rel"
    elif ! grep -qE "(^|/)$m\.ko\$" "$md/modules.builtin" 2>/dev/null; then log "WARNING: boot module $m neither built in nor found"; fi
  done
}

# Fetches the suite's current linux-image-amd64 into kernels/<release>/ and prepares it.
fetch_kernel() {
  local kpkg release dir deps pkgs p version base md kimg cfg offset
  apt_private_update
  kpkg=$(apt_private apt-cache depends "linux-image-amd64/$SUITE" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$kpkg" ] || die_setup "cannot resolve linux-image-amd64 in $SUITE"
  release=${kpkg#linux-image-}
  dir=$CACHE/kernels/$release
  if [ -e "$dir/.complete" ]; then echo "$release" > "$CACHE/suite-$SUITE"; return 0; fi
  log "fetching $kpkg from $SUITE (once per kernel release)"
  version=$(apt_private apt-cache show "$kpkg" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
  # Since 7.x Debian splits the kernel: linux-image-<abi> is a meta package for
  # linux-binary-<abi> (vmlinuz), linux-modules-<abi> and linux-base-<abi> (config).
  deps=$(apt_private apt-cache depends "$kpkg" 2>/dev/null) || die_setup "apt-cache depends $kpkg failed"
  pkgs=("$kpkg")
  pkgs+=($(awk -v abi="$release" '$1 == "Depends:" && ($2 == "linux-binary-" abi || $2 == "linux-modules-" abi || $2 == "linux-base-" abi) {print $2}' <<< "$deps"))
  rm -rf "$dir"; mkdir -p "$dir/debs"
  ( cd "$dir/debs" && apt_private apt-get -q download "${pkgs[@]}" ) >&2 || die_setup "apt-get download ${pkgs[*]} failed"
  for p in "$dir"/debs/*.deb; do dpkg-deb -x "$p" "$dir/root" || die_setup "dpkg-deb -x $p failed"; done
  rm -rf "$dir/debs"   # ~110 MB of .debs; the extracted tree is what is used
  # 6.x installs into /lib/modules and /boot, 7.x (merged /usr) into /usr/lib/modules/<release>/
  for base in "$dir/root/usr" "$dir/root"; do [ -d "$base/lib/modules/$release/kernel" ] && break; done
  md=$base/lib/modules/$release
  [ -d "$md/kernel" ] || die_setup "no modules for $release in $kpkg"
  for kimg in "$md/vmlinuz" "$dir/root/boot/vmlinuz-$release"; do [ -s "$kimg" ] && break; done
  for cfg in "$md/config" "$dir/root/boot/config-$release"; do [ -s "$cfg" ] && break; done
  [ -s "$kimg" ] || die_setup "no vmlinuz in $kpkg"
  grep -q '^CONFIG_BLK_DEV_UBLK=[ym]' "$cfg" || die_setup "$kpkg has no CONFIG_BLK_DEV_UBLK"
  grep -q '^CONFIG_9P_FS=[ym]' "$cfg" || die_setup "$kpkg has no CONFIG_9P_FS: it cannot mount the host root"
  # depmod once here, so modprobe in the guest finds ublk_drv without a 10-25 s depmod per boot
  local depmod_t0=$SECONDS
  local depmod=${KMOD_SBIN:+$KMOD_SBIN/depmod}
  "${depmod:-$(command -v depmod)}" -b "$base" "$release" || die_setup "depmod for $release failed"
  log "depmod took $((SECONDS - depmod_t0)) s"
  # The uncompressed vmlinux boots through PVH, faster under TCG than the bzImage's
  # self-decompression; fall back to the bzImage when there is no zstd payload.
  offset=$(LC_ALL=C grep -abo $'\x28\xb5\x2f\xfd' "$kimg" 2>/dev/null | head -n 1 | cut -d: -f1)
  if [ -n "$offset" ] && command -v zstd >/dev/null; then
    tail -c +$((offset + 1)) "$kimg" | zstd -dcq 2>/dev/null > "$dir/vmlinux.tmp"
    [ "$(head -c 4 "$dir/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] && mv "$dir/vmlinux.tmp" "$dir/vmlinux"
    rm -f "$dir/vmlinux.tmp"
  fi
  [ -s "$dir/vmlinux" ] || cp "$kimg" "$dir/vmlinux"
  printf '%s\n' "$kpkg" > "$dir/package"; printf '%s\n' "$version" > "$dir/version"
  printf '%s\n' "${md#"$dir/root"}" > "$dir/moddir"
  touch "$dir/.complete"
  echo "$release" > "$CACHE/suite-$SUITE"
}

build_initrd() {  # $1 = kernel dir: static busybox, the boot modules (decompressed) and /init
  local dir=$1 md ir rel name f applet
  md=$dir/root$(cat "$dir/moddir"); ir=$dir/initrd.d
  rm -rf "$ir"; mkdir -p "$ir"/{bin,dev,proc,sys,lower,ovl,newroot,share,modules}
  cp "$BUSYBOX" "$ir/bin/busybox"
  for applet in sh mount umount insmod mkdir ln cat cut chroot poweroff sync hostname ip echo; do ln -s busybox "$ir/bin/$applet"; done
  : > "$ir/modules/order"
  while read -r rel; do
    f=$md/$rel; name=${rel##*/}; name=${name%%.ko*}
    case $f in *.xz) xz -dc "$f";; *.zst) zstd -dcq "$f";; *.gz) gzip -dc "$f";; *) cat "$f";; esac > "$ir/modules/$name.ko" \
      || die_setup "cannot decompress $f"
    echo "$name" >> "$ir/modules/order"
  done < <(boot_module_closure "$md")
  write_init > "$ir/init"; chmod 755 "$ir/init"
  ( cd "$ir" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1 ) > "$dir/initrd.tmp" || die_setup "initramfs build failed"
  mv "$dir/initrd.tmp" "$dir/initrd-$INITRD_VERSION.img"
  rm -rf "$ir"
}

# PID 1 of the guest (busybox sh). Reads /share/config written by the host for this run.
write_init() { cat <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod /modules/$m.ko || echo "guest-init: insmod $m failed" > /dev/ttyS0; done < /modules/order
fail() { echo "guest-init: $*" > /dev/ttyS0; sync; poweroff -f; }
O9="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o $O9,cache=none run /share || fail "cannot mount the run dir"
. /share/config   # RUN_DIR RELEASE MODDIR KMOD_SBIN KMOD_TOOLS CHECKOUT
# the host root changes nothing during a run: cache=loose is safe and much faster
mount -t 9p -o $O9,ro,cache=loose root /lower || fail "cannot mount the host root"
mount -t tmpfs -o mode=755 ovl /ovl && mkdir /ovl/u /ovl/w
mount -t overlay -o lowerdir=/lower,upperdir=/ovl/u,workdir=/ovl/w overlay /newroot || fail "overlay failed"
R=/newroot
mount -t proc proc $R/proc; mount -t sysfs sysfs $R/sys; mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
ln -sf /proc/self/fd $R/dev/fd; ln -sf /proc/self/fd/0 $R/dev/stdin
ln -sf /proc/self/fd/1 $R/dev/stdout; ln -sf /proc/self/fd/2 $R/dev/stderr
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
mount -t tmpfs -o mode=755 run $R/run
# the run dir (status, scratch) and the checkout at the same paths as on the host
mkdir -p "$R$RUN_DIR" "$R$CHECKOUT"
mount --move /share "$R$RUN_DIR" || fail "cannot move the run dir"
mount -t 9p -o $O9,cache=mmap checkout "$R$CHECKOUT" || fail "cannot mount the checkout"
# this kernel's modules (depmod done on the host) where modprobe looks for them
mkdir -p "$R/lib/modules/$RELEASE" && mount --bind "$R$MODDIR" "$R/lib/modules/$RELEASE" || fail "cannot bind the modules"
# no kmod on the host: the cached one (or busybox) as modprobe & co, in /usr/local/sbin of the overlay
if [ -n "$KMOD_SBIN" ]; then
  mkdir -p $R/usr/local/sbin
  for t in $KMOD_TOOLS; do ln -sf "$KMOD_SBIN/$t" $R/usr/local/sbin/$t; done
fi
hostname ublksnap-vm; ip link set lo up 2>/dev/null
OUT=/dev/null; ERR=/dev/null
for p in /sys/class/virtio-ports/*; do
  case "$(cat $p/name 2>/dev/null)" in stdout) OUT=/dev/${p##*/};; stderr) ERR=/dev/${p##*/};; esac
done
UP=$(cut -d' ' -f1 /proc/uptime)
echo "guest-init: command starts at uptime $UP s" > /dev/ttyS0
echo "$UP" > "$R$RUN_DIR/started"
chroot $R /bin/bash "$RUN_DIR/command.sh" < /dev/null > $OUT 2> $ERR
echo $? > "$R$RUN_DIR/status"
sync
umount "$R$CHECKOUT" 2>/dev/null
poweroff -f
INIT
}

setup() {
  mkdir -p "$CACHE" || die_setup "cannot create $CACHE"
  exec 9> "$CACHE/.lock" || die_setup "cannot open $CACHE/.lock"
  flock 9   # concurrent runs wait for one setup instead of racing on the same files
  ensure_qemu
  ensure_tools
  local pointer=$CACHE/suite-$SUITE
  [ "${UBLKSNAP_VM_REFRESH:-0}" = 1 ] && [ "$MODE" = setup ] && rm -f "$pointer"
  RELEASE=
  [ -s "$pointer" ] && RELEASE=$(cat "$pointer")
  [ -n "$RELEASE" ] && [ -e "$CACHE/kernels/$RELEASE/.complete" ] || { fetch_kernel; RELEASE=$(cat "$pointer"); }
  KDIR=$CACHE/kernels/$RELEASE
  [ -s "$KDIR/initrd-$INITRD_VERSION.img" ] || { rm -f "$KDIR"/initrd-*.img; build_initrd "$KDIR"; }
  rm -rf "$CACHE/apt"   # package lists are only needed while fetching
  exec 9>&-
}

SETUP_T0=$SECONDS
setup
readonly KDIR RELEASE
log "kernel $RELEASE ($(cat "$KDIR/package") $(cat "$KDIR/version"), $SUITE)$( [ $((SECONDS - SETUP_T0)) -gt 0 ] && echo ", setup took $((SECONDS - SETUP_T0)) s")"
if [ "$MODE" = setup ]; then echo "$RELEASE"; exit 0; fi

# ── one run ──────────────────────────────────────────────────────────────
mkdir -p "$CACHE/runs"
find "$CACHE/runs" -mindepth 1 -maxdepth 1 -mmin +"$STALE_RUN_MIN" -exec rm -rf {} + 2>/dev/null
RUN=$(mktemp -d "$CACHE/runs/run.XXXXXX") || die_setup "mktemp in $CACHE/runs failed"
chmod 755 "$RUN"; mkdir "$RUN/scratch"

QEMU_PID=; WATCHDOG_PID=; READER_PIDS=()
stop_pid() {  # $1 = pid: TERM, bounded wait, then KILL
  local pid=$1 waited=0
  kill "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$QEMU_KILL_GRACE_S" ]; do sleep 1; waited=$((waited + 1)); done
  kill -9 "$pid" 2>/dev/null
}
cleanup() {
  [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null
  [ -n "$QEMU_PID" ] && stop_pid "$QEMU_PID"
  [ ${#READER_PIDS[@]} -gt 0 ] && kill "${READER_PIDS[@]}" 2>/dev/null
  if [ "$KEEP" = 1 ]; then log "run dir kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP

printf 'RUN_DIR=%q\nRELEASE=%q\nMODDIR=%q\nKMOD_SBIN=%q\nCHECKOUT=%q\nKMOD_TOOLS=%q\n' \
  "$RUN" "$RELEASE" "$KDIR/root$(cat "$KDIR/moddir")" "$KMOD_SBIN" "$CHECKOUT" "$KMOD_TOOLS" > "$RUN/config"

{
  echo '# written by test/vm/run-in-guest.sh: the command, its environment and cwd'
  # PATH is the caller's, so the guest finds the same node (the host root is the guest's root)
  printf 'export PATH=%q HOME=/root TMPDIR=/dev/shm UBLKSNAP_VM_SCRATCH=%q\n' \
    "/usr/local/sbin:/usr/sbin:/sbin:${PATH}" "$RUN/scratch"
  while IFS= read -r -d '' entry; do
    name=${entry%%=*}
    case $name in CI|UBLKSNAP_*) printf 'export %s=%q\n' "$name" "${entry#*=}";; esac
  done < <(env -0)
  printf 'cd -- %q || exit %d\n' "$CHECKOUT" "$EXIT_NO_BOOT"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} > "$RUN/command.sh"

# -erms: with ERMS the guest kernel copies user memory with "rep movsb", which TCG
# runs one byte per iteration (ublk 1 MiB writes 3-5x slower). TCG's guest TSC runs at
# the host rate and microvm has no HPET/PM timer to calibrate against under load: tell it.
host_khz=$(awk -F: '/^cpu MHz/ {printf "%d", $2 * '"$KHZ_PER_MHZ"'; exit}' /proc/cpuinfo)
APPEND="console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4 init_on_alloc=0 8250.nr_uarts=1"
[ -n "$host_khz" ] && [ "$host_khz" -gt 0 ] && APPEND="$APPEND tsc_early_khz=$host_khz tsc=reliable"
APPEND="$APPEND ${UBLKSNAP_VM_APPEND:-}"   # extra kernel arguments, for debugging a boot
QEMU_ARGS=(-accel tcg,thread=multi -M microvm -cpu max,-la57,-erms -smp "$GUEST_CPUS" -m "$MEM_MIB"
  -nodefaults -no-user-config -display none -no-reboot
  -kernel "$KDIR/vmlinux" -initrd "$KDIR/initrd-$INITRD_VERSION.img" -append "$APPEND"
  -serial "file:$RUN/console.log"
  -device virtio-serial-device
  -chardev "file,id=out,path=$RUN/stdout.fifo" -device virtserialport,chardev=out,name=stdout
  -chardev "file,id=err,path=$RUN/stderr.fifo" -device virtserialport,chardev=err,name=stderr
  -fsdev "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap" -device virtio-9p-device,fsdev=root,mount_tag=root
  -fsdev "local,id=run,path=$RUN,security_model=none" -device virtio-9p-device,fsdev=run,mount_tag=run
  -fsdev "local,id=checkout,path=$CHECKOUT,security_model=none,multidevs=remap" -device virtio-9p-device,fsdev=checkout,mount_tag=checkout)
mkfifo "$RUN/stdout.fifo" "$RUN/stderr.fifo"

T0=$(date +%s.%N)
RUN_S0=$SECONDS
attempt=0
while :; do
  rm -f "$RUN/started" "$RUN/started.host" "$RUN/status" "$RUN/boot-hung" "$RUN/timeout"
  # readers first: qemu opens the FIFOs for writing at start-up and would block without them
  cat "$RUN/stdout.fifo" & READER_PIDS=($!)
  cat "$RUN/stderr.fifo" >&2 & READER_PIDS+=($!)
  qemu-system-x86_64 "${QEMU_ARGS[@]}" < /dev/null > "$RUN/qemu.log" 2>&1 &
  QEMU_PID=$!
  # watchdog: the command must start within BOOT_TIMEOUT_S, the whole run end within TIMEOUT_S
  # (--timeout counts from the first boot, retries included)
  ( trap 'exit 0' TERM
    boot_s0=$SECONDS
    while kill -0 "$QEMU_PID" 2>/dev/null; do
      if [ ! -e "$RUN/started.host" ]; then
        if [ -e "$RUN/started" ]; then date +%s.%N > "$RUN/started.host"
        elif [ $((SECONDS - boot_s0)) -ge "$BOOT_TIMEOUT_S" ]; then touch "$RUN/boot-hung"; kill "$QEMU_PID"; exit 0; fi
      fi
      [ $((SECONDS - RUN_S0)) -ge "$TIMEOUT_S" ] && { touch "$RUN/timeout"; kill "$QEMU_PID"; exit 0; }
      sleep "$WATCHDOG_POLL_S"
    done ) < /dev/null > /dev/null 2>&1 &
  WATCHDOG_PID=$!
  wait "$QEMU_PID"; qemu_status=$?
  QEMU_PID=
  kill "$WATCHDOG_PID" 2>/dev/null; wait "$WATCHDOG_PID" 2>/dev/null; WATCHDOG_PID=
  # if qemu died before opening a FIFO, its reader still waits for a writer: open and close one
  for f in stdout stderr; do exec 8<> "$RUN/$f.fifo"; exec 8>&-; done
  wait "${READER_PIDS[@]}" 2>/dev/null; READER_PIDS=()
  if [ ! -e "$RUN/started" ] && [ ! -e "$RUN/timeout" ] && [ "$attempt" -lt "$BOOT_RETRIES" ]; then
    attempt=$((attempt + 1))
    if [ -e "$RUN/boot-hung" ]; then log "the guest did not reach the command within ${BOOT_TIMEOUT_S} s; booting again"
    else log "the guest died before the command started (qemu status $qemu_status); booting again"; fi
    tail -n 5 "$RUN/console.log" >&2
    mv "$RUN/console.log" "$RUN/console-failed-$attempt.log"
    continue
  fi
  break
done
T1=$(date +%s.%N)

if [ -e "$RUN/timeout" ]; then
  log "timed out after ${TIMEOUT_S} s; qemu killed"; status=$EXIT_TIMEOUT
elif [ -s "$RUN/status" ]; then
  status=$(cat "$RUN/status")
elif [ -e "$RUN/started" ]; then
  log "the guest ended without an exit status after the command started (qemu status $qemu_status); console tail:"
  tail -n 40 "$RUN/console.log" "$RUN/qemu.log" >&2; status=$EXIT_LOST
else
  log "the guest never reached the command (qemu status $qemu_status); console tail:"
  tail -n 40 "$RUN/console.log" "$RUN/qemu.log" >&2; status=$EXIT_NO_BOOT
fi
boot='?'
[ -s "$RUN/started.host" ] && boot=$(awk -v a="$T0" -v b="$(cat "$RUN/started.host")" 'BEGIN {printf "%.1f", b - a}')
log "kernel $RELEASE: command started ${boot} s after qemu start (guest uptime $(cat "$RUN/started" 2>/dev/null || echo '?') s), total $(awk -v a="$T0" -v b="$T1" 'BEGIN {printf "%.1f", b - a}') s, status $status$( [ "$attempt" -gt 0 ] && echo ", boots retried: $attempt")"
[ "$VERBOSE" = 1 ] && cat "$RUN/console.log" >&2
exit "$status"

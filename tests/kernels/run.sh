#!/usr/bin/env bash
# Boots the distributions' own kernels under QEMU (TCG: no KVM needed) with this machine's root
# file system shared read-only over 9p (a tmpfs overlay on top, so nothing is written back) and
# runs tests/kernels/scenario.sh there as root with the ftagent binary given (the kernels side
# by side, a vCPU each): one functional scenario, no floods, no timing assertions. Prints each
# check's result per kernel; exits 1 when a check failed on any of them, 3 when none failed but
# a kernel could not be fetched.
#
#   bash tests/kernels/run.sh [--binary PATH] [debian12] [debian11]    (default: both)
#   bash tests/kernels/run.sh --fetch [debian12] [debian11]             only fetch the kernels
#
# debian12: Debian 12's kernel, 6.1 (linux-image-6.1.0-N-amd64, the newest N in the archive).
# debian11: Debian 11's kernel, 5.10 — a floor below AlmaLinux 9's 5.14 (which carries many
#           backports from later kernels, so what works on 5.10 works there).
# The kernel packages are fetched with `apt-get download` (never installed), Debian 11's through
# a private apt configuration with a bullseye line (the host's sources and lists are not
# touched), unpacked and kept under target/kernels/, so a second run downloads nothing.
# Needs root and qemu-system-x86, busybox-static and kmod (tests/deps.sh --test).
#
# Env: MEM (guest memory, default 1G), CPUS (default 1), TIMEOUT (seconds per boot, default 420),
#      DEBUG=1 (the whole console).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

binary=
fetch_only=
kernels=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --fetch) fetch_only=1; shift ;;
    debian12 | debian11) kernels+=("$1"); shift ;;
    *) echo "usage: $0 [--binary PATH] [debian12] [debian11]" >&2; exit 2 ;;
  esac
done
[ "${#kernels[@]}" -gt 0 ] || kernels=(debian12 debian11)
if [ -z "$binary" ] && [ -z "$fetch_only" ]; then
  for b in target/release/ftagent target/debug/ftagent; do
    [ -x "$b" ] && { binary=$b; break; }
  done
fi
if [ -z "$fetch_only" ]; then
  [ -n "$binary" ] && [ -x "$binary" ] || { echo "$0: no ftagent binary (cargo build first, or --binary)" >&2; exit 2; }
  binary=$(realpath "$binary")
fi
for tool in qemu-system-x86_64 busybox modprobe depmod apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "$0: needs $tool (bash tests/deps.sh --test)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "$0: needs root (the guest runs the host's root file system)" >&2; exit 2; }

cache=$root/target/kernels
mkdir -p "$cache"

# The newest cached kernel of a series (e.g. 6.1.0), or nothing.
cached() {
  local v
  for v in $(ls "$cache" 2>/dev/null | grep "^$1-[0-9]*-amd64\$" | sort -V -r); do
    [ -e "$cache/$v/lib/modules/$v/modules.dep" ] && [ -e "$cache/$v/boot/vmlinuz-$v" ] && { echo "$v"; return; }
  done
}

# Unpacks a downloaded linux-image .deb into the cache and indexes its modules.
unpack() {
  local deb=$1 version=$2
  rm -rf "$cache/$version.part"
  dpkg-deb -x "$deb" "$cache/$version.part"
  depmod -b "$cache/$version.part" "$version"
  mv "$cache/$version.part" "$cache/$version"
}

# Debian 12's 6.1, from the host's own sources (a bookworm system).
fetch_debian12() {
  local version tmp
  version=$(cached 6.1.0)
  if [ -z "$version" ]; then
    version=$(apt-cache search '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1 | sed 's/^linux-image-//')
    [ -n "$version" ] || { echo "$0: no linux-image-6.1.0-*-amd64 in the apt sources" >&2; return 1; }
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get -o APT::Sandbox::User=root download -q "linux-image-$version" >/dev/null)
    unpack "$tmp"/linux-image-*.deb "$version"
    rm -rf "$tmp"
  fi
  echo "$version"
}

# Debian 11's 5.10, through a private apt configuration with a bullseye line from the same
# archive as the host's own sources: /etc/apt and /var/lib/apt are left as they were.
fetch_debian11() {
  local version apt tmp uri
  version=$(cached 5.10.0)
  if [ -z "$version" ]; then
    apt=$(mktemp -d)
    tmp=$(mktemp -d)
    uri=$(grep -rhoE 'https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 | tr -d ' ')
    echo "deb ${uri:-http://deb.debian.org/debian} bullseye main" >"$apt/sources.list"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/none"
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
    apt-get "${opts[@]}" update -qq >/dev/null
    version=$(apt-cache "${opts[@]}" search '^linux-image-5\.10\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1 | sed 's/^linux-image-//')
    [ -n "$version" ] || { echo "$0: no linux-image-5.10.0-*-amd64 in bullseye" >&2; rm -rf "$apt" "$tmp"; return 1; }
    (cd "$tmp" && apt-get "${opts[@]}" download -q "linux-image-$version" >/dev/null)
    unpack "$tmp"/linux-image-*.deb "$version"
    rm -rf "$apt" "$tmp"
  fi
  echo "$version"
}

# Boots kernel $1 and runs the scenario with the binary; the guest's console goes to stdout.
boot() {
  local version=$1 kdir=$cache/$1 w
  w=$(mktemp -d /tmp/ftagent-kernel.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$w'" RETURN
  mkdir -p "$w"/i/{bin,m,proc,sys,dev,ro,rw,newroot} "$w/share"
  cp "$(command -v busybox)" "$w/i/bin/busybox"
  # The modules to reach the root file system, in load order (modprobe resolves each kernel's
  # own dependencies: 5.10 has no netfs, 6.1 does).
  modprobe -d "$kdir" -S "$version" --show-depends -a virtio_pci 9pnet_virtio 9p overlay |
    awk '$1 == "insmod" {print $2}' | awk '!seen[$0]++' >"$w/modules"
  local m
  while read -r m; do
    cp "$m" "$w/i/m/"
    basename "$m" >>"$w/i/m/order"
  done <"$w/modules"
  cat >"$w/i/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /m/order); do insmod /m/$m; done
O=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $O,ro,cache=loose hostroot /ro
mount -t tmpfs -o size=50% tmpfs /rw; mkdir -p /rw/u /rw/w
mount -t overlay -o lowerdir=/ro,upperdir=/rw/u,workdir=/rw/w,xino=off,redirect_dir=off,index=off,metacopy=off ovl /newroot
R=/newroot
mount -t proc proc $R/proc; mount -t sysfs sys $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm; mount -t devpts devpts $R/dev/pts; mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs tmpfs $R/run; mount -t tmpfs tmpfs $R/tmp
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
mkdir -p $R/lib/modules/$(uname -r) $R/share
mount -t 9p -o $O,ro modules $R/lib/modules/$(uname -r)
mount -t 9p -o $O share $R/share
hostname ftagent-guest; ip link set lo up
exec switch_root $R /bin/bash /share/stage2.sh
EOF
  chmod +x "$w/i/init"
  (cd "$w/i" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$w/initrd"
  cp tests/kernels/scenario.sh "$w/share/scenario.sh"
  # The binary goes in the share: the guest's /tmp is a tmpfs of its own, so a checkout under
  # the host's /tmp (a fresh clone) is not where it seems.
  cp "$binary" "$w/share/ftagent"
  cat >"$w/share/stage2.sh" <<EOF
# PID 1 in the overlaid host root (switch_root, not chroot: module autoload needs /sbin/modprobe).
cd /tmp; export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo @@VM-START@@ >/dev/console
bash /share/scenario.sh /share/ftagent </dev/null >/dev/console 2>&1
echo \$? >/share/rc; sync
echo 1 >/proc/sys/kernel/sysrq; echo o >/proc/sysrq-trigger; sleep 10
EOF
  local status=0
  timeout --kill-after=10 "${TIMEOUT:-420}" \
    qemu-system-x86_64 -accel tcg,thread=multi -machine q35 -cpu max -smp "${CPUS:-1}" -m "${MEM:-1G}" \
    -nographic -no-reboot -nodefaults -serial stdio -monitor none \
    -kernel "$kdir/boot/vmlinuz-$version" -initrd "$w/initrd" \
    -append "console=ttyS0 quiet loglevel=${DEBUG:+7}${DEBUG:-0} panic=-1 rdinit=/init" \
    -fsdev local,id=r,path=/,readonly=on,security_model=none,multidevs=remap -device virtio-9p-pci,fsdev=r,mount_tag=hostroot \
    -fsdev local,id=m,path="$kdir/lib/modules/$version",readonly=on,security_model=none -device virtio-9p-pci,fsdev=m,mount_tag=modules \
    -fsdev local,id=s,path="$w/share",security_model=none -device virtio-9p-pci,fsdev=s,mount_tag=share \
    </dev/null | tr -d '\r' | if [ -n "${DEBUG:-}" ]; then cat; else awk 'f && !/sysrq: Power Off|reboot: Power down/; /@@VM-START@@/ {f=1}'; fi || status=$?
  if [ -f "$w/share/rc" ]; then
    return "$(cat "$w/share/rc")"
  fi
  echo "the guest did not finish (qemu: status $status; timeout ${TIMEOUT:-420} s)"
  return 255
}

failed=0
unfetched=0
summary=()
versions=()
for k in "${kernels[@]}"; do
  version=$("fetch_$k") || { summary+=("$k: the kernel could not be fetched"); unfetched=1; continue; }
  if [ -n "$fetch_only" ]; then
    echo "$k: $cache/$version"
    continue
  fi
  versions+=("$k=$version")
done
# The guests boot side by side, a vCPU (one host thread) each: the run takes as long as the
# slowest kernel's, not the sum (the machines this runs on have two cores or more).
for kv in "${versions[@]}"; do
  k=${kv%%=*} version=${kv#*=}
  rm -f "$cache/$k.rc"
  (
    start=$SECONDS rc=0
    boot "$version" >"$cache/$k.log" 2>&1 || rc=$?
    echo "$rc $((SECONDS - start))" >"$cache/$k.rc"
  ) &
done
wait
for kv in "${versions[@]}"; do
  k=${kv%%=*} version=${kv#*=}
  echo "=== $k: kernel $version, $binary"
  cat "$cache/$k.log"
  read -r rc took <"$cache/$k.rc" || { rc=255 took=?; }
  passed=$(grep -c '^PASS ' "$cache/$k.log" || true)
  fails=$(grep -c '^FAIL ' "$cache/$k.log" || true)
  summary+=("$k ($version): $passed passed, $fails failed, $took s$([ "$rc" = 0 ] || echo ", exit $rc")")
  [ "$rc" = 0 ] && [ "$fails" = 0 ] || failed=1
done
# 1: a check failed; 3: nothing failed, but a kernel could not be fetched (no archive here).
[ "$failed" = 1 ] || [ "$unfetched" = 0 ] || failed=3
[ -z "$fetch_only" ] || exit "$failed"
echo
echo "=== the distributions' kernels:"
printf '  %s\n' "${summary[@]}"
exit "$failed"

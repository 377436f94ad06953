#!/usr/bin/env bash
# Installs what ftagent needs on Debian 12 (run as root): the build dependencies and, with
# --test, the tools the test suite drives (nft, iptables, ipset, conntrack, ip, ping, hping3,
# trafgen, python3, Fail2Ban for the coexistence tests, gobgpd for the BGP tests, openssl for
# the webhook receivers' certificates, tcpdump and tshark to read the incident captures,
# prometheus (promtool and a real server) for the metrics tests, systemd: systemd-analyze
# and systemd as PID 1 of a namespace for the unit's tests, wrk and slowhttptest for HTTP
# floods and Slowloris, nginx-light for the victim's web server, stress-ng for a run under
# load, rpm (rpmbuild) and man-db for the packages' test (packaging/build.sh), firewalld
# (started only by its test, in a namespace with a private D-Bus), and qemu-system-x86,
# busybox-static and kmod for booting the distributions' own kernels (tests/kernels/run.sh
# fetches those). Installs Rust through rustup only when no cargo is on the PATH.
set -euo pipefail

build=(build-essential pkg-config libclang-dev linux-libc-dev nftables ca-certificates curl)
test=(iptables ipset conntrack iproute2 iputils-ping hping3 netsniff-ng util-linux procps python3 fail2ban gobgpd systemd openssl tcpdump tshark prometheus wrk slowhttptest nginx-light stress-ng rpm man-db firewalld dbus-daemon qemu-system-x86 busybox-static kmod)

want=("${build[@]}")
[ "${1:-}" = "--test" ] && want+=("${test[@]}")

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # firewalld, once installed and started, would put the host's own interfaces in its zones:
  # masked before it is installed, it is never started (the test runs its own in a namespace).
  if [[ " ${missing[*]} " == *" firewalld "* ]] && [ -d /run/systemd/system ]; then
    systemctl mask firewalld >/dev/null 2>&1 || true
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests run their own Fail2Ban in namespaces; the host's, just installed and started by
  # the package on a systemd machine, would watch the host's logs: stop it again.
  if [[ " ${missing[*]} " == *" fail2ban "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now fail2ban >/dev/null 2>&1 || true
  fi
  # Likewise gobgpd: the BGP tests run their own in namespaces, never the host's.
  if [[ " ${missing[*]} " == *" gobgpd "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now gobgpd >/dev/null 2>&1 || true
  fi
  # And Prometheus: the metrics tests run their own server in a namespace.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  # And firewalld, should it have started anyway (no systemd to mask it: its init script).
  if [[ " ${missing[*]} " == *" firewalld "* ]]; then
    if [ -d /run/systemd/system ]; then
      systemctl mask --now firewalld >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/firewalld ]; then
      /etc/init.d/firewalld stop >/dev/null 2>&1 || true
      update-rc.d firewalld disable >/dev/null 2>&1 || true
    fi
  fi
  # And nginx: the lab runs its own in the victim's namespace with a private configuration
  # (tests/lab/web.rs); the package starts the host's on :80 (through systemd, or its init
  # script where there is no systemd and no policy-rc.d to deny it): stop it and keep it off.
  if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
    if [ -d /run/systemd/system ]; then
      systemctl disable --now nginx >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/nginx ]; then
      /etc/init.d/nginx stop >/dev/null 2>&1 || true
      update-rc.d nginx disable >/dev/null 2>&1 || true
    fi
  fi
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

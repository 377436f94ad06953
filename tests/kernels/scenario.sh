#!/usr/bin/env bash
# The functional scenario tests/kernels/run.sh runs as root on a distribution's kernel under
# QEMU: ftagent (the binary given) in a network namespace `v` joined by a veth to an attacker
# namespace `a` (addresses in 10.250.0.0/16 and fd00:250::/64 only), driven through its command
# line. No floods and no timing assertions: every wait is a generous poll (everything in the
# guest is about ten times slower than on the host). Prints `PASS name` or `FAIL name` (with
# what was seen) per check; exits with the number of failed checks.
#
#   bash scenario.sh /path/to/ftagent
set -u
BIN=${1:?usage: $0 FTAGENT_BINARY}
D=/tmp/fta
mkdir -p "$D"
failed=0
V() { ip netns exec v "$@"; }
A() { ip netns exec a "$@"; }
F() { V "$BIN" -c "$D/ftagent.toml" "$@"; }

pass() { echo "PASS $1"; }
fail() {
  echo "FAIL $1"
  shift
  local detail
  for detail in "$@"; do printf '%s\n' "$detail" | tail -n 25 | sed 's/^/    /'; done
  failed=$((failed + 1))
}
# Polls `$@` every 0.5 s for up to $1 seconds.
within() {
  local end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.5
  done
}
# True when $2 (fixed string) is in the output of the rest.
has() {
  local want=$1
  shift
  # grep reads to the end: a writer that finds its pipe closed would fail.
  "$@" 2>/dev/null | grep -F -- "$want" >/dev/null
}
# True when a ping from the attacker's address $1 to the victim is answered.
answers() {
  case $1 in
    *:*) A ping -6 -c 1 -W 2 -I "$1" fd00:250::2 >/dev/null 2>&1 ;;
    *) A ping -c 1 -W 2 -I "$1" 10.250.0.2 >/dev/null 2>&1 ;;
  esac
}
set_has() { has "$2" V nft list set inet ftagent "$1"; }
status_field() { F status --json | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }
log_tail() { echo "daemon stderr:"; tail -n 15 "$D/daemon.err" 2>/dev/null; }

config() {
  cat >"$D/ftagent.toml" <<EOF
[agent]
control_socket = "$D/ftagent.sock"
state_dir = "$D/state"
warmup = "5s"

[safelist]
cidrs = ["10.250.9.0/24"$1]

[nft]
compat = "auto"

[mitigation]
on_stop = "$2"
$3
EOF
}

start() {
  rm -f "$D/ftagent.sock"
  # Not through the function V: `ip netns exec` execs ftagent, so $! is the daemon's pid.
  [ ! -f "$D/daemon.err" ] || cat "$D/daemon.err" >>"$D/daemon-earlier.err"
  ip netns exec v "$BIN" -c "$D/ftagent.toml" run >"$D/daemon.out" 2>"$D/daemon.err" &
  pid=$!
  local end=$((SECONDS + 120))
  until [ -S "$D/ftagent.sock" ]; do
    kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.5
  done
  within 30 F status
}

stop() {
  kill -TERM "$pid"
  local end=$((SECONDS + 120))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null
    return 1
  fi
  wait "$pid"
}

echo "kernel $(uname -r); nft $(nft -v | awk '{print $2}'); $("$BIN" --version)"

# --- the namespaces: victim v (ftagent), attacker a; a bystander table in v --------------------
ip netns add v && ip netns add a && ip netns add c
ip link add fta-v0 type veth peer name fta-a0
ip link set fta-v0 netns v
ip link set fta-a0 netns a
V ip link set lo up
A ip link set lo up
V ip addr add 10.250.0.2/16 dev fta-v0
V ip addr add fd00:250::2/64 dev fta-v0 nodad
A ip addr add 10.250.0.1/16 dev fta-a0
A ip addr add 10.250.0.3/16 dev fta-a0
A ip addr add 10.250.1.1/16 dev fta-a0
A ip addr add fd00:250::1/64 dev fta-a0 nodad
V ip link set fta-v0 up
A ip link set fta-a0 up
V nft add table inet other
V nft 'add chain inet other input { type filter hook input priority 0 ; }'
V nft add rule inet other input tcp dport 22 counter accept
other_before=$(V nft list table inet other)
if within 30 answers 10.250.0.1 && answers 10.250.1.1 && within 30 answers fd00:250::1; then
  pass "the namespaces' veth answers pings (IPv4, IPv6)"
else
  fail "the namespaces' veth answers pings (IPv4, IPv6)" "$(V ip addr; A ip addr)"
fi

# --- 1. the table, in the mode this kernel supports ---------------------------------------------
config "" keep ""
if start; then
  mode=$(status_field 's["kernel_mode"] + ", timeout refresh " + str(s["timeout_refresh"]).lower()')
  if has "table inet ftagent" V nft list table inet ftagent; then
    pass "table inet ftagent installed (mode: $mode)"
  else
    fail "table inet ftagent installed" "$(V nft list tables)" "$(log_tail)"
  fi
else
  fail "ftagent run starts and answers on its control socket" "$(log_tail)"
  echo "(the daemon did not start: the other checks are skipped)"
  exit "$failed"
fi

# --- 2. bans with timeouts: addresses, IPv4 and IPv6; real packets dropped; a ban runs out --------
F ban 10.250.0.1 --for 10m >/dev/null
F ban fd00:250::1 --for 10m >/dev/null
F ban 10.250.0.3 --for 5s >/dev/null
if set_has ban4 "10.250.0.1 timeout 10m expires" && set_has ban6 "fd00:250::1 timeout 10m expires" &&
  ! answers 10.250.0.1 && ! answers fd00:250::1; then
  pass "bans with timeouts (10.250.0.1, fd00:250::1 for 10m): in ban4/ban6, their pings dropped"
else
  fail "bans with timeouts" "$(V nft list set inet ftagent ban4; V nft list set inet ftagent ban6)" "$(log_tail)"
fi
ran_out() { ! V nft list set inet ftagent ban4 | grep -qF 10.250.0.3; }
if within 120 ran_out && within 20 answers 10.250.0.3; then
  pass "a 5 s ban runs out in the kernel and its source is answered again"
else
  fail "a 5 s ban runs out" "$(V nft list set inet ftagent ban4)"
fi

# --- 3. prefix bans --------------------------------------------------------------------------------
F ban 10.250.1.0/24 --for 1h >/dev/null
F ban fd00:250:0:0:1::/80 --for 30m >/dev/null
if set_has bannet4 "10.250.1.0/24 timeout 1h expires" && set_has bannet6 "fd00:250:0:0:1::/80 timeout 30m expires" &&
  ! answers 10.250.1.1 && answers 10.250.0.3; then
  pass "prefix bans (10.250.1.0/24, fd00:250:0:0:1::/80): in bannet4/bannet6, 10.250.1.1 dropped, 10.250.0.3 spared"
else
  fail "prefix bans" "$(V nft list set inet ftagent bannet4; V nft list set inet ftagent bannet6)" "$(log_tail)"
fi

# --- 4. the ipset mirror and the iptables chain FTAGENT -----------------------------------------
if within 120 has "10.250.0.1 timeout" V ipset list ftagent-ip4 && has "10.250.1.0/24 timeout" V ipset list ftagent-net4 &&
  has "fd00:250::1 timeout" V ipset list ftagent-ip6 && within 120 has "--match-set ftagent-ban4 src" V iptables -S FTAGENT &&
  has "-j FTAGENT" V iptables -S INPUT; then
  pass "the ipset mirror (ftagent-ip4/ip6/net4 with timeouts) and the iptables chain FTAGENT ($(V iptables -V | awk '{print $2, $3}'))"
else
  fail "the ipset mirror and the FTAGENT chain" "$(V ipset list -t; V ipset list ftagent-ip4; V iptables -S)" "$(log_tail)"
fi

# --- 5. restored after `nft flush ruleset` ----------------------------------------------------------
V nft flush ruleset
if within 120 set_has ban4 "10.250.0.1 timeout 10m expires" && set_has bannet4 "10.250.1.0/24 timeout 1h" &&
  set_has ban6 "fd00:250::1 timeout" && within 60 grep -q '"event":"table_restored"' "$D/daemon.out" && ! answers 10.250.0.1; then
  pass "the table is put back after 'nft flush ruleset' with its bans and their remaining time"
else
  fail "the table is put back after 'nft flush ruleset'" "$(V nft list ruleset | head -n 40)" "$(log_tail)"
fi
V nft add table inet other
V nft 'add chain inet other input { type filter hook input priority 0 ; }'
V nft add rule inet other input tcp dport 22 counter accept
other_before=$(V nft list table inet other)

# --- 6. reload (SIGHUP): a safelist prefix and a service port added --------------------------------
config ', "10.250.8.0/24"' keep $'\n[[service]]\nport = 8080\nproto = "tcp"'
kill -HUP "$pid"
if within 120 has 10.250.8.0/24 F rules dump &&
  within 30 has "True" status_field 's["reload"]["ok"]' && has "counter tcp_8080" F rules dump; then
  pass "reload on SIGHUP: safelist 10.250.8.0/24 and service 8080/tcp in the kernel ($(status_field 's["reload"]["applied"]'))"
else
  fail "reload on SIGHUP" "$(F status --json | head -c 2000)" "$(log_tail)"
fi

# --- 7. `rules dump` is nft that `nft -c -f` accepts (checked in a namespace without our table) ----
F rules dump >"$D/dump.nft"
if has "table inet ftagent" cat "$D/dump.nft" && ip netns exec c nft -c -f "$D/dump.nft" >"$D/nft-c.out" 2>&1; then
  pass "'rules dump' ($(wc -l <"$D/dump.nft") lines) is accepted by 'nft -c -f'"
else
  fail "'rules dump' is accepted by 'nft -c -f'" "$(cat "$D/nft-c.out")"
fi

# --- 8. the early chain (before defragmentation): fragments counted, a banned source's dropped ----
fragments() { V nft list counter inet ftagent fragment | awk '/packets/ {print $2}'; }
before=$(fragments)
if has "hook prerouting priority -450" V nft list chain inet ftagent early &&
  A ping -c 2 -W 3 -s 3000 -I 10.250.0.3 10.250.0.2 >/dev/null 2>&1 && [ "$(fragments)" -gt "${before:-0}" ] &&
  ! A ping -c 1 -W 2 -s 3000 -I 10.250.0.1 10.250.0.2 >/dev/null 2>&1; then
  pass "the early chain at -450: fragments counted ($before -> $(fragments)), a banned source's fragments dropped"
else
  fail "the early chain" "$(V nft list chain inet ftagent early)" "fragment counter: $before -> $(fragments)"
fi

# --- 9. a stop keeps the table (on_stop = "keep"), a restart takes it over ------------------------
if stop && has "10.250.0.1 timeout 10m" V nft list set inet ftagent ban4 && ! answers 10.250.0.1; then
  pass "SIGTERM with on_stop = \"keep\": exit 0, the table and its bans stay"
else
  fail "SIGTERM with on_stop = \"keep\"" "$(log_tail)" "$(V nft list tables)"
fi
if start && has "10.250.0.1" status_field '[b["cidr"] for b in s["operator_bans"]]' &&
  set_has ban4 "10.250.0.1 timeout 10m" && set_has bannet4 "10.250.1.0/24 timeout 1h"; then
  pass "a restart takes the kept table over: the operator's bans with their remaining time"
else
  fail "a restart takes the kept table over" "$(log_tail)" "$(V nft list set inet ftagent ban4)"
fi

# --- 10. a stop with on_stop = "remove" (set by a reload): the table goes ---------------------------
config ', "10.250.8.0/24"' remove $'\n[[service]]\nport = 8080\nproto = "tcp"'
kill -HUP "$pid"
sleep 2
if within 60 has "True" status_field 's["reload"]["ok"]' && stop && ! V nft list table inet ftagent >/dev/null 2>&1; then
  pass "SIGTERM with on_stop = \"remove\" (set by a reload): exit 0, table inet ftagent gone"
else
  fail "SIGTERM with on_stop = \"remove\"" "$(log_tail)" "$(V nft list tables)"
fi

# --- 11. rules flush: nothing of ours left, nothing else touched -----------------------------------
F rules flush >/dev/null 2>"$D/flush.err"
if ! V nft list table inet ftagent >/dev/null 2>&1 && ! has ftagent- V ipset list -n && ! has FTAGENT V iptables -S &&
  [ "$(V nft list table inet other)" = "$other_before" ]; then
  pass "'rules flush': no table, ipset or iptables chain of ours left; table inet other unchanged"
else
  fail "'rules flush'" "$(cat "$D/flush.err")" "$(V nft list ruleset; V ipset list -n)"
fi

# What the agent said of this kernel (its warnings and the mode it chose), for the record.
grep -hE 'WARN|kernel mode' "$D"/daemon*.err 2>/dev/null | sed -E 's/^\[[^ ]+ /  agent: [/' | sort -u
ip netns del v
ip netns del a
ip netns del c
exit "$failed"

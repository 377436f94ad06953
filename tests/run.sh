#!/usr/bin/env bash
# The whole test suite, as root on Debian 12: installs what the tests need, then runs the unit
# tests and the one integration-test binary (namespace tests included: they create their own
# network namespaces and never touch the host's firewall; one boots Debian 12's and Debian 11's
# own kernels under QEMU for a functional scenario there: tests/kernels/run.sh, a few minutes;
# another runs a real firewalld in a namespace). Afterwards it prints the lab's
# record: for every namespace test, what the victim received (its flood's shape; the per-100 ms
# counts are in target/tmp/lab-report.txt) and what share of the lab's users was served.
#
#   bash tests/run.sh [FILTER…]     only the tests whose names contain a FILTER
#   FTAGENT_TEST_RATE=0.5|2 …       scale every paced flood's rate (and count) in the tests
#   FTAGENT_TEST_LOAD=1 …           the same run with stress-ng loading one core throughout
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
report=target/tmp/lab-report.txt
mkdir -p target/tmp
rm -f "$report"
if [ -n "${FTAGENT_TEST_LOAD:-}" ]; then
  stress-ng --cpu 1 --timeout 2h --quiet &
  load=$!
  trap 'kill "$load" 2>/dev/null || true' EXIT
  echo "tests/run.sh: stress-ng loads one core (pid $load)"
fi
rc=0
if [ "$#" -gt 0 ]; then
  cargo test --locked --lib --bins --test tests -- "$@" || rc=$?
else
  cargo test --locked --lib --bins --test tests || rc=$?
fi
if [ -f "$report" ]; then
  echo
  echo "The lab's record (rate knob ${FTAGENT_TEST_RATE:-1}; per-100 ms counts in $report):"
  grep -v '^  per 100 ms' "$report" | sort || true
fi
exit "$rc"

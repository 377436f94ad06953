#!/usr/bin/env bash
# The benchmark (issue 8), as root on Debian 12, from a checkout: installs what the tests need
# (tests/deps.sh --test, nothing more), runs the detector micro-benchmark
# (detect::tests::observe_cost_with_10k_keys) and then the namespace benchmark (tests/bench.rs,
# in lab namespaces under the lab lock /tmp/ftagent-lab.lock), and prints one table. About
# 7 minutes after the build; the whole output is kept in ${TMPDIR:-/tmp}/ftagent-bench.log.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
log="${TMPDIR:-/tmp}/ftagent-bench.log"

cargo build --locked --release --tests
# The micro-benchmark takes the lab lock too, so no namespace test floods the CPU meanwhile.
micro=$(flock /tmp/ftagent-lab.lock cargo test --locked --release --lib observe_cost_with_10k_keys \
  -- --ignored --nocapture 2>&1 | tee "$log" | sed -n 's/^BENCH observe //p') || true
[ -n "$micro" ] || echo "benches/run.sh: the observe() micro-benchmark printed no result (see $log)" >&2

# The replay's negatives (traffic that must open nothing), for the false-positive row.
negatives=$(cargo test --locked --release --lib -- is_not_an_attack never_opens_an_incident \
  rare_short_spikes the_counters_do_not_bear_out opens_nothing_at_any_phase 2>&1 | tee -a "$log" | sed -n 's/^test result: \(ok\|FAILED\)\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1: \2 passed, \3 failed/p') || true

status=0
FTAGENT_BENCH_NEGATIVES="${negatives:-not run}" FTAGENT_BENCH_OBSERVE="$micro" cargo test --locked --release --test tests bench -- \
  --ignored --nocapture --test-threads 1 >>"$log" 2>&1 || status=$?
sed -n '/^=== ftagent benchmark ===$/,/^=== end ===$/p' "$log"
if [ "$status" -ne 0 ]; then
  echo "benches/run.sh: the benchmark failed (exit $status); the log: $log" >&2
  tail -n 40 "$log" >&2
fi
exit "$status"

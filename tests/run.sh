#!/usr/bin/env bash
# The whole test suite, as root on Debian 12: installs what the tests need, then runs the unit
# tests and the one integration-test binary (namespace tests included: they create their own
# network namespaces and never touch the host's firewall).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --locked --lib --bins --test tests

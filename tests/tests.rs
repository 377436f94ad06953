//! The one integration-test binary. Submodules:
//! - `agent`: the real ftagent binary run in a lab namespace with a test's config;
//! - `bench`: issue 8 — the benchmark (ignored; `benches/run.sh`): latency, cost, drop cost, restore;
//! - `lab`: network namespaces, veth, traffic and arrival counters, always cleaned up;
//! - `cli`: the real binary's argument and configuration handling (no root needed);
//! - `detect`: issue 4 — real floods detected and classified, low-rate logins ignored;
//! - `mitigate`: issue 5 — concentrated floods banned and unbanned, safelist respected;
//! - `sense`: issue 3 — what the agent measures of real floods;
//! - `setup`: issue 7 — `--setup` with real listeners, the systemd unit, sd_notify of the daemon;
//! - `table`: issue 2 — our table in the kernel of a lab namespace, real packets dropped.

mod agent;
mod bench;
mod cli;
mod detect;
mod lab;
mod mitigate;
mod sense;
mod setup;
mod table;

//! ftagent: an nftables-native DDoS detection and mitigation sidecar.
//!
//! Module map, by layer (lowest first; a module names only modules of its own layer or of
//! lower ones — docs/design.md, "Layers"; `tests/layers.rs` checks it):
//! 1. Vocabulary and small services that need no other layer:
//!    - [`config`]: TOML → checked configuration (file:line errors); touches nothing.
//!    - [`addr`]: CIDRs and address ranges, the vocabulary of safelists and bans.
//!    - [`alloc`]: the counting allocator (a tick is shown, and tested, to allocate nothing).
//!    - [`notify`]: systemd's readiness, status and watchdog notifications (no libsystemd).
//!    - [`terminal`]: the terminal of `ftagent top` (raw keys, the alternate screen).
//!    - [`time`]: time formatting (the `ts` of every JSON line).
//!    - [`proto`]: IP protocol numbers, named once.
//!    - [`event`]: the one envelope of every JSON event line (`ts` and `event` first).
//!    - [`sys`]: the operating system's calls that need `unsafe`, behind safe functions.
//! 2. [`ruleset`]: our nft table as plain data (what we want, what the kernel reports), its
//!    rendering as nft text, the kernel-change vocabulary ([`ruleset::change`]) and the
//!    iptables compatibility chain as data.
//! 3. [`netlink`]: ALL kernel-facing code (nf_tables batches, dumps, NFLOG, conntrack,
//!    sock_diag, ipset, sysctls, the iptables tools).
//! 4. [`sense`]: per-tick samples from counters, sampled packets and conntrack, fixed-size.
//! 5. [`detect`]: pure detector: samples in, incidents and their events out.
//! 6. Pure planners of what to ask of the kernel and the routers:
//!    - [`mitigate`]: incidents → bans and aggregate measures (`ruleset::change::Change`).
//!    - [`escalate`]: incidents → BGP announcements (RTBH, FlowSpec).
//! 7. What the outside world sees and asks:
//!    - [`report`]: webhooks and per-incident packet captures, on threads of their own.
//!    - [`bgp`]: the one place that talks to the BGP daemon (gobgpd).
//!    - [`metrics`]: what `/metrics` shows, in the Prometheus text format.
//!    - [`status`]: what `ftagent status` and `top` show, and how.
//!    - [`control`]: the daemon's Unix control socket protocol.
//! 8. [`daemon`]: the event loop of `ftagent run`, which wires all of the above together.
//! 9. Entry points:
//!    - [`setup`]: `ftagent --setup` and `--install-service`: host detection, proposals, the
//!      configuration file and the systemd unit.
//!    - [`cli`]: command-line arguments, validation only; `main.rs` maps outcomes to exit
//!      codes.
//!    - [`manual`]: the man pages ftagent(8) and ftagent.toml(5) and the shell completions,
//!      drawn from `cli` and the configuration's descriptors (for the packages).

// Every dependency is used by the library, or by main.rs (named below). Set here, not in
// Cargo.toml's [lints], where it would fire on every test and bin target.
#![warn(unused_crate_dependencies)]

// Used by main.rs only.
use env_logger as _;

pub mod addr;
pub mod alloc;
mod bgp;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
mod detect;
mod escalate;
mod event;
pub mod manual;
mod metrics;
pub mod mitigate;
pub mod netlink;
mod notify;
mod proto;
mod report;
pub mod ruleset;
mod sense;
pub mod setup;
pub mod status;
mod sys;
pub mod terminal;
mod time;

/// Unit tests count allocations too (per thread), to prove the tick path makes none.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc::CountingAllocator = alloc::CountingAllocator;

//! ftagent: an nftables-native DDoS detection and mitigation sidecar.
//!
//! Module map:
//! - [`config`]: TOML → checked configuration (file:line errors); touches nothing.
//! - [`addr`]: CIDRs and address ranges, the vocabulary of safelists and bans.
//! - [`proto`]: IP protocol numbers, named once.
//! - [`event`]: the one envelope of every JSON event line (`ts` and `event` first).
//! - [`cli`]: command-line arguments, validation only.
//! - [`ruleset`]: our nft table as plain data, and its rendering as nft text.
//! - [`netlink`]: ALL kernel-facing code (nf_tables batches, dumps, probes).
//! - [`control`]: the daemon's Unix control socket protocol.
//! - [`daemon`]: the event loop of `ftagent run`.
//! - [`status`]: what `ftagent status` and `top` show, and how; [`terminal`]: the live view.
//! - [`escalate`]: pure planner of BGP announcements (RTBH, FlowSpec) for big incidents.
//! - [`bgp`]: the one place that talks to the BGP daemon (gobgpd).
//! - [`notify`]: systemd's readiness, status and watchdog notifications (no libsystemd).
//! - [`setup`]: `ftagent --setup` and `--install-service`: host detection, proposals, the
//!   configuration file and the systemd unit.
//! - [`report`]: webhooks and per-incident packet captures, on threads of their own.
//! - [`metrics`]: what `/metrics` shows, in the Prometheus text format (the daemon serves it).

pub mod addr;
pub mod alloc;
pub mod bgp;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod detect;
pub mod escalate;
pub mod event;
pub mod metrics;
pub mod mitigate;
pub mod netlink;
pub mod notify;
pub mod proto;
pub mod report;
pub mod ruleset;
pub mod sense;
pub mod setup;
pub mod status;
pub mod terminal;

/// Unit tests count allocations too (per thread), to prove the tick path makes none.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc::CountingAllocator = alloc::CountingAllocator;

//! ftagent: an nftables-native DDoS detection and mitigation sidecar.
//!
//! Module map:
//! - [`config`]: TOML → checked configuration (file:line errors); touches nothing.
//! - [`addr`]: CIDRs and address ranges, the vocabulary of safelists and bans.
//! - [`cli`]: command-line arguments, validation only.
//! - [`ruleset`]: our nft table as plain data, and its rendering as nft text.
//! - [`netlink`]: ALL kernel-facing code (nf_tables batches, dumps, probes).
//! - [`control`]: the daemon's Unix control socket protocol.
//! - [`daemon`]: the event loop of `ftagent run`.
//! - [`report`]: webhooks and per-incident packet captures, on threads of their own.

pub mod addr;
pub mod alloc;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod detect;
pub mod mitigate;
pub mod netlink;
pub mod report;
pub mod ruleset;
pub mod sense;

/// Unit tests count allocations too (per thread), to prove the tick path makes none.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc::CountingAllocator = alloc::CountingAllocator;

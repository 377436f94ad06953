//! The one integration-test binary. Submodules:
//! - `agent`: the real ftagent binary run in a lab namespace with a test's config;
//! - `bgp`: issue 9 — escalation to a real upstream gobgpd: RTBH and FlowSpec, across SIGKILL;
//! - `bench`: issue 8 — the benchmark (ignored; `benches/run.sh`): latency, cost, drop cost, restore;
//! - `layers`: issue 16 — imports point down the layers; no source file over 1,500 lines (no root);
//! - `lab`: network namespaces (victim, attacker, users), veth, paced and full-speed floods, the
//!   users' clients and services, what the victim received per 100 ms; always cleaned up;
//! - `collateral`: issue 15 — floods spoofing the gateway and ACK/xmas floods: limited, users spared;
//! - `coexist`: issue 6 — beside the real Fail2Ban: the iptables FTAGENT chain, f2b-* untouched;
//! - `closed_ports`: issue 15 — distributed floods to random ports held at the closed ports;
//! - `cli`: the real binary's argument and configuration handling (no root needed);
//! - `firewalld`: issue 17 — beside firewalld (nftables backend): reloads, restarts, `rules flush`;
//! - `fullsets`: issue 15 — 65,536 + 65,536 bans through `ban --file`, restart, flush, reload, ipsets;
//! - `f2b`: issue 6 — the real Fail2Ban in a lab namespace bans, blocks and restores (harness);
//! - `detect`: issue 4 — real floods detected and classified, low-rate logins ignored;
//! - `kernels`: issue 17 — one functional scenario on Debian 12's 6.1 and Debian 11's 5.10 under QEMU;
//! - `lateness`: issue 15 — tick lateness near quiet with 200,000 conntrack entries, xtables lock held;
//! - `heal`: issue 7 — our table put back after others delete it; kill, restart and stop;
//! - `lift`: issue 15 — an operator lifts a port limit that starves real clients;
//! - `metrics`: issue 9 — `/metrics` scraped during a real flood (promtool, a real Prometheus);
//! - `mitigate`: issue 5 — concentrated floods banned and unbanned, safelist respected;
//! - `packages`: issue 17 — the .deb installed, removed and purged in a throwaway root; the .rpm
//!   against AlmaLinux 9; the glibc floor (2.34);
//! - `ops`: issue 7 — status and top, reload as a diff, the control socket's bad input;
//! - `report`: issue 9 — webhooks (HTTP, HTTPS, failing, hanging receivers) and incident pcaps;
//! - `sense`: issue 3 — what the agent measures of real floods;
//! - `synproxy`: issue 15 — a spoofed SYN flood (IPv4, IPv6) held by the SYN proxy while clients connect;
//! - `setup`: issue 7 — `--setup` with real listeners, the systemd unit, sd_notify of the daemon;
//! - `spoof`: issue 15 — spoofed sources ban no bystander, no /24 for one tick; SSH safelisted;
//! - `table`: issue 2 — our table in the kernel of a lab namespace, real packets dropped.

// The test binary's modules share helpers with `pub`; none is an API.
#![allow(unreachable_pub)]

mod agent;
mod bench;
mod bgp;
mod cli;
mod closed_ports;
mod coexist;
mod collateral;
mod detect;
mod f2b;
mod firewalld;
mod fullsets;
mod heal;
mod kernels;
mod lab;
mod lateness;
mod layers;
mod lift;
mod metrics;
mod mitigate;
mod ops;
mod packages;
mod report;
mod sense;
mod setup;
mod spoof;
mod synproxy;
mod table;

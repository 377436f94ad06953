//! The safelist kept current: the configured CIDRs plus (with `mitigation.auto_safelist`) the
//! host's own addresses, default gateways, name servers and the peers of established SSH
//! sessions. A worker thread reads the own addresses and SSH peers again every `REFRESH`
//! (the sock_diag dump walks the kernel's whole table of connections: ~2 ms per family on a
//! host with 262,144 buckets, never on the event loop) and the others (a dump of every route,
//! resolv.conf) every `SLOW_REFRESH`, and sends what it found when it changed. So an
//! administrator who logs in during an attack is safelisted within seconds. A change reaches
//! the kernel as the difference, in one batch (our allow sets) and one send per ipset (the
//! iptables chain's), and the mitigator and the BGP planner get the new list. The host's own
//! addresses are never banned even without the automatic safelist: they are read all the same.

use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::Daemon;
use crate::addr::Cidr;
use crate::config::Config;
use crate::netlink::host::{own_addresses, AutoSafelist};
use crate::ruleset::diff;

/// The own addresses and SSH peers are read again this often.
const REFRESH: Duration = Duration::from_secs(2);
/// The default gateways and name servers, this often.
const SLOW_REFRESH: Duration = Duration::from_secs(60);
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What the worker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    auto: bool,
    ssh_port: u16,
}

impl Settings {
    fn of(config: &Config) -> Settings {
        Settings {
            auto: config.mitigation.auto_safelist,
            ssh_port: config.mitigation.ssh_port,
        }
    }
}

/// The automatic parts as last read, and the worker that reads them again.
pub(super) struct SafelistRefresh {
    parts: AutoSafelist,
    /// New settings to the worker (dropped: it ends).
    settings: Option<Sender<Settings>>,
    /// What it found, when it changed.
    found: Option<Receiver<AutoSafelist>>,
    /// The kernel refused the last change: tried again then.
    retry_at: Option<Instant>,
}

impl SafelistRefresh {
    /// Reads every part now, starts the worker, and returns the whole safelist of `config`
    /// (logged). Without a worker (the thread could not start: logged) the list stays as read.
    pub(super) fn start(config: &Config) -> (SafelistRefresh, Vec<Cidr>) {
        let mut parts = AutoSafelist::default();
        let settings = Settings::of(config);
        warn(read(&mut parts, settings, true), &mut Vec::new());
        let (to_worker, settings_rx) = mpsc::channel();
        let (found_tx, found) = mpsc::channel();
        let first = parts.clone();
        let spawned = std::thread::Builder::new()
            .name("ftagent-safelist".into())
            .spawn(move || work(first, settings, &settings_rx, &found_tx));
        let worker = match spawned {
            Ok(_) => true,
            Err(e) => {
                log::error!(
                    "automatic safelist: no worker thread ({e}); read at start and reload only"
                );
                false
            }
        };
        let refresh = SafelistRefresh {
            parts,
            settings: worker.then_some(to_worker),
            found: worker.then_some(found),
            retry_at: None,
        };
        let safelist = refresh.safelist(config);
        refresh.log(config);
        (refresh, safelist)
    }

    /// Reads every part now (a reload) and returns the whole safelist of `config`; the worker
    /// follows the new settings.
    pub(super) fn read_all(&mut self, config: &Config) -> Vec<Cidr> {
        if let Some(found) = &self.found {
            while found.try_recv().is_ok() {} // older than what is read now
        }
        let settings = Settings::of(config);
        warn(read(&mut self.parts, settings, true), &mut Vec::new());
        if let Some(worker) = &self.settings {
            let _ = worker.send(settings);
        }
        self.log(config);
        self.safelist(config)
    }

    /// The host's addresses as last read.
    pub(super) fn own(&self) -> &[IpAddr] {
        &self.parts.own
    }

    /// Everything never banned: the safelist and the host's own addresses.
    pub(super) fn never_banned(&self, safelist: &[Cidr]) -> Vec<Cidr> {
        let mut all = safelist.to_vec();
        all.extend(self.parts.own.iter().map(|&a| Cidr::host(a)));
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Takes the newest parts the worker sent since the last call, and returns the host's
    /// addresses before them; None if it sent none (nothing allocated then).
    fn news(&mut self) -> Option<Vec<IpAddr>> {
        let found = self.found.as_ref()?;
        let mut newest = None;
        while let Ok(parts) = found.try_recv() {
            newest = Some(parts);
        }
        let before = std::mem::replace(&mut self.parts, newest?);
        Some(before.own)
    }

    /// The whole safelist of `config` with the parts as last read.
    fn safelist(&self, config: &Config) -> Vec<Cidr> {
        let mut all = config.safelist.clone();
        if config.mitigation.auto_safelist {
            all.extend(self.parts.cidrs());
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    fn log(&self, config: &Config) {
        if config.mitigation.auto_safelist {
            let listed: Vec<String> = self.parts.cidrs().iter().map(Cidr::to_string).collect();
            log::info!("automatic safelist: {}", listed.join(", "));
        }
    }
}

/// Reads the own addresses and (with `auto`) the SSH peers, and with `slow` too the gateways
/// and name servers; returns the warnings of the parts that could not be read (which keep
/// what they held).
fn read(parts: &mut AutoSafelist, settings: Settings, slow: bool) -> Vec<String> {
    if !settings.auto {
        return match own_addresses() {
            Ok(own) => {
                parts.own = own;
                Vec::new()
            }
            Err(e) => vec![format!("listing this host's addresses: {e}")],
        };
    }
    let mut warnings = parts.read_sessions(settings.ssh_port);
    if slow {
        warnings.extend(parts.read_routes_and_resolvers(Path::new(RESOLV_CONF)));
    }
    warnings
}

/// Logs the warnings not logged last time (a part failing at every refresh is logged once).
fn warn(warnings: Vec<String>, last: &mut Vec<String>) {
    for w in warnings.iter().filter(|w| !last.contains(w)) {
        log::warn!("automatic safelist: {w}");
    }
    *last = warnings;
}

/// The worker: reads every `REFRESH` (the slow parts every `SLOW_REFRESH`, and everything at
/// once when the settings change) and sends the parts when they changed; ends when the
/// daemon drops its side.
fn work(
    mut parts: AutoSafelist,
    mut settings: Settings,
    settings_rx: &Receiver<Settings>,
    found: &Sender<AutoSafelist>,
) {
    let mut sent = parts.clone();
    let mut warned = Vec::new();
    let mut next_slow = Instant::now() + SLOW_REFRESH;
    loop {
        let slow = match settings_rx.recv_timeout(REFRESH) {
            Ok(fresh) => {
                settings = fresh;
                true
            }
            Err(RecvTimeoutError::Timeout) => Instant::now() >= next_slow,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if slow {
            next_slow = Instant::now() + SLOW_REFRESH;
        }
        warn(read(&mut parts, settings, slow), &mut warned);
        if parts != sent {
            sent = parts.clone();
            if found.send(parts.clone()).is_err() {
                return;
            }
        }
    }
}

impl Daemon {
    /// Puts in force what the worker found, if it sent anything: a changed safelist goes to
    /// the kernel's allow sets (the difference, one batch), the iptables ipsets, the
    /// mitigator and the BGP planner. A batch the kernel refuses is tried again `REFRESH`
    /// later.
    pub(super) fn refresh_safelist(&mut self, now: Instant) {
        let retry = self
            .pipeline
            .safelist_refresh
            .retry_at
            .is_some_and(|at| now >= at);
        let own_before = self.pipeline.safelist_refresh.news();
        if own_before.is_none() && !retry {
            return;
        }
        self.pipeline.safelist_refresh.retry_at = None;
        let fresh = self.pipeline.safelist_refresh.safelist(&self.config);
        if fresh != self.pipeline.safelist {
            let change = diff::allow_diff(&self.pipeline.safelist, &fresh);
            if change.is_empty() {
                // Within what the list held already (a host of a configured prefix).
            } else if let Err(e) = self.kernel.nft.update(&change) {
                log::error!("safelist not updated (tried again in {REFRESH:?}): {e}");
                self.pipeline.safelist_refresh.retry_at = Some(now + REFRESH);
                return;
            }
            if let Some(shim) = &mut self.kernel.shim {
                if let Err(e) = shim.update_safelist(&self.pipeline.safelist, &fresh) {
                    log::error!("safelist not updated in the iptables ipsets: {e}");
                }
            }
            let listed = |list: Vec<&Cidr>| {
                let text: Vec<String> = list.iter().map(|c| c.to_string()).collect();
                if text.is_empty() {
                    "none".to_string()
                } else {
                    text.join(", ")
                }
            };
            log::info!(
                "safelist refreshed: added {}; removed {}",
                listed(
                    fresh
                        .iter()
                        .filter(|c| !self.pipeline.safelist.contains(c))
                        .collect()
                ),
                listed(
                    self.pipeline
                        .safelist
                        .iter()
                        .filter(|c| !fresh.contains(c))
                        .collect()
                )
            );
            self.pipeline.safelist = fresh;
        } else if own_before
            .as_deref()
            .is_none_or(|own| own == self.pipeline.safelist_refresh.own())
        {
            return;
        }
        let never = self
            .pipeline
            .safelist_refresh
            .never_banned(&self.pipeline.safelist);
        if let Some(escalation) = &mut self.pipeline.escalation {
            escalation.set_safelist(never.clone());
        }
        self.pipeline.mitigator.set_safelist(never);
    }
}

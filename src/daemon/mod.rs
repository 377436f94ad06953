//! `ftagent run`: installs our table, then serves one mio event loop on one thread: signals
//! (SIGTERM/SIGINT stop, SIGHUP reloads), the tick timer (read every counter with one dump;
//! conntrack every `sense.conntrack_interval`), sampled packets from NFLOG, and operator
//! requests on the control socket. The nf_tables socket lives as long as the process.

mod control;
mod fds;

pub use control::parse_ban;

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::addr::Cidr;
use crate::config::{Compat, Config, IptablesShim};
use crate::detect::{Detector, Event, State};
use crate::mitigate::{Change, MitigationEvent, Mitigator};
use crate::netlink::conntrack::Conntrack;
use crate::netlink::nflog::{NflogConfig, NflogSocket};
use crate::netlink::sysctl::SynCookies;
use crate::netlink::shim::{Shim, ShimError};
use crate::netlink::{Features, Nft, NlError};
use crate::report::{ReportError, Reporter};
use crate::ruleset;
use crate::sense::counters::ReadingGap;
use crate::sense::{trace, Sensor};
use fds::{SignalFd, TimerFd};

const SIGNALS: Token = Token(0);
const TICK: Token = Token(1);
const NFLOG: Token = Token(2);
const CONTROL: Token = Token(3);
/// Control connections take the tokens from here on.
const FIRST_CONNECTION: usize = 16;
/// At most one attempt a second to put back a table someone else removed.
const RESTORE_BACKOFF: Duration = Duration::from_secs(1);
const TRACE_WINDOW: Duration = Duration::from_secs(1);
/// How often the baselines and open incidents are written to the state file.
const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// The detector's state file, in `agent.state_dir`.
const STATE_FILE: &str = "detector.json";
/// How often the iptables compatibility chain is checked for other tools' changes.
const SHIM_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// A state file older than this describes other traffic: it is not loaded.
const STALE_STATE: Duration = Duration::from_secs(24 * 3600);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Netlink(#[from] NlError),
    #[error(
        "table inet {} is held by another running ftagent; stop it first",
        ruleset::TABLE
    )]
    TableHeld,
    #[error("the table read back differs from what was written: {}", .0.join("; "))]
    Verify(Vec<String>),
    #[error("iptables compatibility chain: {0}")]
    Shim(#[from] ShimError),
    #[error("control socket {path}: {source}")]
    Control { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Report(#[from] ReportError),
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        source: io::Error,
    },
}

/// Which table mode to use: probed, unless the configuration forces the older-kernel mode.
pub fn features(nft: &mut Nft, config: &Config) -> Result<Features, NlError> {
    match config.nft.compat {
        Compat::Legacy => Ok(Features::LEGACY),
        Compat::Auto => nft.probe(),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Installs the table for `config`, failing if it does not read back as written.
fn install(
    nft: &mut Nft,
    config: &Config,
    safelist: &[Cidr],
    features: Features,
) -> Result<(), DaemonError> {
    let spec = ruleset::desired(config);
    let installed = nft
        .install(&spec, safelist, features)
        .map_err(|e| match e.errno() {
            Some(libc::EPERM) if is_root() => DaemonError::TableHeld,
            _ => DaemonError::Netlink(e),
        })?;
    if !installed.differences.is_empty() {
        return Err(DaemonError::Verify(installed.differences));
    }
    log::info!(
        "table inet {} {} ({} safelist entries, {} bans kept)",
        ruleset::TABLE,
        if installed.replaced {
            "replaced"
        } else {
            "installed"
        },
        safelist.len(),
        installed.kept_bans
    );
    Ok(())
}

/// The daemon's state between events.
struct Daemon {
    config: Config,
    config_path: Option<PathBuf>,
    nft: Nft,
    features: Features,
    sensor: Sensor,
    nflog: NflogSocket,
    conntrack: Conntrack,
    next_conntrack: Instant,
    last_restore: Option<Instant>,
    trace: bool,
    next_trace: Instant,
    tick_allocations: u64,
    detector: Detector,
    /// Events of the current tick (capacity kept).
    events: Vec<Event>,
    /// Everything never dropped: configured and automatic.
    safelist: Vec<Cidr>,
    mitigator: Mitigator,
    operator_bans: control::OperatorBans,
    syn_cookies: SynCookies,
    changes: Vec<Change>,
    mitigation_events: Vec<MitigationEvent>,
    started: Instant,
    next_save: Instant,
    /// The iptables `FTAGENT` chain and its ipsets, when configured and available.
    shim: Option<Shim>,
    next_shim_check: Instant,
    /// Webhooks and packet captures.
    report: Reporter,
}

/// Runs until SIGTERM/SIGINT (leaving the table and its bans, which expire by themselves) or a
/// flush request (removing the table).
pub fn run(config: Config, config_path: Option<PathBuf>, trace: bool) -> Result<(), DaemonError> {
    let os = |what| move |source| DaemonError::Os { what, source };
    let signals = SignalFd::new().map_err(os("block signals"))?;
    // The reporter's threads start with the signals blocked; a bad webhook stops us here,
    // before the kernel is touched.
    let report = Reporter::start(&config)?;
    let mut nft = Nft::open()?;
    let features = features(&mut nft, &config)?;
    log::info!(
        "kernel mode: {}, ban timeouts refreshed {}",
        if features.owner_persist {
            "table flags owner+persist"
        } else {
            "unowned table (older-kernel mode)"
        },
        if features.timeout_refresh {
            "in place"
        } else {
            "by delete+add"
        }
    );
    let safelist = safelist(&config);
    install(&mut nft, &config, &safelist, features)?;
    let shim = install_shim(&mut nft, &config, &safelist)?;
    let nflog_config = NflogConfig {
        snaplen: config.sense.snaplen,
        ..NflogConfig::default()
    };
    let nflog = NflogSocket::open(config.sense.nflog_group, &nflog_config)?;
    let conntrack = Conntrack::open()?;
    let timer = TimerFd::periodic(config.agent.tick).map_err(os("create tick timer"))?;
    let socket_path = config.agent.control_socket.clone();
    let mut listener = control::bind(&socket_path)?;

    let mut poll = Poll::new().map_err(os("create poll"))?;
    let registry = poll.registry();
    registry
        .register(
            &mut SourceFd(&signals.raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )
        .map_err(os("register signals"))?;
    registry
        .register(&mut SourceFd(&timer.raw_fd()), TICK, Interest::READABLE)
        .map_err(os("register timer"))?;
    registry
        .register(&mut SourceFd(&nflog.raw_fd()), NFLOG, Interest::READABLE)
        .map_err(os("register nflog"))?;
    registry
        .register(&mut listener, CONTROL, Interest::READABLE)
        .map_err(os("register control socket"))?;
    log::info!(
        "ready: tick {}, samples on NFLOG group {}, control socket {}",
        humantime::format_duration(config.agent.tick),
        config.sense.nflog_group,
        socket_path.display()
    );

    let now = Instant::now();
    let mut sensor = Sensor::new(&config);
    own_addresses_into(&mut sensor);
    let mut detector = Detector::new(&config, sensor.counters.layout());
    detector.set_clock_origin(SystemTime::now());
    load_state(&mut detector, &config.agent.state_dir);
    let mitigator = Mitigator::new(&config, safelist.clone());
    if mitigator.is_monitor() {
        log::info!("monitor mode: incidents are reported with what would be done; the ruleset is not touched");
    }
    let mut daemon = Daemon {
        report,
        detector,
        safelist,
        mitigator,
        operator_bans: control::OperatorBans::default(),
        syn_cookies: SynCookies::default(),
        changes: Vec::with_capacity(16),
        mitigation_events: Vec::with_capacity(4),
        events: Vec::with_capacity(16),
        started: now,
        next_save: now + SAVE_INTERVAL,
        shim,
        next_shim_check: now + SHIM_CHECK_INTERVAL,
        sensor,
        config,
        config_path,
        nft,
        features,
        nflog,
        conntrack,
        next_conntrack: now,
        last_restore: None,
        trace,
        next_trace: now,
        tick_allocations: 0,
    };
    let mut connections = control::Connections::new(FIRST_CONNECTION);
    let mut events = Events::with_capacity(64);
    let outcome = 'serve: loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break Err(DaemonError::Os {
                what: "poll",
                source: e,
            });
        }
        for event in events.iter() {
            match event.token() {
                SIGNALS => {
                    while let Some(signo) = signals.read() {
                        if signo == libc::SIGHUP {
                            daemon.reload();
                        } else {
                            log::info!(
                                "signal {signo}: stopping; table inet {} stays, its bans expire by themselves",
                                ruleset::TABLE
                            );
                            break 'serve Ok(());
                        }
                    }
                }
                TICK if timer.expirations() > 0 => daemon.tick(Instant::now()),
                NFLOG => daemon.drain_samples(),
                CONTROL => connections.accept_all(&listener, poll.registry()),
                token if connections.owns(token) => {
                    let d = &mut daemon;
                    let outcome = connections.serve(
                        token,
                        poll.registry(),
                        &mut d.nft,
                        &d.config,
                        d.features,
                        &mut d.operator_bans,
                    );
                    if let control::Outcome::Stop = outcome {
                        remove_shim();
                        break 'serve Ok(());
                    }
                    d.mirror_operator_bans();
                }
                _ => {}
            }
        }
    };
    let _ = std::fs::remove_file(&socket_path);
    save_state(&daemon.detector, &daemon.config.agent.state_dir);
    if let Err(e) = daemon.syn_cookies.restore() {
        log::error!("putting back net.ipv4.tcp_syncookies: {e}");
    }
    outcome
}

/// Sets up the iptables compatibility chain with the safelist and the bans now in our table.
/// A backend asked for by name must work; with `auto`, a host where it cannot is warned about
/// and protected by our nft table alone.
fn install_shim(nft: &mut Nft, config: &Config, safelist: &[Cidr]) -> Result<Option<Shim>, DaemonError> {
    let explicit = !matches!(config.nft.iptables_shim, IptablesShim::Auto | IptablesShim::Off);
    let mut attempt = || -> Result<Option<Shim>, ShimError> {
        let Some(mut shim) = Shim::open(config)? else {
            return Ok(None);
        };
        let bans = nft.table_state()?.map(|t| ruleset::bans_in(&t)).unwrap_or_default();
        shim.install(config, safelist, &bans)?;
        log::info!(
            "iptables compatibility chain {} in {}, with {} bans mirrored into ipsets",
            ruleset::shim::CHAIN,
            shim.backend().name(),
            bans.len()
        );
        Ok(Some(shim))
    };
    match attempt() {
        Ok(shim) => Ok(shim),
        Err(e) if explicit => Err(e.into()),
        Err(e) => {
            log::warn!("iptables compatibility chain not installed (our nft table still drops every ban): {e}");
            Ok(None)
        }
    }
}

/// After `rules flush` through the daemon: the chain, its jumps and our ipsets go too.
fn remove_shim() {
    match crate::netlink::shim::remove_everywhere() {
        Ok(removed) => {
            for what in removed {
                log::info!("removed {what}");
            }
        }
        Err(e) => log::error!("removing the iptables compatibility chain: {e}"),
    }
}

/// The configured safelist, plus (with `mitigation.auto_safelist`) the host's own addresses,
/// default gateways, DNS resolvers and the peers of established SSH sessions.
fn safelist(config: &Config) -> Vec<Cidr> {
    let mut all = config.safelist.clone();
    if config.mitigation.auto_safelist {
        let resolv_conf = std::path::Path::new("/etc/resolv.conf");
        let (auto, warnings) =
            crate::netlink::host::automatic_safelist(config.mitigation.ssh_port, resolv_conf);
        for w in warnings {
            log::warn!("automatic safelist: {w}");
        }
        log::info!(
            "automatic safelist: {}",
            auto.iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        all.extend(auto);
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// Leaves the host's own connections out of the per-source counts.
fn own_addresses_into(sensor: &mut Sensor) {
    match crate::netlink::host::own_addresses() {
        Ok(own) => sensor.connections.set_own_addresses(own),
        Err(e) => log::warn!(
            "listing this host's addresses: {e}; its own connections count as a source's"
        ),
    }
}

/// Baselines and open incidents from an earlier run, so a restart mid-attack neither
/// re-learns the attack nor reports it again.
fn load_state(detector: &mut Detector, dir: &Path) {
    let path = dir.join(STATE_FILE);
    let age = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    if age.is_some_and(|a| a > STALE_STATE) {
        log::info!(
            "{} is older than {}: learning afresh",
            path.display(),
            humantime::format_duration(STALE_STATE)
        );
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => match State::from_json(&text) {
            Ok(state) => {
                detector.restore(state, Duration::ZERO);
                log::info!("baselines restored from {}", path.display());
            }
            Err(e) => log::warn!("{}: unreadable, learning afresh: {e}", path.display()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("{}: {e}; learning afresh", path.display()),
    }
}

/// Writes the state file atomically (a temporary file renamed over it).
fn save_state(detector: &Detector, dir: &Path) {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, detector.save().to_json()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        log::warn!("saving {}: {e}", path.display());
    }
}

impl Daemon {
    /// One tick: every counter with one dump, conntrack when due, the trace once a second.
    /// Nothing here allocates in steady state but the trace line.
    fn tick(&mut self, now: Instant) {
        let before = crate::alloc::thread_allocations();
        if now >= self.next_conntrack {
            self.next_conntrack = now + self.config.sense.conntrack_interval;
            self.read_conntrack();
        }
        self.events.clear();
        self.changes.clear();
        self.mitigation_events.clear();
        if self.read_counters(now) {
            let since_start = now.saturating_duration_since(self.started);
            let sample = self.sensor.sample();
            self.detector
                .observe(&sample, since_start, &mut self.events);
            if !self.events.is_empty() {
                self.mitigate(since_start);
            }
        }
        self.sensor.next_tick();
        self.tick_allocations += crate::alloc::thread_allocations() - before;
        if !self.events.is_empty() {
            self.report_events();
        }
        if now >= self.next_shim_check {
            self.next_shim_check = now + SHIM_CHECK_INTERVAL;
            self.check_shim();
        }
        if now >= self.next_save {
            self.next_save = now + SAVE_INTERVAL;
            save_state(&self.detector, &self.config.agent.state_dir);
        }
        if self.trace && now >= self.next_trace {
            self.next_trace = now + TRACE_WINDOW;
            if let Some(line) = trace::window_line(&mut self.sensor, now, self.tick_allocations) {
                println!("{line}");
            }
            self.tick_allocations = 0;
        }
    }

    /// One counter dump turned into rates; false when there are no rates this tick.
    fn read_counters(&mut self, now: Instant) -> bool {
        let counters = &mut self.sensor.counters;
        counters.begin();
        if let Err(e) = self
            .nft
            .read_counters(&mut |name, packets, bytes| counters.record(name, packets, bytes))
        {
            log::warn!("reading counters: {e}");
            return false;
        }
        match counters.finish(now) {
            Ok(()) => true,
            Err(ReadingGap::First) => false,
            Err(ReadingGap::Missing(n)) => {
                self.restore(now, n);
                false
            }
        }
    }

    /// Plans the kernel changes for this tick's incidents and applies them in one batch
    /// (monitor mode: only reports them). A refused batch is reported and tried again later.
    fn mitigate(&mut self, since_start: Duration) {
        self.mitigator.plan(
            &self.events,
            since_start,
            &mut self.changes,
            &mut self.mitigation_events,
        );
        if self.mitigator.is_monitor() || self.changes.is_empty() {
            return;
        }
        for change in &self.changes {
            if let Change::SynCookies { on } = *change {
                let done = if on {
                    self.syn_cookies.enable()
                } else {
                    self.syn_cookies.restore()
                };
                if let Err(e) = done {
                    log::error!("net.ipv4.tcp_syncookies: {e}");
                }
            }
        }
        if let Err(e) = self.nft.apply(&self.changes, self.features) {
            log::error!("mitigation not applied: {e}");
            let set_full = e.errno() == Some(libc::ENFILE);
            self.mitigator.rejected(&self.changes, set_full);
            self.mitigation_events.retain(|m| m.action == "syn_cookies");
        } else if let Some(shim) = &mut self.shim {
            if let Err(e) = shim.mirror(&self.changes) {
                log::error!("bans not mirrored into the iptables ipsets (our nft table has them): {e}");
            }
        }
    }

    /// Operators' bans and unbans go into the iptables ipsets too.
    fn mirror_operator_bans(&mut self) {
        let changes = self.operator_bans.take_unmirrored();
        if let (Some(shim), false) = (&mut self.shim, changes.is_empty()) {
            if let Err(e) = shim.mirror(&changes) {
                log::error!("operator ban not mirrored into the iptables ipsets (our nft table has it): {e}");
            }
        }
    }

    /// Puts back the iptables chain, rule or jump if another tool removed them.
    fn check_shim(&mut self) {
        let Some(shim) = &mut self.shim else { return };
        match shim.repair() {
            Ok(true) => log::warn!(
                "iptables chain {} or its jump was removed by another tool: put back",
                ruleset::shim::CHAIN
            ),
            Ok(false) => {}
            Err(e) => log::error!("checking the iptables compatibility chain: {e}"),
        }
    }

    /// Events go to stdout, one JSON object a line (logs go to stderr), and to the webhooks;
    /// incidents' packet captures start and end with them.
    fn report_events(&mut self) {
        let wall = SystemTime::now();
        self.report.capture(&mut self.events, wall);
        let mut out = io::stdout().lock();
        for event in &self.events {
            let line = event.to_json(wall);
            let _ = writeln!(out, "{line}");
            self.report.notify(event.kind.name(), &line);
        }
        for event in &self.mitigation_events {
            let line = event.to_json(wall);
            let _ = writeln!(out, "{line}");
            self.report.notify(event.name(), &line);
        }
        let _ = out.flush();
    }

    /// Our table (or part of it) is gone: someone flushed the ruleset or deleted it. Put it back.
    fn restore(&mut self, now: Instant, missing: usize) {
        if self
            .last_restore
            .is_some_and(|t| now.saturating_duration_since(t) < RESTORE_BACKOFF)
        {
            return;
        }
        self.last_restore = Some(now);
        log::warn!(
            "table inet {}: {missing} counters missing; restoring the table",
            ruleset::TABLE
        );
        if let Err(e) = install(&mut self.nft, &self.config, &self.safelist, self.features) {
            log::error!("restoring table inet {}: {e}", ruleset::TABLE);
            return;
        }
        // What was in force goes back in: the measures of open incidents and operators' bans
        // with the time they have left.
        let mut changes = Vec::new();
        if !self.mitigator.is_monitor() {
            self.mitigator.in_force(&mut changes);
        }
        for (cidr, left) in self.operator_bans.in_force(now) {
            changes.push(Change::Ban {
                cidr,
                timeout: left.max(Duration::from_secs(1)),
            });
        }
        self.check_shim();
        match self.nft.apply(&changes, self.features) {
            Ok(()) => log::warn!(
                "table inet {} restored, with {} bans and measures",
                ruleset::TABLE,
                changes.len()
            ),
            Err(e) => log::error!(
                "table inet {} restored, but not its bans and measures: {e}",
                ruleset::TABLE
            ),
        }
    }

    fn read_conntrack(&mut self) {
        match self.conntrack.count() {
            Ok(n) => self.sensor.conntrack_entries = n,
            Err(e) => log::warn!("conntrack count: {e}"),
        }
        let table = &mut self.sensor.connections;
        table.begin();
        if let Err(e) = self.conntrack.dump(&mut |entry| table.add(entry)) {
            log::warn!("conntrack dump: {e}");
        }
        self.sensor.count_service_connections();
    }

    /// Drains the sampled packets (edge-triggered: until WouldBlock) into the sensor and the
    /// packet captures.
    fn drain_samples(&mut self) {
        let (sensor, report) = (&mut self.sensor, &mut self.report);
        let now = SystemTime::now();
        self.nflog.drain(&mut |p, captured| {
            sensor.packet(p);
            report.packet(p, captured, now);
        });
        let totals = self.nflog.totals();
        self.sensor.loss = crate::sense::SampleLoss {
            received: totals.packets,
            lost: totals.lost,
            enobufs: totals.enobufs,
            malformed: totals.malformed,
        };
    }

    fn reload(&mut self) {
        let fresh = match Config::load(self.config_path.as_deref()) {
            Ok((fresh, _)) => fresh,
            Err(e) => {
                log::error!("SIGHUP: configuration not reloaded, keeping the running one: {e}");
                return;
            }
        };
        if restart_only(&fresh, &self.config) {
            log::warn!(
                "SIGHUP: agent.*, nft.compat, the NFLOG settings and [pcap] take effect at the next start"
            );
        }
        let safelist = safelist(&fresh);
        match install(&mut self.nft, &fresh, &safelist, self.features) {
            Ok(()) => {
                match install_shim(&mut self.nft, &fresh, &safelist) {
                    Ok(shim) => self.shim = shim,
                    Err(e) => log::error!("SIGHUP: {e}; the previous iptables chain stays"),
                }
                if let Err(e) = self.report.reconfigure(&fresh, &self.config) {
                    log::error!("SIGHUP: {e}; the previous webhooks stay");
                }
                self.mitigator = Mitigator::new(&fresh, safelist.clone());
                self.safelist = safelist;
                self.sensor = Sensor::new(&fresh);
                own_addresses_into(&mut self.sensor);
                // Keys may have changed: carry over what still applies.
                let state = self.detector.save();
                self.detector = Detector::new(&fresh, self.sensor.counters.layout());
                self.detector.restore(state, self.started.elapsed());
                self.config = fresh;
                log::info!("SIGHUP: configuration reloaded");
            }
            Err(e) => {
                log::error!("SIGHUP: new configuration not applied, keeping the running one: {e}")
            }
        }
    }
}

/// Whether a reload changes settings that only a restart applies.
fn restart_only(fresh: &Config, running: &Config) -> bool {
    fresh.agent != running.agent
        || fresh.nft.compat != running.nft.compat
        || fresh.sense.nflog_group != running.sense.nflog_group
        || fresh.sense.snaplen != running.sense.snaplen
        || fresh.pcap != running.pcap
}

//! `ftagent run`: installs our table (with what an earlier run had in force), then serves one
//! mio event loop on one thread: signals (SIGTERM/SIGINT stop, SIGHUP reloads), the tick timer
//! (read every counter with one dump; how late each tick starts is measured), sampled packets
//! from NFLOG, the kernel's notifications of changes to our table (put back when someone else
//! removes it), operator requests on the control socket, and Prometheus scrapes of `/metrics`.
//! What may take long runs on threads of its own and never holds up a tick: the conntrack reads
//! (every `sense.conntrack_interval`, results back through the poll's waker) and the iptables
//! chain's checks (which may wait for the xtables lock). The nf_tables socket lives as long as
//! the process.

mod conntrack_reader;
mod control;
mod escalation;
#[cfg(test)]
mod event_lines;
mod fds;
mod heal;
mod lateness;
mod metrics;
mod persist;
mod reload;
mod safelist;
mod shim_keeper;
mod slots;
mod startup;
mod status;

pub use control::{parse_ban, parse_ban_list};

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::{TcpListener, UnixListener};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::addr::Cidr;
use crate::config::{Compat, Config, IptablesShim, OnStop};
use crate::detect::{Detector, Event, EventKind};
use crate::mitigate::{Action, MitigationEvent, Mitigator};
use crate::netlink::conntrack::Conntrack;
use crate::netlink::monitor::TableMonitor;
use crate::netlink::nflog::{NflogConfig, NflogSocket};
use crate::netlink::shim::{Shim, ShimError};
use crate::netlink::sysctl::Switch;
use crate::netlink::{Features, Nft, NlError};
use crate::notify::Notifier;
use crate::report::{ReportError, Reporter};
use crate::ruleset;
use crate::ruleset::change::{Change, InForce, Item};
use crate::ruleset::Measure;
use crate::sense::counters::ReadingGap;
use crate::sense::{trace, Sensor};
use conntrack_reader::ConntrackReader;
use fds::{SignalFd, TimerFd};
use heal::{Cause, Healing, TableRestored};
use lateness::Lateness;
use persist::MitigationState;
use shim_keeper::ShimKeeper;
use startup::{start, EventSources};

const SIGNALS: Token = Token(0);
const TICK: Token = Token(1);
const NFLOG: Token = Token(2);
const CONTROL: Token = Token(3);
const TABLE_NOTICES: Token = Token(4);
const METRICS: Token = Token(5);
const TRIPWIRE: Token = Token(6);
/// The worker threads' results (a conntrack read done).
const WORKERS: Token = Token(7);
/// Control connections take the tokens from here on.
const FIRST_CONNECTION: usize = 16;
/// Metrics connections take the tokens from here on.
const FIRST_METRICS_CONNECTION: usize = 64;
const TRACE_WINDOW: Duration = Duration::from_secs(1);
/// How often the state files are written besides at changes and at stop (the baselines move).
const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// Elements above which a commit of our own is made with the notifications muted.
const QUIET_ABOVE: usize = 10_000;
/// Operators' bans are saved at most this often (a burst of bans is one write).
const SAVE_DEBOUNCE: Duration = Duration::from_secs(1);
/// How long a tick that finds counters missing waits for the notices of the commit that
/// removed them (sent a moment after the table is gone from a dump's view).
const NOTICE_GRACE: Duration = Duration::from_millis(20);
/// After the tripwire fires, the tick that measures the flood: long enough for its counters to
/// be exact (hundreds of packets at the tripwire's rate), short enough to act within ~20 ms.
const TRIP_SETTLE: Duration = Duration::from_millis(10);
/// The sampled packets the tick after a trip waits for, so that the incident it opens names
/// its sources: one NFLOG batch (the kernel sends samples in batches of `qthresh`)…
const TRIP_SAMPLES: u64 = 16;
/// …for at most this long after the trip (the kernel flushes a partial batch within
/// `flush_timeout_cs`, 100 ms).
const TRIP_WAIT: Duration = Duration::from_millis(150);
/// How often the iptables compatibility chain is checked for other tools' changes.
const SHIM_CHECK_INTERVAL: Duration = Duration::from_secs(10);

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
    #[error("metrics.listen {address}: {source} (choose another address, or set metrics.enabled = false)")]
    Metrics {
        address: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        source: io::Error,
    },
}

/// What a worker thread adds to the loop's niceness: when a tick is due, the loop's wakeup
/// takes the CPU from a worker busy with a long conntrack dump.
const WORKER_NICENESS: libc::c_int = 10;

/// Lowers the calling thread's priority (Linux: niceness is per thread) for work that must not
/// delay a tick. Best effort: a failure is logged.
fn yield_to_the_loop() {
    if let Err(e) = crate::sys::lower_thread_priority(WORKER_NICENESS) {
        log::warn!("lowering a worker thread's priority: {e}");
    }
}

/// Which table mode to use: probed, unless the configuration forces the older-kernel mode
/// (the SYN proxy, a matter of the kernel's modules, is probed either way).
pub fn features(nft: &mut Nft, config: &Config) -> Result<Features, NlError> {
    match config.nft.compat {
        Compat::Legacy => Ok(Features {
            synproxy: nft.probe_synproxy()?,
            ..Features::LEGACY
        }),
        Compat::Auto => nft.probe(),
    }
}

/// Takes out of `config` what this kernel cannot do: without the `synproxy` statement, SYN
/// floods get SYN cookies only (and the table has no SYN proxy chain).
fn fit_to_kernel(config: &mut Config, features: Features) {
    if config.mitigation.synproxy && !features.synproxy {
        log::warn!("this kernel has no nft synproxy statement: SYN floods get SYN cookies only");
        config.mitigation.synproxy = false;
    }
}

pub fn is_root() -> bool {
    crate::sys::geteuid() == 0
}

/// Installs (or atomically replaces) the table for `config` with the bans and measures `held`
/// in force, in one transaction; fails if it does not read back as written.
fn install_with(
    nft: &mut Nft,
    config: &Config,
    safelist: &[Cidr],
    features: Features,
    held: &[InForce],
) -> Result<crate::netlink::Installed, DaemonError> {
    let spec = ruleset::desired(config);
    let installed = nft
        .install_with(&spec, safelist, features, held)
        .map_err(|e| match e.errno() {
            Some(libc::EPERM) if is_root() => DaemonError::TableHeld,
            _ => DaemonError::Netlink(e),
        })?;
    if !installed.differences.is_empty() {
        return Err(DaemonError::Verify(installed.differences));
    }
    log::info!(
        "table inet {} {} ({} safelist entries, {} bans and measures kept, {} put back)",
        ruleset::TABLE,
        if installed.replaced {
            "replaced"
        } else {
            "installed"
        },
        safelist.len(),
        installed.kept_bans,
        installed.put_back
    );
    Ok(installed)
}

/// The daemon's state between events: the configuration, what it holds of the kernel, the
/// stages from sample to measure, when each periodic job is due, and this tick's output with
/// where it goes (written by every stage, so kept at the top).
struct Daemon {
    config: Config,
    config_path: Option<PathBuf>,
    /// The configuration file in use (None: the embedded defaults), and the last reload.
    config_source: Option<PathBuf>,
    last_reload: Option<crate::status::Reload>,
    trace: bool,
    tick_allocations: u64,
    kernel: Kernel,
    pipeline: Pipeline,
    schedule: Schedule,
    /// Events of the current tick (capacity kept).
    events: Vec<Event>,
    changes: Vec<Change>,
    mitigation_events: Vec<MitigationEvent>,
    /// Webhooks and packet captures.
    report: Reporter,
    /// Counts for `/metrics`.
    tally: metrics::Tally,
}

/// What the daemon holds of the kernel: the nf_tables socket and our table's upkeep, the
/// sampled packets, the conntrack reads, the sysctls it switches and the iptables chain.
struct Kernel {
    nft: Nft,
    features: Features,
    /// The kernel's notifications of changes to the ruleset.
    monitor: TableMonitor,
    healing: Healing,
    /// How many times our table was put back after someone else removed or changed it.
    pub(crate) tables_restored: u64,
    nflog: NflogSocket,
    /// The tripwire's NFLOG group (`detection.instant_factor`), when on.
    tripwire: Option<NflogSocket>,
    /// The conntrack reads, on a thread of their own.
    conntrack: ConntrackReader,
    syn_cookies: Switch,
    /// `nf_conntrack_tcp_loose` off while a port is under the SYN proxy.
    strict_tcp: Switch,
    /// The iptables `FTAGENT` chain and its ipsets, when configured and available: the ipsets
    /// are written from the loop, the chain is checked by `shim_keeper`'s thread.
    shim: Option<Shim>,
    shim_keeper: Option<ShimKeeper>,
}

/// The stages from sample to measure, and what they must never drop.
struct Pipeline {
    sensor: Sensor,
    detector: Detector,
    mitigator: Mitigator,
    operator_bans: control::OperatorBans,
    /// BGP escalation (`[bgp]`), when enabled; its `announcements()` are for `ftagent status`.
    escalation: Option<escalation::Escalation>,
    /// Everything never dropped: configured and automatic.
    safelist: Vec<Cidr>,
    /// The automatic safelist, read again every few seconds.
    safelist_refresh: safelist::SafelistRefresh,
}

/// The clocks: when the daemon started, when each periodic job is next due, what was last
/// saved, and how late the ticks start.
struct Schedule {
    started: Instant,
    /// The wall clock when `started` was taken (the mitigator's clock runs from `started`).
    started_wall: SystemTime,
    next_conntrack: Instant,
    next_trace: Instant,
    next_save: Instant,
    next_shim_check: Instant,
    /// When `mitigation.json` was last written.
    last_mitigation_save: Instant,
    /// The operators' bans and the mitigator as last saved (their revisions).
    saved_operator_bans: u64,
    saved_mitigator: u64,
    /// How late each tick started against the timer's schedule.
    lateness: Lateness,
    /// When the tripwire last fired, until the tick that measures the flood has run.
    tripped_at: Option<Instant>,
}

/// Runs until SIGTERM/SIGINT (leaving the table and its bans, which expire by themselves) or a
/// flush request (removing the table).
pub fn run(config: Config, config_path: Option<PathBuf>, trace: bool) -> Result<(), DaemonError> {
    // First: every thread started from here on has the signals blocked.
    let signals = SignalFd::new().map_err(os("block signals"))?;
    let (mut daemon, mut sources) = start(config, config_path, trace, signals)?;
    // Ready only now: our table is in, with what an earlier run had in force.
    let mut notifier = systemd_notifier(daemon.config.agent.tick);
    notifier.ready();
    let outcome = daemon.serve_events(&mut sources, &mut notifier);
    notifier.stopping();
    let _ = std::fs::remove_file(&sources.socket_path);
    if let Some(escalation) = &daemon.pipeline.escalation {
        escalation.log_remaining();
    }
    daemon.stop(*outcome.as_ref().unwrap_or(&Stop::Signal));
    outcome.map(|_| ())
}

/// Whether the tick after a trip can run: its samples hold at least one batch, or it has
/// waited as long as the kernel holds a partial one (issue 16: an incident opened from the
/// counters alone, before the samples arrived, named no source).
fn trip_settled(samples: u64, since_trip: Duration) -> bool {
    samples >= TRIP_SAMPLES || since_trip >= TRIP_WAIT
}

/// A system call's error, named by what it was for.
fn os(what: &'static str) -> impl FnOnce(io::Error) -> DaemonError {
    move |source| DaemonError::Os { what, source }
}

impl Daemon {
    /// The end of start-up: what the incidents that ended while we were away held is lifted,
    /// and conntrack's strictness follows the SYN proxy as resumed.
    fn settle_resumed(&mut self) {
        // Incidents that ended while we were away: what they held is lifted now.
        self.changes.reserve(16);
        self.mitigation_events.reserve(4);
        if !self.changes.is_empty() {
            self.apply_changes();
            self.report_events();
            self.save_mitigation();
        }
        // A SYN proxy put back needs conntrack strict again; one no longer held, the sysctl back.
        let proxied =
            self.pipeline.mitigator.holds_synproxy() && !self.pipeline.mitigator.is_monitor();
        self.sync_strict_tcp(proxied);
    }

    /// The loop: waits on every source and serves each event, until a signal or a flush
    /// stops it (or the poll fails).
    fn serve_events(
        &mut self,
        sources: &mut EventSources,
        notifier: &mut Notifier,
    ) -> Result<Stop, DaemonError> {
        let mut events = Events::with_capacity(64);
        loop {
            if let Err(e) = sources.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(DaemonError::Os {
                    what: "poll",
                    source: e,
                });
            }
            for event in events.iter() {
                if let Some(stop) = self.dispatch(event, sources, notifier) {
                    return Ok(stop);
                }
            }
            let now = Instant::now();
            sources.connections.expire(now, sources.poll.registry());
            if let Some(server) = &mut sources.metrics {
                server.expire(now, sources.poll.registry());
            }
        }
    }

    /// Serves one event of the loop; `Some` when the daemon must stop.
    fn dispatch(
        &mut self,
        event: &mio::event::Event,
        sources: &mut EventSources,
        notifier: &mut Notifier,
    ) -> Option<Stop> {
        match event.token() {
            SIGNALS => {
                while let Some(signo) = sources.signals.read() {
                    if signo == libc::SIGHUP {
                        notifier.reloading();
                        self.reload();
                        notifier.ready();
                    } else {
                        log::info!("signal {signo}: stopping");
                        return Some(Stop::Signal);
                    }
                }
            }
            TICK => self.timer_fired(&mut sources.timer, notifier),
            NFLOG => self.drain_samples(),
            WORKERS => self.conntrack_read(),
            TRIPWIRE if self.tripped() => {
                // Cut this tick short and measure a short one right after: its counters
                // decide whether the flood the kernel saw opens an incident.
                self.pipeline.detector.trip();
                let now = Instant::now();
                self.tick(now);
                self.schedule.tripped_at = Some(now);
                if let Err(e) = sources.timer.rearm(TRIP_SETTLE, self.config.agent.tick) {
                    log::warn!("rearming the tick timer after a trip: {e}");
                }
            }
            TABLE_NOTICES => self.table_notices(Instant::now()),
            CONTROL => sources
                .connections
                .accept_all(&sources.listener, sources.poll.registry()),
            METRICS => {
                if let Some(server) = &mut sources.metrics {
                    server.accept_all(sources.poll.registry());
                }
            }
            token if sources.metrics.as_ref().is_some_and(|s| s.owns(token)) => {
                self.scrape(token, event, sources)
            }
            token if sources.connections.owns(token) => {
                return self.control_request(token, event, sources)
            }
            _ => {}
        }
        None
    }

    /// The tick timer fired: a tick (unless the expiry was spurious), systemd told, and a few
    /// short ticks when a counter just went over.
    fn timer_fired(&mut self, timer: &mut TimerFd, notifier: &mut Notifier) {
        let lateness = &mut self.schedule.lateness;
        if timer.expired(|late| lateness.record(late)) == 0 {
            return;
        }
        let now = Instant::now();
        if let Some(tripped_at) = self.schedule.tripped_at {
            self.drain_samples();
            let samples = self.pipeline.sensor.tick.samples();
            if !trip_settled(samples, now.saturating_duration_since(tripped_at)) {
                if let Err(e) = timer.rearm(TRIP_SETTLE, self.config.agent.tick) {
                    log::warn!("rearming the tick timer after a trip: {e}");
                } else {
                    return;
                }
            }
            self.schedule.tripped_at = None;
        }
        self.tick(now);
        notifier.tick(now, |w| self.write_status(w));
        if let Some(fast) = self.pipeline.detector.fast_tick() {
            // A counter just went over: time its run with a few short ticks.
            self.tally.fast_ticks += 1;
            if let Err(e) = timer.rearm(fast, self.config.agent.tick) {
                log::warn!("rearming the tick timer for a fast tick: {e}");
            }
        }
    }

    /// A metrics connection is ready: a whole request is answered with the exposition.
    fn scrape(&mut self, token: Token, event: &mio::event::Event, sources: &mut EventSources) {
        let Some(server) = &mut sources.metrics else {
            return;
        };
        if let Some(head_only) = server.ready(event, sources.poll.registry()) {
            let text = self.metrics(Instant::now());
            server.respond(token, &text, head_only, sources.poll.registry());
        }
    }

    /// A control connection is ready: a whole request is served and answered; `Some` when it
    /// was a flush (the table is gone, and so is the iptables chain now).
    fn control_request(
        &mut self,
        token: Token,
        event: &mio::event::Event,
        sources: &mut EventSources,
    ) -> Option<Stop> {
        let request = sources.connections.ready(event, sources.poll.registry())?;
        let (response, stop) = self.serve(&request);
        // The reply comes once the bans are in the ipsets too.
        self.mirror_operator_bans();
        sources
            .connections
            .respond(token, &response, sources.poll.registry());
        if stop {
            // No check of ours may put the chain back once it is removed.
            self.stop_shim_keeper();
            remove_shim();
            return Some(Stop::Flushed);
        }
        self.save_changes(Instant::now());
        None
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM or SIGINT.
    Signal,
    /// An operator's `rules flush` removed the table.
    Flushed,
}

/// Runs `commit`, one of our own transactions writing about `elements` elements, with the
/// kernel's notifications muted when they are many: with no listener the kernel builds none,
/// and one per element is most of what a commit of full sets costs. The generation check
/// reads the table back afterwards (others' changes in the meantime were not announced).
fn quietly<T>(monitor: &mut TableMonitor, elements: usize, commit: impl FnOnce() -> T) -> T {
    if elements <= QUIET_ABOVE {
        return commit();
    }
    monitor.mute();
    let out = commit();
    monitor.unmute();
    out
}

/// The bans and measures in force at `now` (`since_start` on the mitigator's clock): the
/// incidents' (none in monitor mode) and the operators'.
fn held_in_force(
    mitigator: &Mitigator,
    operator_bans: &mut control::OperatorBans,
    since_start: Duration,
    now: Instant,
) -> Vec<InForce> {
    let mut held = if mitigator.is_monitor() {
        Vec::new()
    } else {
        mitigator.in_force(since_start)
    };
    held.extend(
        operator_bans
            .in_force(now)
            .into_iter()
            .map(|(cidr, timeout, left)| InForce {
                item: Item::Ban(cidr),
                timeout,
                left,
            }),
    );
    held
}

/// Sets up the iptables compatibility chain with the safelist and the bans now in our table.
/// A backend asked for by name must work; with `auto`, a host where it cannot is warned about
/// and protected by our nft table alone.
fn install_shim(
    nft: &mut Nft,
    config: &Config,
    safelist: &[Cidr],
) -> Result<Option<Shim>, DaemonError> {
    let explicit = !matches!(
        config.nft.iptables_shim,
        IptablesShim::Auto | IptablesShim::Off
    );
    let mut attempt = || -> Result<Option<Shim>, ShimError> {
        let Some(mut shim) = Shim::open(config)? else {
            return Ok(None);
        };
        let bans = nft
            .table_state()?
            .map(|t| ruleset::bans_in(&t))
            .unwrap_or_default();
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

/// systemd's notification socket and watchdog, when systemd started us (see `notify`).
fn systemd_notifier(tick: Duration) -> Notifier {
    let (notifier, warnings) = Notifier::from_env();
    for w in warnings {
        log::warn!("systemd notification: {w}");
    }
    if let Some(every) = notifier.watchdog_interval().filter(|&every| every <= tick) {
        log::warn!(
            "the systemd watchdog wants a sign of life every {} but agent.tick is {}: raise WatchdogSec",
            humantime::format_duration(every),
            humantime::format_duration(tick)
        );
    }
    notifier
}

/// Draws the detector's ceilings from this host's fastest link (unless configured); logs them.
fn ceilings_from_link(detector: &mut Detector) {
    use crate::detect::ceiling::LinkSource;
    detector.set_detected_link(crate::netlink::host::link_speed_mbps());
    let (pps, link) = detector.ceiling();
    let from = match link {
        None => "detection.ceiling_pps".to_string(),
        Some((mbps, LinkSource::Configured)) => format!("detection.link_mbps = {mbps}"),
        Some((mbps, LinkSource::Interface)) => format!("a {mbps} Mbit/s link"),
        Some((mbps, LinkSource::Assumed)) => {
            format!("no interface reports its speed: {mbps} Mbit/s assumed")
        }
    };
    log::info!("absolute ceilings: {pps:.0} pps, a tenth for SYN, RST, ICMP, fragments, reflector ports and new TCP connections ({from})");
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

impl Daemon {
    /// One tick: every counter with one dump, conntrack when due, the trace once a second.
    /// Nothing here allocates in steady state but the trace line.
    fn tick(&mut self, now: Instant) {
        let before = crate::alloc::thread_allocations();
        // Whatever samples are queued belong to this tick (a short tick after a trip must
        // not wait for the NFLOG event).
        self.drain_samples();
        if now >= self.schedule.next_conntrack && self.kernel.conntrack.idle() {
            self.schedule.next_conntrack = now + self.config.sense.conntrack_interval;
            self.request_conntrack(now);
        }
        self.events.clear();
        self.changes.clear();
        self.mitigation_events.clear();
        let since_start = now.saturating_duration_since(self.schedule.started);
        let counted = self.read_counters(now);
        if counted {
            let sample = self.pipeline.sensor.sample();
            self.pipeline
                .detector
                .observe(&sample, since_start, &mut self.events);
            self.tally.incidents(&self.events);
            if !self.events.is_empty() {
                self.mitigate(since_start);
            }
        }
        if self.kernel.healing.generation_check_due(now) {
            self.check_generation(now);
        }
        self.heal(now);
        self.tick_allocations += crate::alloc::thread_allocations() - before;
        if !self.events.is_empty() || !self.mitigation_events.is_empty() {
            self.report_events();
        }
        // After the incident's own events (a `bgp_announced` line never comes before the
        // `attack_start` of its incident), before this tick's samples are reset.
        let before = crate::alloc::thread_allocations();
        let escalation = self.pipeline.escalation.as_mut().filter(|_| counted);
        if escalation.is_some_and(|e| e.tick(&self.events, &self.pipeline.sensor.tick, since_start))
        {
            // Saved now: a crash must not lose the incident behind an announcement.
            self.schedule.next_save = now;
        }
        self.tick_allocations += crate::alloc::thread_allocations() - before;
        self.pipeline.sensor.next_tick();
        if now >= self.schedule.next_shim_check {
            self.schedule.next_shim_check = now + SHIM_CHECK_INTERVAL;
            self.check_shim();
        }
        self.refresh_safelist(now);
        let opened_or_ended = self
            .events
            .iter()
            .any(|e| e.kind != EventKind::AttackUpdate);
        if opened_or_ended || now >= self.schedule.next_save {
            // An incident opened or ended: both files, so a restart resumes exactly it.
            self.schedule.next_save = now + SAVE_INTERVAL;
            persist::save_detector(&self.pipeline.detector, &self.config.agent.state_dir);
            self.save_mitigation();
        } else {
            self.save_changes(now);
        }
        if self.trace && now >= self.schedule.next_trace {
            self.schedule.next_trace = now + TRACE_WINDOW;
            if let Some(line) =
                trace::window_line(&mut self.pipeline.sensor, now, self.tick_allocations)
            {
                // Like the event lines: a closed stdout is no reason to stop.
                let _ = writeln!(io::stdout().lock(), "{line}");
            }
            self.tick_allocations = 0;
        }
    }

    /// The short summary systemd shows as the service's status (no allocation).
    fn write_status(&self, out: &mut dyn io::Write) -> io::Result<()> {
        let incidents = self.pipeline.detector.open_incidents().count();
        let mode = if self.pipeline.mitigator.is_monitor() {
            "monitoring"
        } else {
            "protecting"
        };
        let learning = if self.pipeline.detector.warmed_up() {
            ""
        } else {
            ", learning baselines"
        };
        write!(
            out,
            "{mode} {} services; {incidents} incidents open{learning}",
            self.config.services.len()
        )
    }

    /// One counter dump turned into rates; false when there are no rates this tick.
    fn read_counters(&mut self, now: Instant) -> bool {
        let counters = &mut self.pipeline.sensor.counters;
        counters.begin();
        if let Err(e) = self
            .kernel
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
                // The notifications usually tell first, and say more; a restore they led to
                // has put the counters back already. A dump can see the table gone a moment
                // before the commit that removed it has sent its notices (and the committer's
                // name comes last): wait for them briefly, so that the restore names its cause.
                let restores = self.kernel.tables_restored;
                self.table_notices(now);
                let deadline = Instant::now() + NOTICE_GRACE;
                while self.kernel.healing.pending.is_none()
                    && self.kernel.tables_restored == restores
                {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero()
                        || !crate::sys::poll_readable(
                            self.kernel.monitor.raw_fd(),
                            left.as_millis().max(1) as libc::c_int,
                        )
                    {
                        break;
                    }
                    self.table_notices(now);
                }
                if self.kernel.healing.pending.is_none() && self.kernel.tables_restored == restores
                {
                    log::warn!("table inet {}: {n} counters missing", ruleset::TABLE);
                    self.kernel.healing.note(Cause::CountersMissing, None, now);
                }
                self.heal(now);
                false
            }
        }
    }

    /// Plans the kernel changes for this tick's incidents and applies them in one batch
    /// (monitor mode: only reports them). A refused batch is reported and tried again later.
    fn mitigate(&mut self, since_start: Duration) {
        self.pipeline.mitigator.plan(
            &self.events,
            since_start,
            &mut self.changes,
            &mut self.mitigation_events,
        );
        if self.pipeline.mitigator.is_monitor() || self.changes.is_empty() {
            return;
        }
        self.apply_changes();
    }

    /// Applies `changes` (SYN cookies and conntrack's strictness for the SYN proxy, then the
    /// sets in one batch). A refused batch is reported and its bans forgotten, so the next
    /// update tries again.
    fn apply_changes(&mut self) {
        // Strict before the SYN proxy's first port is in; put back once its last one is out.
        let proxy_on = self.changes.iter().any(|c| {
            matches!(
                c,
                Change::Enable {
                    measure: Measure::SynProxy(_),
                    ..
                }
            )
        });
        if proxy_on {
            self.sync_strict_tcp(true);
        }
        self.apply_set_changes();
        self.sync_strict_tcp(self.pipeline.mitigator.holds_synproxy());
    }

    /// `nf_conntrack_tcp_loose` off while `on` (a port is under the SYN proxy: the clients'
    /// ACKs must stay `invalid` for it), else back to what it was.
    fn sync_strict_tcp(&mut self, on: bool) {
        let was = self.kernel.strict_tcp.previous().is_some();
        if on == was {
            return;
        }
        let done = if on {
            self.kernel.strict_tcp.enable()
        } else {
            self.kernel.strict_tcp.restore()
        };
        match done {
            Err(e) => log::error!("{}: {e}", self.kernel.strict_tcp.name()),
            Ok(()) if on => log::info!(
                "{} = 0 while the SYN proxy runs",
                self.kernel.strict_tcp.name()
            ),
            Ok(()) => log::info!("{} put back", self.kernel.strict_tcp.name()),
        }
    }

    /// SYN cookies, then the sets in one batch.
    fn apply_set_changes(&mut self) {
        for change in &self.changes {
            if let Change::SynCookies { on } = *change {
                let done = if on {
                    self.kernel.syn_cookies.enable()
                } else {
                    self.kernel.syn_cookies.restore()
                };
                if let Err(e) = done {
                    log::error!("net.ipv4.tcp_syncookies: {e}");
                }
            }
        }
        if let Err(e) = self.kernel.nft.apply(&self.changes, self.kernel.features) {
            log::error!("mitigation not applied: {e}");
            let set_full = e.errno() == Some(libc::ENFILE);
            self.pipeline.mitigator.rejected(&self.changes, set_full);
            self.mitigation_events
                .retain(|m| m.action == Action::SynCookies);
            return;
        }
        self.tally.bans(&self.mitigation_events);
        if let Some(shim) = &mut self.kernel.shim {
            if let Err(e) = shim.mirror(&self.changes) {
                log::error!(
                    "bans not mirrored into the iptables ipsets (our nft table has them): {e}"
                );
            }
        }
    }

    /// Operators' bans and unbans go into the iptables ipsets too.
    fn mirror_operator_bans(&mut self) {
        let changes = self.pipeline.operator_bans.take_unmirrored();
        if let (Some(shim), false) = (&mut self.kernel.shim, changes.is_empty()) {
            if let Err(e) = shim.mirror(&changes) {
                log::error!("operator ban not mirrored into the iptables ipsets (our nft table has it): {e}");
            }
        }
    }

    /// Asks for the iptables chain, rule or jump to be put back if another tool removed them
    /// (on the keeper's thread: the loop does not wait for the xtables lock).
    fn check_shim(&mut self) {
        if let Some(keeper) = &self.kernel.shim_keeper {
            keeper.check();
        }
    }

    /// Ends the chain's checks, waiting for one under way: before the chain is removed or
    /// installed anew.
    fn stop_shim_keeper(&mut self) {
        if let Some(keeper) = self.kernel.shim_keeper.take() {
            keeper.stop();
        }
    }

    /// The chain's checks for the shim in use (none without one).
    fn start_shim_keeper(&mut self) {
        self.stop_shim_keeper();
        let Some(shim) = &self.kernel.shim else {
            return;
        };
        match ShimKeeper::start(shim.chain()) {
            Ok(keeper) => self.kernel.shim_keeper = Some(keeper),
            Err(e) => log::error!(
                "starting the iptables chain's checks: {e}; the chain is not checked until a reload"
            ),
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
        drop(out);
        self.report_notices();
    }

    /// Prints the measures stood down (an operator's lift, a never-limited port's measure
    /// skipped), one JSON line each.
    fn report_notices(&mut self) {
        let wall = SystemTime::now();
        let mut out = io::stdout().lock();
        for notice in self.pipeline.mitigator.drain_notices() {
            let line = notice.to_json(wall);
            let _ = writeln!(out, "{line}");
            self.report.notify(notice.name(), &line);
        }
        let _ = out.flush();
    }

    /// Reads the kernel's notifications: what someone else did to our table is noted, and
    /// put right at once unless it had to be put right too often in the last second.
    fn table_notices(&mut self, now: Instant) {
        let seen = self.kernel.monitor.drain();
        if seen.lost {
            log::warn!("nf_tables notifications were lost (ENOBUFS); checking our table");
            self.verify(now);
        }
        if let Some(cause) = heal::Cause::of(&seen) {
            self.kernel.healing.note(cause, seen.by, now);
            self.heal(now);
        }
        if seen.shim_touched {
            // Off the loop; the periodic check stays for legacy iptables, which tells no one.
            self.check_shim();
        }
    }

    /// Compares the ruleset generation with the last one announced: a difference the
    /// notifications do not explain means some were missed, and the table is checked.
    fn check_generation(&mut self, now: Instant) {
        self.table_notices(now);
        let generation = match self.kernel.nft.generation() {
            Ok(g) => g,
            Err(e) => {
                log::warn!("reading the ruleset generation: {e}");
                return;
            }
        };
        if self.kernel.monitor.generation() == Some(generation) {
            return;
        }
        // A transaction may have been committed since the drain: read its notices first.
        self.table_notices(now);
        if self.kernel.monitor.generation() != Some(generation) {
            log::info!("ruleset generation {generation} was not announced; checking our table");
            if self.check_table(now) {
                // Its notices were lost (our own large commits overflow the monitor's
                // buffer): the table as read is that generation's, or a later one's.
                self.kernel.monitor.assume_generation(generation);
            }
            self.heal(now);
        }
    }

    /// Reads our table back and notes damage if it is gone or differs from what it should be;
    /// then puts it right if due.
    fn verify(&mut self, now: Instant) {
        self.check_table(now);
        self.heal(now);
    }

    /// Reads our table back and notes damage if it is gone or differs from what it should be.
    /// True when it was read and is as it should be.
    fn check_table(&mut self, now: Instant) -> bool {
        let spec = ruleset::desired(&self.config);
        match self.kernel.nft.table_state() {
            Ok(None) => self.kernel.healing.note(Cause::TableDeleted, None, now),
            Ok(Some(state)) if !state.differences(&spec).is_empty() => {
                self.kernel.healing.note(Cause::TableChanged, None, now)
            }
            Ok(Some(_)) => return true,
            Err(e) => log::warn!("reading table inet {} back: {e}", ruleset::TABLE),
        }
        false
    }

    /// Puts our table back, if damage is pending and the rate allows: one transaction with
    /// the table, what of it the kernel still holds, and every ban and measure in force with
    /// the time it has left. Logged, counted, and reported as a `table_restored` event.
    fn heal(&mut self, now: Instant) {
        let Some(pending) = self.kernel.healing.due(now) else {
            return;
        };
        self.kernel.healing.attempted(now);
        let held = self.held_now(now);
        let installed = quietly(&mut self.kernel.monitor, held.len(), || {
            install_with(
                &mut self.kernel.nft,
                &self.config,
                &self.pipeline.safelist,
                self.kernel.features,
                &held,
            )
        });
        let installed = match installed {
            Ok(installed) => installed,
            Err(e) => {
                log::error!(
                    "restoring table inet {} ({}): {e}; trying again",
                    ruleset::TABLE,
                    pending.cause.name()
                );
                return;
            }
        };
        self.kernel.healing.pending = None;
        self.kernel.tables_restored += 1;
        // What was put right is not noticed again; what others did since is. Notices lost
        // (a restore of full sets overflows the monitor's buffer with its own) are no sign of
        // damage: the table is read back instead.
        let since = self.kernel.monitor.settle();
        if let Some(cause) = heal::Cause::of(&since) {
            self.kernel.healing.note(cause, since.by, now);
        } else if since.lost {
            self.check_table(now);
        }
        let by = pending
            .by
            .map(|b| format!(" by {} (pid {})", b.name(), b.pid))
            .unwrap_or_default();
        log::warn!(
            "table inet {} restored ({}{by}): {} bans and measures kept, {} put back",
            ruleset::TABLE,
            pending.cause.name(),
            installed.kept_bans,
            installed.put_back
        );
        let event = TableRestored {
            cause: pending.cause,
            by: pending.by,
            kept: installed.kept_bans,
            put_back: installed.put_back,
            took: Instant::now().saturating_duration_since(pending.noticed),
            restores: self.kernel.tables_restored,
        };
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{}", event.to_json(SystemTime::now()));
        let _ = out.flush();
        // Whatever removed our table may have flushed the iptables-nft chain too.
        self.check_shim();
    }

    /// What is in force now, as persisted.
    fn mitigation_state(&mut self) -> MitigationState {
        let now = Instant::now();
        let since_start = now.saturating_duration_since(self.schedule.started);
        let wall_now = self.schedule.started_wall + since_start;
        let operator_bans = self
            .pipeline
            .operator_bans
            .in_force(now)
            .into_iter()
            .map(|(cidr, timeout, left)| persist::OperatorBan {
                ban: crate::mitigate::SavedItem {
                    what: cidr.to_string(),
                    until_ms: crate::mitigate::wall_ms(since_start + left, since_start, wall_now),
                },
                timeout_ms: timeout.as_millis() as u64,
            })
            .collect();
        let mut state = MitigationState::new(
            self.pipeline.mitigator.save(since_start, wall_now),
            operator_bans,
            self.kernel.syn_cookies.previous().map(str::to_string),
        );
        state.tcp_loose_before = self.kernel.strict_tcp.previous().map(str::to_string);
        state
    }

    /// Saves what is in force (`mitigation.json`).
    fn save_mitigation(&mut self) {
        let state = self.mitigation_state();
        persist::save_mitigation(&state, &self.config.agent.state_dir);
        self.schedule.saved_operator_bans = self.pipeline.operator_bans.revision();
        self.schedule.saved_mitigator = self.pipeline.mitigator.revision();
        self.schedule.last_mitigation_save = Instant::now();
    }

    /// Saves what is in force if it changed — operators' bans, the incidents' bans and
    /// measures added, lifted or run out; not their refreshes — at most once per
    /// `SAVE_DEBOUNCE`: what is left waits for a later tick (and a stop always saves).
    fn save_changes(&mut self, now: Instant) {
        let changed = self.pipeline.operator_bans.revision() != self.schedule.saved_operator_bans
            || self.pipeline.mitigator.revision() != self.schedule.saved_mitigator;
        if changed && now >= self.schedule.last_mitigation_save + SAVE_DEBOUNCE {
            self.save_mitigation();
        }
    }

    /// The end of `run`: SYN cookies put back; with `mitigation.on_stop = "remove"` the table
    /// goes, with every ban and measure, in one transaction (else it stays and they run out
    /// by themselves); the state files say what is left in force.
    fn stop(&mut self, stop: Stop) {
        self.stop_shim_keeper();
        if let Err(e) = self.kernel.syn_cookies.restore() {
            log::error!("putting back net.ipv4.tcp_syncookies: {e}");
        }
        self.stop_synproxy(stop);
        let dir = self.config.agent.state_dir.clone();
        persist::save_detector(&self.pipeline.detector, &dir);
        let removed = match (stop, self.config.mitigation.on_stop) {
            (Stop::Flushed, _) => true,
            (Stop::Signal, OnStop::Keep) => {
                log::info!(
                    "table inet {} stays; its bans and measures run out by themselves",
                    ruleset::TABLE
                );
                false
            }
            (Stop::Signal, OnStop::Remove) => match self.kernel.nft.remove_table() {
                Ok(_) => {
                    log::info!(
                        "table inet {} removed with its bans and measures (mitigation.on_stop = \"remove\")",
                        ruleset::TABLE
                    );
                    if self.kernel.shim.take().is_some() {
                        remove_shim();
                    }
                    true
                }
                Err(e) => {
                    log::error!("removing table inet {}: {e}", ruleset::TABLE);
                    false
                }
            },
        };
        let mut state = if removed {
            MitigationState::new(Vec::new(), Vec::new(), None)
        } else {
            self.mitigation_state()
        };
        state.syn_cookies_before = None;
        // The SYN cookies were put back: a resumed incident turns them on again if needed.
        for incident in &mut state.incidents {
            incident.syn_cookies = false;
        }
        persist::save_mitigation(&state, &dir);
    }

    /// A stop puts `nf_conntrack_tcp_loose` back, so the SYN proxy's ports leave the kernel
    /// first (a proxy without strict tracking would refuse the clients' ACKs). A table that
    /// stays keeps the incidents' other measures; a restart puts the proxy back with the
    /// incident (`mitigation.json` still holds it).
    fn stop_synproxy(&mut self, stop: Stop) {
        if self.kernel.strict_tcp.previous().is_none() {
            return;
        }
        let table_stays = matches!(
            (stop, self.config.mitigation.on_stop),
            (Stop::Signal, OnStop::Keep)
        );
        if table_stays {
            let proxied: Vec<Change> = self
                .pipeline
                .mitigator
                .in_force(self.schedule.started.elapsed())
                .into_iter()
                .filter_map(|f| match f.item {
                    Item::Measure(measure @ Measure::SynProxy(_)) => {
                        Some(Change::Disable { measure })
                    }
                    _ => None,
                })
                .collect();
            if let Err(e) = self.kernel.nft.apply(&proxied, self.kernel.features) {
                log::error!("taking the SYN proxy's ports out: {e}");
            }
        }
        self.sync_strict_tcp(false);
    }

    /// Every ban and measure in force at `now`, with the time each has left.
    fn held_now(&mut self, now: Instant) -> Vec<InForce> {
        let since_start = now.saturating_duration_since(self.schedule.started);
        held_in_force(
            &self.pipeline.mitigator,
            &mut self.pipeline.operator_bans,
            since_start,
            now,
        )
    }

    /// Asks the conntrack thread for a read, with the bans in force now.
    fn request_conntrack(&mut self, now: Instant) {
        let held = self.held_now(now);
        self.kernel
            .conntrack
            .request(held.iter().filter_map(|f| match f.item {
                Item::Ban(cidr) => Some(cidr),
                Item::Measure(_) => None,
            }));
    }

    /// A conntrack read came back: its table becomes the sensor's (the sensor's becomes the
    /// next read's), with the entry count and the connections per service.
    fn conntrack_read(&mut self) {
        let Some((mut round, stale_config)) = self.kernel.conntrack.finished() else {
            return;
        };
        if let Some(n) = round.entries {
            self.pipeline.sensor.conntrack_entries = n;
        }
        self.tally.conntrack_reads += 1;
        self.tally.conntrack_read = round.took;
        if stale_config {
            // Asked for before a reload changed the ports: dropped, and a spare made anew.
            round.table = self.pipeline.sensor.connections.clone();
        } else {
            std::mem::swap(&mut self.pipeline.sensor.connections, &mut round.table);
            self.pipeline.sensor.count_service_connections();
        }
        self.kernel.conntrack.put_back(round);
    }

    /// Drains the tripwire's messages; true when there was at least one.
    fn tripped(&mut self) -> bool {
        let Some(tripwire) = &mut self.kernel.tripwire else {
            return false;
        };
        let mut protocols = 0u64;
        tripwire.drain(&mut |p, _| {
            protocols += 1;
            log::debug!(
                "tripwire: IP protocol {} from {} to {}",
                p.proto,
                p.src,
                p.dst
            );
        });
        self.tally.trips += protocols;
        protocols > 0
    }

    /// Drains the sampled packets (edge-triggered: until WouldBlock) into the sensor and the
    /// packet captures.
    fn drain_samples(&mut self) {
        let (sensor, report) = (&mut self.pipeline.sensor, &mut self.report);
        let now = SystemTime::now();
        self.kernel.nflog.drain(&mut |p, captured| {
            sensor.packet(p);
            report.packet(p, captured, now);
        });
        let totals = self.kernel.nflog.totals();
        self.pipeline.sensor.loss = crate::sense::SampleLoss {
            received: totals.packets,
            lost: totals.lost,
            enobufs: totals.enobufs,
            malformed: totals.malformed,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: the tick after a trip waits for one batch of samples, and no longer than the
    /// kernel holds a partial batch.
    #[test]
    fn issue16_the_tick_after_a_trip_waits_for_samples_within_a_bound() {
        assert!(!trip_settled(0, TRIP_SETTLE));
        assert!(!trip_settled(TRIP_SAMPLES - 1, TRIP_WAIT - TRIP_SETTLE));
        assert!(trip_settled(TRIP_SAMPLES, TRIP_SETTLE));
        assert!(trip_settled(0, TRIP_WAIT));
        assert!(
            TRIP_WAIT > Duration::from_millis(100),
            "a partial batch waits 100 ms"
        );
        assert!(u64::from(NflogConfig::default().qthresh) <= TRIP_SAMPLES);
    }
}

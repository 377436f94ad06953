//! Start-up of `ftagent run`: the kernel opened and our table installed with what an earlier
//! run left in force, the pipeline (sensor, detector, mitigator) built, NFLOG bound, the
//! threads started and every source of the loop registered, in the order `start` documents.

use super::*;

/// Start-up, in an order that matters: the reporter's threads start with the signals blocked
/// and before the kernel is touched; what an earlier run left in force is read back, the
/// metrics address bound, and our table installed with it all; only then are NFLOG bound, the
/// conntrack and control sockets opened and the threads started; last, what the incidents that
/// ended meanwhile held is lifted. Returns the daemon and the loop's sources, registered.
pub(super) fn start(
    mut config: Config,
    config_path: Option<PathBuf>,
    trace: bool,
    signals: SignalFd,
) -> Result<(Daemon, EventSources), DaemonError> {
    // The reporter's threads start with the signals blocked; a bad webhook stops us here,
    // before the kernel is touched.
    let report = Reporter::start(&config)?;
    let (mut nft, mut monitor, features) = open_nft(&mut config)?;
    let (safelist_refresh, safelist) = safelist::SafelistRefresh::start(&config);
    let now = Instant::now();
    let started_wall = SystemTime::now();
    let mut pipeline = Pipeline::start(&config, safelist_refresh, safelist, started_wall);
    let resumed = resume(&config, &mut pipeline, now, started_wall);
    // Bound before the table is touched: a taken address stops the start cleanly.
    let metrics_listener = match config.metrics.enabled {
        true => Some(metrics::bind(config.metrics.listen)?),
        false => None,
    };
    let held = held_in_force(
        &pipeline.mitigator,
        &mut pipeline.operator_bans,
        Duration::ZERO,
        now,
    );
    quietly(&mut monitor, held.len(), || {
        install_with(&mut nft, &config, &pipeline.safelist, features, &held)
    })?;
    let shim = install_shim(&mut nft, &config, &pipeline.safelist)?;
    let (nflog, tripwire) = open_nflog(&config)?;
    let conntrack = Conntrack::open()?;
    let mut sources = EventSources::open(&config, signals)?;
    let (conntrack, shim_keeper) =
        start_threads(&sources.poll, conntrack, &pipeline.sensor, shim.as_ref())?;
    let kernel = Kernel {
        nft,
        features,
        monitor,
        healing: Healing::default(),
        tables_restored: 0,
        nflog,
        tripwire,
        conntrack,
        syn_cookies: resumed.syn_cookies,
        strict_tcp: resumed.strict_tcp,
        shim,
        shim_keeper,
    };
    sources.register(&kernel, metrics_listener, &config)?;
    log::info!(
        "ready: tick {}, samples on NFLOG group {}, control socket {}",
        humantime::format_duration(config.agent.tick),
        config.sense.nflog_group,
        sources.socket_path.display()
    );
    pipeline.escalation =
        escalation::Escalation::start(&config).map_err(os("start the BGP worker"))?;
    if let Some(escalation) = &mut pipeline.escalation {
        escalation.set_safelist(pipeline.safelist_refresh.never_banned(&pipeline.safelist));
    }
    let mut daemon = Daemon {
        schedule: Schedule::new(now, started_wall, &pipeline),
        pipeline,
        kernel,
        config_source: reload::source_path(config_path.as_deref()),
        config,
        last_reload: None,
        config_path,
        trace,
        tick_allocations: 0,
        events: Vec::with_capacity(16),
        changes: resumed.undo,
        mitigation_events: resumed.undo_events,
        report,
        tally: metrics::Tally::default(),
    };
    daemon.settle_resumed();
    Ok((daemon, sources))
}

/// The threads of work that may take long: the conntrack reads (their results wake `poll`)
/// and the iptables chain's checks (with `shim`).
pub(super) fn start_threads(
    poll: &Poll,
    conntrack: Conntrack,
    sensor: &Sensor,
    shim: Option<&Shim>,
) -> Result<(ConntrackReader, Option<ShimKeeper>), DaemonError> {
    let waker = Waker::new(poll.registry(), WORKERS);
    let waker = Arc::new(waker.map_err(os("create the poll's waker"))?);
    let conntrack = ConntrackReader::start(conntrack, sensor.connections.clone(), waker)
        .map_err(os("start the conntrack thread"))?;
    let shim_keeper = match shim {
        Some(shim) => {
            Some(ShimKeeper::start(shim.chain()).map_err(os("start the iptables chain thread"))?)
        }
        None => None,
    };
    Ok((conntrack, shim_keeper))
}

/// Opens the nf_tables socket and the notifications of its changes, and finds out what the
/// kernel can do (what it cannot is taken out of `config`).
pub(super) fn open_nft(config: &mut Config) -> Result<(Nft, TableMonitor, Features), DaemonError> {
    let mut nft = Nft::open()?;
    // Subscribed before our first change, so every generation since is known.
    let monitor = TableMonitor::open(nft.port_id())?;
    let features = features(&mut nft, config)?;
    fit_to_kernel(config, features);
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
    Ok((nft, monitor, features))
}

impl Pipeline {
    /// The sensor, the detector with the baselines an earlier run saved, and the mitigator;
    /// no operator bans yet, and BGP escalation started later (once the loop's sources are).
    pub(super) fn start(
        config: &Config,
        safelist_refresh: safelist::SafelistRefresh,
        safelist: Vec<Cidr>,
        started_wall: SystemTime,
    ) -> Pipeline {
        let mut sensor = Sensor::new(config);
        own_addresses_into(&mut sensor);
        let mut detector = Detector::new(config, sensor.counters.layout());
        detector.set_clock_origin(started_wall);
        ceilings_from_link(&mut detector);
        persist::load_detector(&mut detector, &config.agent.state_dir);
        if !detector.warmed_up() {
            let (pps, _) = detector.ceiling();
            log::info!(
                "learning baselines for {}: meanwhile only floods over the ceilings ({pps:.0} pps) open incidents",
                humantime::format_duration(config.agent.warmup)
            );
        }
        let mitigator = Mitigator::new(config, safelist_refresh.never_banned(&safelist));
        if mitigator.is_monitor() {
            log::info!("monitor mode: incidents are reported with what would be done; the ruleset is not touched");
        }
        Pipeline {
            sensor,
            detector,
            mitigator,
            operator_bans: control::OperatorBans::default(),
            escalation: None,
            safelist,
            safelist_refresh,
        }
    }
}

/// What an earlier run left in force, taken over at start: the sysctls as they were before
/// it, and the changes (with their events) that lift what incidents ended meanwhile held.
pub(super) struct Resumed {
    pub(super) syn_cookies: Switch,
    pub(super) strict_tcp: Switch,
    pub(super) undo: Vec<Change>,
    pub(super) undo_events: Vec<MitigationEvent>,
}

/// Takes over the operators' bans and the incidents' bans and measures that `mitigation.json`
/// holds (the incidents' not in monitor mode).
pub(super) fn resume(
    config: &Config,
    pipeline: &mut Pipeline,
    now: Instant,
    started_wall: SystemTime,
) -> Resumed {
    let Pipeline {
        detector,
        mitigator,
        operator_bans,
        ..
    } = pipeline;
    let mut syn_cookies = Switch::syn_cookies();
    let mut strict_tcp = Switch::strict_tcp_tracking();
    let mut undo = Vec::new();
    let mut undo_events = Vec::new();
    if let Some(saved) = persist::load_mitigation(&config.agent.state_dir) {
        operator_bans.resume(saved.operator_bans_left(started_wall), now);
        if !mitigator.is_monitor() {
            let open: Vec<String> = detector.open_incidents().map(|i| i.id.clone()).collect();
            mitigator.resume(
                saved.incidents,
                Duration::ZERO,
                started_wall,
                &|id| open.iter().any(|o| o == id),
                &mut undo,
                &mut undo_events,
            );
            if let Some(before) = saved.syn_cookies_before {
                syn_cookies.resume(before);
            }
            if let Some(before) = saved.tcp_loose_before {
                strict_tcp.resume(before);
            }
        }
        log::info!(
            "resumed from {}: {} incidents being mitigated, {} operator bans",
            config.agent.state_dir.display(),
            mitigator.in_force(Duration::ZERO).len(),
            operator_bans.in_force(now).len()
        );
    }
    Resumed {
        syn_cookies,
        strict_tcp,
        undo,
        undo_events,
    }
}

/// The NFLOG groups: the sampled packets, and the tripwire's when `detection.instant_factor`
/// is on.
pub(super) fn open_nflog(
    config: &Config,
) -> Result<(NflogSocket, Option<NflogSocket>), DaemonError> {
    let nflog_config = NflogConfig {
        snaplen: config.sense.snaplen,
        ..NflogConfig::default()
    };
    let nflog = NflogSocket::open(config.sense.nflog_group, &nflog_config)?;
    let tripwire = match config.detection.instant_factor > 0.0 {
        true => Some(NflogSocket::open(
            config.sense.tripwire_group,
            &NflogConfig {
                snaplen: 64,
                qthresh: 1,
                nlbufsiz: 8 * 1024,
                rcvbuf: 64 * 1024,
                ..NflogConfig::default()
            },
        )?),
        false => None,
    };
    Ok((nflog, tripwire))
}

impl Schedule {
    /// Everything due at once from `now` but the periodic saves and the iptables chain's
    /// checks; what `pipeline` holds counts as saved.
    pub(super) fn new(now: Instant, started_wall: SystemTime, pipeline: &Pipeline) -> Schedule {
        Schedule {
            started: now,
            started_wall,
            next_conntrack: now,
            next_trace: now,
            next_save: now + SAVE_INTERVAL,
            next_shim_check: now + SHIM_CHECK_INTERVAL,
            last_mitigation_save: now,
            saved_operator_bans: pipeline.operator_bans.revision(),
            saved_mitigator: pipeline.mitigator.revision(),
            lateness: Lateness::default(),
            tripped_at: None,
        }
    }
}

/// What the loop waits on besides the kernel's sockets (NFLOG, the tripwire, the table's
/// notifications, which the daemon holds): signals, the tick timer, the control socket and
/// its connections, the metrics endpoint and its connections.
pub(super) struct EventSources {
    pub(super) poll: Poll,
    pub(super) signals: SignalFd,
    pub(super) timer: TimerFd,
    /// The control socket, and its path (removed at the stop).
    pub(super) listener: UnixListener,
    pub(super) socket_path: PathBuf,
    pub(super) connections: control::Connections,
    pub(super) metrics: Option<metrics::MetricsServer>,
}

impl EventSources {
    /// The tick timer, the control socket bound and the poll, none registered yet.
    pub(super) fn open(config: &Config, signals: SignalFd) -> Result<EventSources, DaemonError> {
        let timer = TimerFd::periodic(config.agent.tick).map_err(os("create tick timer"))?;
        let socket_path = config.agent.control_socket.clone();
        let listener = control::bind(&socket_path)?;
        let poll = Poll::new().map_err(os("create poll"))?;
        Ok(EventSources {
            poll,
            signals,
            timer,
            listener,
            socket_path,
            connections: control::Connections::new(FIRST_CONNECTION),
            metrics: None,
        })
    }

    /// Registers every source with its token: these, the kernel's sockets, and the metrics
    /// endpoint when `metrics_listener` is bound.
    pub(super) fn register(
        &mut self,
        kernel: &Kernel,
        metrics_listener: Option<TcpListener>,
        config: &Config,
    ) -> Result<(), DaemonError> {
        let registry = self.poll.registry();
        registry
            .register(
                &mut SourceFd(&self.signals.raw_fd()),
                SIGNALS,
                Interest::READABLE,
            )
            .map_err(os("register signals"))?;
        registry
            .register(
                &mut SourceFd(&self.timer.raw_fd()),
                TICK,
                Interest::READABLE,
            )
            .map_err(os("register timer"))?;
        registry
            .register(
                &mut SourceFd(&kernel.nflog.raw_fd()),
                NFLOG,
                Interest::READABLE,
            )
            .map_err(os("register nflog"))?;
        if let Some(tripwire) = &kernel.tripwire {
            registry
                .register(
                    &mut SourceFd(&tripwire.raw_fd()),
                    TRIPWIRE,
                    Interest::READABLE,
                )
                .map_err(os("register the tripwire"))?;
        }
        registry
            .register(&mut self.listener, CONTROL, Interest::READABLE)
            .map_err(os("register control socket"))?;
        registry
            .register(
                &mut SourceFd(&kernel.monitor.raw_fd()),
                TABLE_NOTICES,
                Interest::READABLE,
            )
            .map_err(os("register nf_tables notifications"))?;
        self.metrics = match metrics_listener {
            Some(listener) => {
                let mut server = metrics::MetricsServer::new(listener, FIRST_METRICS_CONNECTION);
                registry
                    .register(server.listener(), METRICS, Interest::READABLE)
                    .map_err(os("register the metrics listener"))?;
                log::info!("metrics: http://{}/metrics", config.metrics.listen);
                Some(server)
            }
            None => None,
        };
        Ok(())
    }
}

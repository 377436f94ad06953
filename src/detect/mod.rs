//! Detection: per-tick rates in, incidents out. A pure state machine — no I/O, no clock (the
//! caller passes the time), no allocation per tick unless it reports something — so it is
//! tested by replaying synthetic traces.
//!
//! Per tick ([`Detector::observe`]):
//! 1. every counter of the layout is checked against the threshold of its baseline
//!    ([`baseline`]) *before* the tick is folded in; a counter over its threshold, or involved
//!    in an open incident, does not teach its baseline anything;
//! 2. the counters over their thresholds are explained by attack vectors ([`classify`]):
//!    specific counters first (SYN, amplification ports, new connections…), and a generic
//!    counter (totals, a port's packets, "other") opens an incident only for what the specific
//!    vectors leave unexplained — one flood opens one incident;
//! 3. incidents ([`incident`]) open once a counter has been over its threshold in
//!    `consecutive_ticks` of its recent ticks, or at once when its excess over the threshold in
//!    the last second is what that many ticks at twice the threshold carry (so a flood sent in
//!    short bursts cannot dodge confirmation), or once a packet counter has been
//!    `onset::FAST_RATIO` times over for `onset::FAST_CONFIRM` (timed by fast ticks the caller
//!    runs on request, [`Detector::fast_tick`]: a flood a few times over opens in about 0.15 s,
//!    a shorter spike never), or in the tick after the kernel's tripwire ([`Detector::trip`])
//!    when it is `instant_factor` times over; they report at most once a second, and end after
//!    `hold` under a lower exit threshold;
//! 4. when an incident reports, its sources and targets are counted over its own recent
//!    sampled packets — those its driving counters count ([`attribution`]).
//!
//! Until `agent.warmup` is learned (a fresh start, or saved state too young or unusable), a
//! counter's threshold is its absolute ceiling ([`ceiling`]) instead of its baseline's: only
//! floods far above any peaceful rate open incidents then, reported `warmed_up: false`. A
//! baseline never learns a tick over its ceiling or in an incident's reach, warm or not.

mod attribution;
pub(crate) mod baseline;
pub(crate) mod ceiling;
pub(crate) mod classify;
pub(crate) mod event;
pub(crate) mod incident;
mod onset;
#[cfg(test)]
mod replay;
pub(crate) mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod warmup_tests;

use std::time::{Duration, SystemTime};

use crate::config::{Config, Detection, Proto};
use crate::proto::{IPPROTO_TCP, IPPROTO_UDP};
use crate::sense::counters::{class, CounterLayout, Rate};
use crate::sense::{Sample, TOP};
use attribution::{Counts, Scratch};
use baseline::{Baseline, Rule};
pub(crate) use classify::Vector;
pub(crate) use event::{Event, EventKind};
#[cfg(test)]
pub(crate) use event::{PrefixShare, SourceShare};
pub(crate) use incident::Incident;
pub(crate) use state::State;

/// Fewer samples than this (in a tick, or of an incident's own) say nothing about sources or
/// ports: keep the last view.
const MIN_SAMPLES: u64 = 10;
/// `attack_update` at most this often, seconds.
const REPORT_INTERVAL: f64 = 1.0;
/// A tick longer than this (a stalled agent) teaches a baseline no more than this, seconds.
const MAX_DT: f64 = 60.0;
/// Ticks of history per key: the packets and length of each (issue 13: burst-proof
/// confirmation).
const RECENT: usize = 32;
/// The sliding window whose excess over the threshold can confirm an incident, seconds.
const WINDOW: f64 = 1.0;
/// Over-threshold ticks are counted among the last `max(OVER_TICKS, 2 × consecutive_ticks)`.
const OVER_TICKS: u32 = 20;
/// Fast ticks in a row once a packet counter goes over its threshold, and their length
/// bounds (a fifth of `agent.tick` within these).
const FAST_TICKS: u8 = 6;
const FAST_TICK_MIN: Duration = Duration::from_millis(5);
const FAST_TICK_MAX: Duration = Duration::from_millis(25);

/// What a counter (or pseudo-counter) counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// One of `class::*`.
    Fixed(usize),
    /// Packets to service `s`.
    Packets(usize),
    /// New connections (flows) to service `s`.
    New(usize),
    /// UDP from a reflector's source port.
    Amp(u16),
    /// The most concurrent connections one source holds to TCP service `s` (no baseline: an
    /// absolute limit).
    Connections(usize),
}

/// One key: a counter of the layout, or the connection count of a TCP service.
#[derive(Debug, Clone)]
struct Key {
    name: String,
    role: Role,
    floor: f64,
    /// The threshold before the baselines are learned, and the rate above which a tick
    /// teaches nothing (packets or new connections per second).
    ceiling: f64,
    base: Baseline,
    // This tick.
    pps: f64,
    bps: f64,
    threshold: f64,
    exit: f64,
    over: bool,
    /// Consecutive ticks over threshold, and when the run began (seconds).
    streak: u32,
    over_since: f64,
    /// One bit per recent tick, newest lowest: over the threshold then.
    over_bits: u128,
    /// The current run over the threshold, timed to within a fast tick.
    onset: onset::Onset,
    /// The packets and length (seconds) of the last `RECENT` ticks, a ring at `recent_at`.
    recent_packets: [f32; RECENT],
    recent_dt: [f32; RECENT],
    recent_at: usize,
    /// In an open incident's reach: learns nothing.
    frozen: bool,
    /// The incident (sequence number) this key drives.
    owner: Option<u64>,
    /// Traffic of this (generic) key already explained by a more specific vector.
    claimed: f64,
    /// Which sampled packets it counts (None: none, e.g. a drop counter).
    counts: Option<Counts>,
}

/// A configured service and its keys.
#[derive(Debug, Clone)]
struct Svc {
    proto: Proto,
    first: u16,
    last: u16,
    packets: usize,
    new: usize,
    /// The connection pseudo-key (TCP services only).
    conn: Option<usize>,
    web: bool,
    /// When an http_flood on it last ended (the detector's clock, seconds).
    http_flood_ended: f64,
}

/// A key as `ftagent status` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct KeyView<'a> {
    pub(crate) name: &'a str,
    pub(crate) pps: f64,
    pub(crate) baseline_pps: f64,
    pub(crate) threshold_pps: f64,
    pub(crate) over: bool,
    /// A connection-count key: `pps` is the connections the heaviest source holds to a TCP
    /// service, not a rate.
    pub(crate) connections: bool,
}

/// Turns per-tick rates into incidents and events. See the module documentation.
#[derive(Debug)]
pub(crate) struct Detector {
    keys: Vec<Key>,
    /// The counters of the layout; pseudo-keys follow.
    counters: usize,
    services: Vec<Svc>,
    /// Reflector ports: key and vector.
    amplification: Vec<(usize, Vector)>,
    rule: Rule,
    consecutive: u32,
    hold: f64,
    warmup: f64,
    max_connections: u32,
    /// The keys the ceilings are drawn from (`ceiling_pps`, `link_mbps`).
    limits: Detection,
    /// The bulk ceiling and the link it was drawn from (None: configured outright).
    ceiling: (f64, Option<(u64, ceiling::LinkSource)>),
    /// Seconds of traffic learned (survives restarts through [`State`]).
    learned: f64,
    /// The time of the last tick, seconds.
    last: Option<f64>,
    incidents: Vec<Incident>,
    /// This tick's classification (capacity reserved: never grows).
    candidates: Vec<classify::Candidate>,
    next_seq: u64,
    /// Unix milliseconds at time zero, for incident ids.
    origin_ms: i64,
    /// The last dominant sampled destination port of TCP and UDP.
    class_ports: [Option<u16>; 2],
    /// `detection.instant_factor` (0: off).
    instant: f64,
    /// Ticks left in which the kernel's tripwire stands in for confirmation (see [`trip`]).
    ///
    /// [`trip`]: Detector::trip
    trip_ticks: u8,
    /// `agent.tick`, seconds: a tick much shorter (a fast one, or the one after a trip)
    /// counts as no tick of its own toward `consecutive_ticks`.
    tick: f64,
    /// Fast ticks still wanted (see [`fast_tick`]), and when the next run of them may begin.
    ///
    /// [`fast_tick`]: Detector::fast_tick
    fast_left: u8,
    next_fast: f64,
    /// Seconds of short ticks since the last tick that counted as one of `agent.tick`.
    since_bit: f64,
    /// Sorting space for counting an incident's sources and targets.
    scratch: Scratch,
}

impl Detector {
    pub(crate) fn new(config: &Config, layout: &CounterLayout) -> Detector {
        let d = &config.detection;
        let floor = d.floor_pps as f64;
        let floor_new = d.floor_new_per_second as f64;
        let key = |name: String, role: Role, floor: f64| Key {
            name,
            role,
            floor,
            ceiling: f64::INFINITY,
            base: Baseline::default(),
            pps: 0.0,
            bps: 0.0,
            threshold: floor,
            exit: floor,
            over: false,
            streak: 0,
            over_since: 0.0,
            over_bits: 0,
            onset: onset::Onset::default(),
            recent_packets: [0.0; RECENT],
            recent_dt: [0.0; RECENT],
            recent_at: 0,
            frozen: false,
            owner: None,
            claimed: 0.0,
            counts: None,
        };
        // The drop rules' counters that follow are no traffic to judge.
        let mut keys: Vec<Key> = (0..layout.detected())
            .map(|i| key(layout.name(i).to_string(), Role::Fixed(i), floor))
            .collect();
        let mut services = Vec::with_capacity(layout.services.len());
        for (s, sc) in layout.services.iter().enumerate() {
            // The layout lists config.services in order; match by ports to be safe.
            let configured = config.services.iter().find(|c| {
                c.proto == sc.proto && c.ports.first == sc.first && c.ports.last == sc.last
            });
            let web = configured.is_some_and(|c| c.is_web());
            let service_floor = configured
                .and_then(|c| c.floor_pps)
                .map_or(floor, |f| f as f64);
            if let Some(k) = keys.get_mut(sc.packets) {
                k.role = Role::Packets(s);
                k.floor = service_floor;
            }
            if let Some(k) = keys.get_mut(sc.new) {
                k.role = Role::New(s);
                k.floor = floor_new;
            }
            services.push(Svc {
                proto: sc.proto,
                first: sc.first,
                last: sc.last,
                packets: sc.packets,
                new: sc.new,
                conn: None,
                web,
                http_flood_ended: f64::NEG_INFINITY,
            });
        }
        let mut amplification = Vec::with_capacity(layout.amplification.len());
        for &(port, i) in &layout.amplification {
            if let Some(k) = keys.get_mut(i) {
                k.role = Role::Amp(port);
            }
            amplification.push((i, Vector::amplification(port)));
        }
        let counters = keys.len();
        let max_connections = d.max_connections_per_source;
        for (s, svc) in services.iter_mut().enumerate() {
            if svc.proto == Proto::Tcp {
                svc.conn = Some(keys.len());
                let name = format!("conn_{}", layout.name(svc.packets));
                keys.push(key(name, Role::Connections(s), f64::from(max_connections)));
            }
        }
        for key in &mut keys {
            key.counts = match key.role {
                Role::Fixed(c) => attribution::class_counts(c),
                Role::Packets(s) | Role::New(s) | Role::Connections(s) => {
                    services.get(s).map(|svc| Counts::Ports {
                        proto: match svc.proto {
                            Proto::Tcp => IPPROTO_TCP,
                            Proto::Udp => IPPROTO_UDP,
                        },
                        first: svc.first,
                        last: svc.last,
                    })
                }
                Role::Amp(port) => Some(Counts::Reflector(port)),
            };
        }
        let candidates = Vec::with_capacity(keys.len() * 2 + 8);
        let mut detector = Detector {
            keys,
            counters,
            services,
            amplification,
            rule: Rule::new(d.k, d.m, d.half_life.as_secs_f64()),
            consecutive: d.consecutive_ticks.max(1),
            hold: d.hold.as_secs_f64(),
            warmup: config.agent.warmup.as_secs_f64(),
            max_connections,
            limits: d.clone(),
            ceiling: (f64::INFINITY, None),
            learned: 0.0,
            last: None,
            incidents: Vec::with_capacity(32),
            candidates,
            next_seq: 1,
            origin_ms: 0,
            class_ports: [None; 2],
            scratch: Scratch::with_capacity(crate::sense::RECENT_PACKETS),
            instant: d.instant_factor,
            trip_ticks: 0,
            tick: config.agent.tick.as_secs_f64(),
            fast_left: 0,
            next_fast: 0.0,
            since_bit: 0.0,
        };
        detector.set_detected_link(None);
        detector
    }

    /// Draws the ceilings from the link speed the host's interfaces report (None: unknown),
    /// unless the configuration sets the ceiling or the link.
    pub(crate) fn set_detected_link(&mut self, mbps: Option<u64>) {
        self.ceiling = ceiling::base(&self.limits, mbps);
        for k in 0..self.keys.len() {
            let rare = self.rare(k);
            let key = &mut self.keys[k];
            key.ceiling = ceiling::of(self.ceiling.0, rare, key.floor);
        }
    }

    /// The ceiling of bulk counters (packets per second) and the link speed (Mbit/s) it was
    /// drawn from and where that came from (None: `detection.ceiling_pps`).
    pub(crate) fn ceiling(&self) -> (f64, Option<(u64, ceiling::LinkSource)>) {
        self.ceiling
    }

    /// Whether a key counts traffic a server receives little of in peace (a tenth of the
    /// ceiling).
    fn rare(&self, k: usize) -> bool {
        match self.keys[k].role {
            Role::Fixed(c) => matches!(
                c,
                class::TCP_SYN | class::TCP_RST | class::ICMP | class::ICMPV6 | class::FRAGMENT
            ),
            Role::Amp(_) => true,
            Role::New(s) => self.services[s].proto == Proto::Tcp,
            Role::Packets(_) | Role::Connections(_) => false,
        }
    }

    /// The wall-clock time of `now == 0` (the agent's start), used only to make incident ids
    /// (`"<start unix ms>-<n>"`) unique across restarts. Without it ids count from the epoch.
    pub(crate) fn set_clock_origin(&mut self, at_zero: SystemTime) {
        self.origin_ms = at_zero
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
    }

    /// One tick. `now` is monotonic time since the agent started. Pushes 0 or more events to
    /// `out` (which the caller clears). Allocates nothing unless it pushes an event.
    pub(crate) fn observe(&mut self, sample: &Sample, now: Duration, out: &mut Vec<Event>) {
        let t = now.as_secs_f64();
        let dt = self.last.map_or(0.0, |last| (t - last).clamp(0.0, MAX_DT));
        self.last = Some(t);
        let warm = self.warmed_up();
        self.read(sample);
        self.judge(t, dt, warm);
        self.classify(sample);
        self.track(sample, t, out);
        self.freeze();
        self.learn(dt);
        self.trip_ticks = self.trip_ticks.saturating_sub(1);
        self.want_fast_ticks(t);
    }

    /// How soon the caller should tick next, when sooner than `agent.tick`: a packet counter
    /// outside any incident has just gone over its threshold, and a few fast ticks time its
    /// run (see [`onset`]) so that a flood a few times over opens in about `FAST_CONFIRM`
    /// instead of `consecutive_ticks` ticks. At most `FAST_TICKS` in a row, and a new run of
    /// them at most twice a second, so a key that lingers over costs little.
    pub(crate) fn fast_tick(&self) -> Option<Duration> {
        (self.fast_left > 0)
            .then(|| Duration::from_secs_f64(self.tick / 5.0).clamp(FAST_TICK_MIN, FAST_TICK_MAX))
    }

    fn want_fast_ticks(&mut self, t: f64) {
        let suspect = self
            .keys
            .iter()
            .any(|k| k.over && !k.frozen && !matches!(k.role, Role::New(_) | Role::Connections(_)));
        if !suspect {
            self.fast_left = 0;
        } else if self.fast_left > 0 {
            self.fast_left -= 1;
        } else if t >= self.next_fast {
            self.fast_left = FAST_TICKS;
            self.next_fast = t + 0.5;
        }
    }

    /// A tick much shorter than `agent.tick` (a fast tick, or the one after a trip) is part of
    /// the tick before it: no tick of its own toward `consecutive_ticks`.
    fn is_short(&self, dt: f64) -> bool {
        dt > 0.0 && dt < 0.5 * self.tick
    }

    /// The kernel's tripwire fired: some IP protocol's traffic is running at
    /// `instant_factor × floor_pps`. For this tick and the next (the caller cuts the tick short
    /// and measures a short one right after), a packet counter at `instant_factor` times its
    /// threshold or more needs no further confirmation. A tripwire that the counters do not
    /// bear out opens nothing.
    pub(crate) fn trip(&mut self) {
        if self.instant > 0.0 {
            self.trip_ticks = 2;
        }
    }

    /// The incidents open now.
    pub(crate) fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.iter()
    }

    /// True once `agent.warmup` of traffic has been learned (before that, only the ceilings
    /// judge).
    pub(crate) fn warmed_up(&self) -> bool {
        self.learned >= self.warmup
    }

    /// Every key with its rate, baseline and threshold as of the last tick (for `status`).
    pub(crate) fn keys(&self) -> impl Iterator<Item = KeyView<'_>> {
        self.keys.iter().map(|k| KeyView {
            name: &k.name,
            pps: k.pps,
            baseline_pps: k.base.mean(),
            threshold_pps: k.threshold,
            over: k.over,
            connections: matches!(k.role, Role::Connections(_)),
        })
    }

    /// Seconds of traffic learned, and the warm-up needed before the first verdict.
    pub(crate) fn learning(&self) -> (f64, f64) {
        (self.learned, self.warmup)
    }

    /// The baseline mean of a counter, by name (packets or new connections per second).
    #[cfg(test)]
    pub(crate) fn baseline_mean(&self, name: &str) -> Option<f64> {
        self.key(name).map(|k| k.base.mean())
    }

    /// The current threshold of a counter, by name (as of the last tick).
    #[cfg(test)]
    pub(crate) fn threshold(&self, name: &str) -> Option<f64> {
        self.key(name).map(|k| k.threshold)
    }

    #[cfg(test)]
    fn key(&self, name: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// This tick's rates, and the connection keys from the per-source counts.
    fn read(&mut self, sample: &Sample) {
        for (i, key) in self.keys.iter_mut().enumerate() {
            let rate = if i < self.counters {
                sample.rates.get(i).copied().unwrap_or_default()
            } else {
                Rate::default()
            };
            key.pps = if rate.pps.is_finite() {
                rate.pps.max(0.0)
            } else {
                0.0
            };
            key.bps = if rate.bps.is_finite() {
                rate.bps.max(0.0)
            } else {
                0.0
            };
        }
        let relevant = self.rule.exit_ratio * f64::from(self.max_connections);
        for &(_, count) in sample.connections.iter().take(64) {
            if f64::from(count) <= relevant {
                break; // heaviest first: nobody after this one matters
            }
            if let Some(k) = self
                .attribute(count, sample.service_connections)
                .and_then(|s| self.services[s].conn)
            {
                self.keys[k].pps = self.keys[k].pps.max(f64::from(count));
            }
        }
    }

    /// The TCP service a source holding `count` connections most likely holds them on: one
    /// with at least that many connections, a web one first (Slowloris is the common case),
    /// else the busiest. Without per-service counts: the first web service, else the first
    /// TCP service.
    fn attribute(&self, count: u32, per_service: &[u32]) -> Option<usize> {
        let tcp = || {
            self.services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.proto == Proto::Tcp)
        };
        if per_service.len() == self.services.len() {
            let busiest = |web_only: bool, at_least: u32| {
                tcp()
                    .filter(|(i, s)| (!web_only || s.web) && per_service[*i] >= at_least)
                    .max_by_key(|(i, _)| per_service[*i])
                    .map(|(i, _)| i)
            };
            busiest(true, count)
                .or_else(|| busiest(false, count))
                .or_else(|| busiest(false, 1))
        } else {
            tcp()
                .find(|(_, s)| s.web)
                .or_else(|| tcp().next())
                .map(|(i, _)| i)
        }
    }

    /// Thresholds from the baselines as they were before this tick (during the warm-up: the
    /// ceilings, and held connections are not judged); streaks and the recent history of each
    /// key.
    fn judge(&mut self, t: f64, dt: f64, warm: bool) {
        let limit = f64::from(self.max_connections);
        // A fast tick, or the one after a trip, is part of the tick before, until they add up
        // to most of a tick: over_bits and streaks count ticks of `agent.tick`.
        self.since_bit += dt;
        let whole = !self.is_short(dt) || self.since_bit >= 0.75 * self.tick;
        if whole {
            self.since_bit = 0.0;
        }
        for key in &mut self.keys {
            let connections = matches!(key.role, Role::Connections(_));
            key.threshold = match key.role {
                Role::Connections(_) => limit,
                _ if warm => key.base.threshold(key.floor, &self.rule),
                _ => key.ceiling,
            };
            key.exit = self.rule.exit_ratio * key.threshold;
            key.over = key.pps > key.threshold && (warm || !connections);
            let mean = key.base.mean().min(key.threshold);
            key.onset.tick(key.over, key.pps, mean, dt);
            if key.frozen && !key.over {
                // An open incident's run over the threshold is over for this key: what it was
                // over for then was that incident's, and confirms nothing new (wrk right after
                // a SYN flood to the same port is no Slowloris by the flood's new entries).
                key.over_bits = 0;
            }
            if whole {
                key.over_bits = (key.over_bits << 1) | u128::from(key.over);
            } else {
                key.over_bits |= u128::from(key.over);
            }
            key.recent_at = (key.recent_at + 1) % RECENT;
            key.recent_packets[key.recent_at] = (key.pps * dt) as f32;
            key.recent_dt[key.recent_at] = dt as f32;
            if key.over {
                if key.streak == 0 {
                    key.over_since = t;
                }
                if whole || key.streak == 0 {
                    key.streak = key.streak.saturating_add(1);
                }
            } else {
                key.streak = 0;
            }
            key.claimed = 0.0;
        }
    }

    /// Whether an over-threshold key has been over long enough to open an incident: in
    /// `consecutive_ticks` of its last `max(OVER_TICKS, 2 × consecutive_ticks)` ticks (floods
    /// that come and go: pulses, bursts a few ticks long), or — in a tick over threshold —
    /// when its excess over the threshold during the last `WINDOW` is at least what
    /// `consecutive_ticks` ticks at twice the threshold would carry (a flood sent as one short
    /// burst a second, far over the threshold; a steady flood far over it confirms sooner
    /// than `consecutive_ticks`, one barely over it no later). Packet keys only: new
    /// connections and held connections confirm by their count of ticks.
    fn confirmed(&self, k: usize) -> bool {
        let key = &self.keys[k];
        if !key.over {
            return false;
        }
        let span = OVER_TICKS.max(self.consecutive.saturating_mul(2)).min(128);
        let mask = if span >= 128 {
            u128::MAX
        } else {
            (1u128 << span) - 1
        };
        if (key.over_bits & mask).count_ones() >= self.consecutive {
            return true;
        }
        if matches!(key.role, Role::New(_) | Role::Connections(_)) {
            // Connections confirm by their count of ticks only: a one-off burst of new
            // connections (a Slowloris opening its pool) is not yet a flood of them.
            return false;
        }
        if key.onset.confirms(key.threshold) {
            return true; // a few times over for longer than a spike lasts
        }
        if self.trip_ticks > 0 && key.pps >= self.instant * key.threshold {
            return true; // the kernel saw it too, the moment it began
        }
        let (mut excess, mut seconds, mut ticks) = (0.0f64, 0.0f64, 0u32);
        for i in 0..RECENT {
            let at = (key.recent_at + RECENT - i) % RECENT;
            let dt = f64::from(key.recent_dt[at]);
            if dt <= 0.0 {
                break;
            }
            excess += (f64::from(key.recent_packets[at]) - key.threshold * dt).max(0.0);
            seconds += dt;
            ticks += 1;
            if seconds >= WINDOW - 1e-6 {
                break;
            }
        }
        ticks > 0 && excess >= f64::from(self.consecutive) * self.tick * key.threshold
    }

    /// Marks every key within an open incident's reach.
    fn freeze(&mut self) {
        for key in &mut self.keys {
            key.frozen = false;
        }
        for incident in &self.incidents {
            for &k in incident.drivers.iter().chain(&incident.involved) {
                if let Some(key) = self.keys.get_mut(k) {
                    key.frozen = true;
                }
            }
        }
    }

    /// Folds the tick into the baselines: only counters under their threshold (the ceiling
    /// during the warm-up) and their ceiling, and outside any incident.
    fn learn(&mut self, dt: f64) {
        for key in &mut self.keys {
            if matches!(key.role, Role::Connections(_)) {
                continue;
            }
            if !key.over && !key.frozen && key.pps <= key.ceiling {
                key.base.fold(key.pps, dt, &self.rule);
            }
        }
        self.learned += dt;
    }

    /// The counter index of a fixed class (always present in a layout).
    fn fixed(&self, class: usize) -> usize {
        debug_assert!(class <= class::L4_OTHER && class < self.counters);
        class
    }
}

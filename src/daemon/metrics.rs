//! The daemon's side of `/metrics`: a non-blocking TCP listener on the event loop, a small
//! fixed number of connections each read to the end of its request head (8 KiB at most) and
//! answered without ever blocking the loop — `GET /metrics` with the exposition, anything else
//! with an error — and closed after 5 s whatever the client does. The snapshot is gathered
//! from memory on request only; the tick just adds to a few integers ([`Tally`]).

use std::collections::HashSet;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Registry, Token};

use super::slots::{write_out, Connection, Slots, Written};
use super::{Daemon, DaemonError};
use crate::detect::{Event as Detection, EventKind, Vector};
use crate::escalate::Route;
use crate::metrics::{self, KeyRate, SetFill, Snapshot, Total};
use crate::mitigate::{Action, Target};
use crate::ruleset::change::Item;
use crate::ruleset::{self, SetRole};

const MAX_CONNECTIONS: usize = 16;
/// A request head longer than this is refused (431).
const MAX_HEAD: usize = 8 * 1024;
/// A connection still open this long after it was accepted is closed, answered or not.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts kept for `/metrics` between scrapes: plain integers the tick adds to.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Incidents opened, indexed like `Vector::ALL`.
    incidents: [u64; Vector::ALL.len()],
    bans_by_incidents: u64,
    pub(crate) bans_by_operators: u64,
    /// Messages from the kernel's tripwire.
    pub(crate) trips: u64,
    /// Fast ticks the detector asked for (a counter just over its threshold).
    pub(crate) fast_ticks: u64,
    /// Conntrack reads done, and how long the last one took.
    pub(crate) conntrack_reads: u64,
    pub(crate) conntrack_read: Duration,
}

impl Tally {
    /// Counts this tick's openings.
    pub(crate) fn incidents(&mut self, events: &[Detection]) {
        for event in events.iter().filter(|e| e.kind == EventKind::AttackStart) {
            if let Some(i) = Vector::ALL.iter().position(|v| *v == event.vector) {
                self.incidents[i] += 1;
            }
        }
    }

    /// Counts the bans of mitigation events that reached the kernel.
    pub(crate) fn bans(&mut self, events: &[crate::mitigate::MitigationEvent]) {
        self.bans_by_incidents += events
            .iter()
            .filter(|e| e.applied && !e.monitor && e.action == Action::Ban)
            .map(|e| e.addresses.len() as u64)
            .sum::<u64>();
    }
}

/// Binds the metrics listener (the error names the configuration key).
pub(super) fn bind(address: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(address).map_err(|source| DaemonError::Metrics { address, source })
}

/// The listener and its open connections, each with its own mio token from `first_token` on.
pub(super) struct MetricsServer {
    listener: TcpListener,
    slots: Slots<Conn>,
}

struct Conn {
    stream: TcpStream,
    opened: Instant,
    /// The request head as it arrives.
    input: Vec<u8>,
    /// The response, once there is one, and how much of it is written.
    output: Vec<u8>,
    written: usize,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    Writing,
    /// All written and our side shut: what the client still sends is read and dropped until
    /// it closes, so closing never resets a response it has not read yet.
    Draining,
}

/// What a complete request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    /// `GET /metrics` (HEAD: the headers only).
    Metrics { head_only: bool },
    /// Anything else: the status line and a short explanation.
    Refused(&'static str, &'static str),
}

impl Connection for Conn {
    type Stream = TcpStream;

    fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    fn opened(&self) -> Instant {
        self.opened
    }
}

impl MetricsServer {
    pub(crate) fn new(listener: TcpListener, first_token: usize) -> MetricsServer {
        MetricsServer {
            listener,
            slots: Slots::new(first_token, MAX_CONNECTIONS),
        }
    }

    pub(crate) fn listener(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    pub(crate) fn owns(&self, token: Token) -> bool {
        self.slots.owns(token)
    }

    /// Accepts every pending connection (edge-triggered); when every slot is taken, the oldest
    /// connection is closed for the new one.
    pub(crate) fn accept_all(&mut self, registry: &Registry) {
        loop {
            let (stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("metrics: accept: {e}");
                    return;
                }
            };
            let slot = self.slots.free().unwrap_or_else(|oldest| {
                log::debug!("metrics: {MAX_CONNECTIONS} connections open; closing the oldest");
                self.slots.close(oldest, registry);
                oldest
            });
            let conn = Conn {
                stream,
                opened: Instant::now(),
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                phase: Phase::Reading,
            };
            if let Err(e) = self.slots.insert(slot, conn, registry) {
                log::warn!("metrics: register a connection: {e}");
            }
        }
    }

    /// Handles an event of a connection. Returns true when it asks for the metrics: the caller
    /// renders them and hands them to `respond`. Every other request is answered here.
    pub(crate) fn ready(&mut self, event: &Event, registry: &Registry) -> Option<bool> {
        let slot = self.slots.slot_of(event.token())?;
        let conn = self.slots.get_mut(slot)?;
        match conn.phase {
            Phase::Writing => {
                self.flush(slot, registry);
                return None;
            }
            Phase::Draining => {
                if conn.drain() {
                    self.slots.close(slot, registry);
                }
                return None;
            }
            Phase::Reading => {}
        }
        let request = match conn.read_head() {
            Head::Closed => {
                self.slots.close(slot, registry);
                return None;
            }
            Head::Pending => return None,
            Head::TooLong => Request::Refused(
                "431 Request Header Fields Too Large",
                "request head longer than 8 KiB\n",
            ),
            Head::Complete => parse_head(&conn.input),
        };
        match request {
            Request::Metrics { head_only } => Some(head_only),
            Request::Refused(status, why) => {
                log::debug!("metrics: refused a request: {status}");
                let response = response(status, "text/plain; charset=utf-8", why.as_bytes(), false);
                self.answer(slot, response, registry);
                None
            }
        }
    }

    /// Sends the metrics `ready` asked for.
    pub(crate) fn respond(
        &mut self,
        token: Token,
        body: &str,
        head_only: bool,
        registry: &Registry,
    ) {
        if let Some(slot) = self.slots.slot_of(token) {
            let response = response("200 OK", metrics::CONTENT_TYPE, body.as_bytes(), head_only);
            self.answer(slot, response, registry);
        }
    }

    fn answer(&mut self, slot: usize, response: Vec<u8>, registry: &Registry) {
        let Some(conn) = self.slots.get_mut(slot) else {
            return;
        };
        conn.phase = Phase::Writing;
        conn.output = response;
        conn.written = 0;
        self.flush(slot, registry);
    }

    /// Writes what the socket takes of the response; once it is all out, shuts our side and
    /// drains the client's.
    fn flush(&mut self, slot: usize, registry: &Registry) {
        let Some(conn) = self.slots.get_mut(slot) else {
            return;
        };
        match write_out(&mut conn.stream, &conn.output, &mut conn.written) {
            Written::Later => return,
            Written::Failed => {
                self.slots.close(slot, registry);
                return;
            }
            Written::All => {}
        }
        if conn.stream.shutdown(Shutdown::Write).is_err() {
            self.slots.close(slot, registry);
            return;
        }
        conn.phase = Phase::Draining;
        conn.output = Vec::new();
        if conn.drain() {
            self.slots.close(slot, registry);
        }
    }

    /// Closes the connections open longer than `CONNECTION_TIMEOUT`: a client that never
    /// finishes its request, never reads its response or never closes holds nothing for long.
    pub(crate) fn expire(&mut self, now: Instant, registry: &Registry) {
        let closed = self.slots.expire(now, CONNECTION_TIMEOUT, registry);
        if closed > 0 {
            log::debug!("metrics: closed {closed} connections open for too long");
        }
    }
}

/// How far a request head has arrived.
enum Head {
    Pending,
    Complete,
    TooLong,
    /// The client closed (or the connection failed) before the head was complete.
    Closed,
}

impl Conn {
    /// Reads what has arrived of the request head, never past `MAX_HEAD`.
    fn read_head(&mut self) -> Head {
        let mut buf = [0u8; 2048];
        loop {
            if head_end(&self.input).is_some() {
                return Head::Complete;
            }
            if self.input.len() >= MAX_HEAD {
                return Head::TooLong;
            }
            let room = (MAX_HEAD - self.input.len()).min(buf.len());
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => return Head::Closed,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Head::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Head::Closed,
            }
        }
    }

    /// Reads and drops what the client sends; true once it has closed (or failed).
    fn drain(&mut self) -> bool {
        let mut buf = [0u8; 2048];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }
}

/// Where the head ends (after its blank line), if it has.
fn head_end(input: &[u8]) -> Option<usize> {
    let crlf = input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = input.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a complete request head asks for: only `GET` (or `HEAD`) `/metrics` (a query string
/// is ignored) over HTTP/1.x gets the metrics.
pub(super) fn parse_head(head: &[u8]) -> Request {
    const BAD: Request = Request::Refused("400 Bad Request", "bad request\n");
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return BAD;
    };
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return BAD;
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase());
    if !token(method) || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return BAD;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::Refused("405 Method Not Allowed", "only GET and HEAD are served\n"),
    };
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Request::Refused("404 Not Found", "not found: ftagent serves /metrics\n");
    }
    Request::Metrics { head_only }
}

/// A whole HTTP/1.1 response; the connection closes after it.
fn response(status: &str, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status.starts_with("405") {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

impl Daemon {
    /// The exposition, gathered from memory now (allocates: a scrape, not a tick).
    pub(super) fn metrics(&mut self, now: Instant) -> String {
        let counters = &self.pipeline.sensor.counters;
        let layout = counters.layout();
        let total = |name: &str, i: usize| {
            let t = counters.total(i);
            Total {
                name: name.to_string(),
                packets: t.packets,
                bytes: t.bytes,
            }
        };
        let traffic = (0..layout.detected())
            .map(|i| total(layout.name(i), i))
            .collect();
        let dropped = layout.drops().map(|(set, i)| total(set, i)).collect();
        let measures = self.pipeline.mitigator.measures();
        let in_kernel = !self.pipeline.mitigator.is_monitor();
        let operator_bans = self.pipeline.operator_bans.in_force(now);
        // What each set holds, as far as the daemon put it there (an item once, however many
        // incidents hold it).
        let mut held: HashSet<Item> = HashSet::new();
        for m in measures.iter().filter(|_| in_kernel) {
            match m.target {
                Target::Ban(cidr) => held.insert(Item::Ban(cidr)),
                Target::Measure(measure) => held.insert(Item::Measure(measure)),
                Target::SynCookies => false,
            };
        }
        held.extend(operator_bans.iter().map(|(cidr, ..)| Item::Ban(*cidr)));
        let set_of = |item: &Item| match item {
            Item::Ban(cidr) => SetRole::for_ban(cidr).name(),
            Item::Measure(measure) => measure.set(),
        };
        let allowed = |v4: bool| {
            self.pipeline
                .safelist
                .iter()
                .filter(|c| c.is_ipv4() == v4)
                .count()
        };
        let sets = ruleset::desired(&self.config)
            .sets
            .into_iter()
            .filter(|s| !s.counter_map && !s.dynamic)
            .map(|s| {
                let elements = match s.name.as_str() {
                    "allow4" => allowed(true),
                    "allow6" => allowed(false),
                    name => held.iter().filter(|item| set_of(item) == name).count(),
                };
                SetFill {
                    elements: elements as u64,
                    size: s.size.map(u64::from),
                    name: s.name,
                }
            })
            .collect();
        let mut open = [0u64; Vector::ALL.len()];
        for incident in self.pipeline.detector.open_incidents() {
            if let Some(i) = Vector::ALL.iter().position(|v| *v == incident.vector) {
                open[i] += 1;
            }
        }
        let by_vector = |counts: &[u64]| {
            Vector::ALL
                .iter()
                .zip(counts)
                .map(|(v, n)| (v.name(), *n))
                .collect()
        };
        let announcements = self
            .pipeline
            .escalation
            .as_ref()
            .map_or(&[][..], |e| e.announcements());
        let loss = self.pipeline.sensor.loss;
        let snapshot = Snapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: now
                .saturating_duration_since(self.schedule.started)
                .as_secs_f64(),
            warmed_up: self.pipeline.detector.warmed_up(),
            monitor: self.pipeline.mitigator.is_monitor(),
            last_reload_ok: self.last_reload.as_ref().map(|r| r.ok),
            keys: self
                .pipeline
                .detector
                .keys()
                .map(|k| KeyRate {
                    name: k.name.to_string(),
                    value: k.pps,
                    baseline: k.baseline_pps,
                    threshold: k.threshold_pps,
                    over: k.over,
                    connections: k.connections,
                })
                .collect(),
            traffic,
            dropped,
            incidents_open: by_vector(&open),
            incidents_total: by_vector(&self.tally.incidents),
            mitigations: Action::ALL
                .iter()
                .map(|&a| {
                    let n = measures.iter().filter(|m| m.action == a).count();
                    (a.name(), n as u64)
                })
                .collect(),
            operator_bans: operator_bans.len() as u64,
            bans_by_incidents: self.tally.bans_by_incidents,
            bans_by_operators: self.tally.bans_by_operators,
            sets,
            samples_received: loss.received,
            samples_lost: loss.lost,
            samples_enobufs: loss.enobufs,
            samples_malformed: loss.malformed,
            conntrack_entries: self.pipeline.sensor.conntrack_entries,
            conntrack_reads: self.tally.conntrack_reads,
            conntrack_read_seconds: self.tally.conntrack_read.as_secs_f64(),
            tick_lateness: self.schedule.lateness.histogram(),
            tables_restored: self.kernel.tables_restored,
            tripwire_trips: self.tally.trips,
            fast_ticks: self.tally.fast_ticks,
            bgp_rtbh: announcements
                .iter()
                .filter(|a| matches!(a.route, Route::Blackhole(_)))
                .count() as u64,
            bgp_flowspec: announcements
                .iter()
                .filter(|a| matches!(a.route, Route::FlowSpec(_)))
                .count() as u64,
        };
        metrics::render(&snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_gets_the_metrics() {
        let asks = |head: &str| parse_head(head.as_bytes());
        assert_eq!(
            asks("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head_only: false }
        );
        assert_eq!(
            asks("GET /metrics?name[]=x HTTP/1.0\n\n"),
            Request::Metrics { head_only: false }
        );
        assert_eq!(
            asks("HEAD /metrics HTTP/1.1\r\n\r\n"),
            Request::Metrics { head_only: true }
        );
        let status = |head: &str| match asks(head) {
            Request::Refused(status, _) => status,
            other => panic!("{head:?}: {other:?}"),
        };
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), "404 Not Found");
        assert_eq!(status("GET /metrics/x HTTP/1.1\r\n\r\n"), "404 Not Found");
        assert_eq!(
            status("POST /metrics HTTP/1.1\r\n\r\n"),
            "405 Method Not Allowed"
        );
        assert_eq!(
            status("DELETE /metrics HTTP/1.1\r\n\r\n"),
            "405 Method Not Allowed"
        );
        for garbage in [
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "get /metrics HTTP/1.1\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "\r\n\r\n",
        ] {
            assert_eq!(status(garbage), "400 Bad Request", "{garbage:?}");
        }
        assert!(matches!(
            parse_head(b"GET /m\xfc HTTP/1.1\r\n\r\n"),
            Request::Refused("400 Bad Request", _)
        ));
    }

    #[test]
    fn heads_end_at_their_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn responses_say_their_length_and_close() {
        let r =
            String::from_utf8(response("200 OK", metrics::CONTENT_TYPE, b"a 1\n", false)).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let head = String::from_utf8(response(
            "405 Method Not Allowed",
            "text/plain",
            b"no\n",
            true,
        ))
        .unwrap();
        assert!(
            head.contains("Allow: GET, HEAD\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }
}

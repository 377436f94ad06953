//! The daemon's side of the control socket: a root-only Unix listener (mode 0600, and every
//! peer's credentials checked), connections read to one request line and answered without
//! ever blocking the loop (a connection that dawdles is closed), and the requests (ban, unban,
//! flush, status) carried out on the daemon's state.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{UnixListener, UnixStream};
use mio::{Registry, Token};

use super::slots::{write_out, Connection, Slots, Written};
use super::{Daemon, DaemonError};
use crate::addr::Cidr;
use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::mitigate::Lift;
use crate::ruleset;
use crate::ruleset::change::Change;
use crate::sys;

const MAX_CONNECTIONS: usize = 16;
/// A connection that has not sent its request and read its reply by then is closed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the control socket, replacing a stale socket file but never a live daemon's.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |source| DaemonError::Control {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another ftagent is listening there",
        )));
    }
    let _ = std::fs::remove_file(path);
    // The socket is created with the mask's permissions; the mask is restored right after.
    let old = sys::umask(0o177);
    let bound = UnixListener::bind(path);
    sys::umask(old);
    bound.map_err(err)
}

/// Open control connections, each with its own mio token from `first_token` on.
pub(crate) struct Connections {
    slots: Slots<Conn>,
}

struct Conn {
    stream: UnixStream,
    opened: Instant,
    /// The request line as it arrives.
    input: Vec<u8>,
    /// The reply, once there is one, and how much of it is written.
    output: Vec<u8>,
    written: usize,
    answered: bool,
}

impl Connection for Conn {
    type Stream = UnixStream;

    fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    fn opened(&self) -> Instant {
        self.opened
    }
}

impl Connections {
    pub(crate) fn new(first_token: usize) -> Connections {
        Connections {
            slots: Slots::new(first_token, MAX_CONNECTIONS),
        }
    }

    pub(crate) fn owns(&self, token: Token) -> bool {
        self.slots.owns(token)
    }

    /// Accepts every pending connection (edge-triggered). An unprivileged peer gets an error
    /// reply and is closed; when every slot is taken, the oldest connection is closed.
    pub(crate) fn accept_all(&mut self, listener: &UnixListener, registry: &Registry) {
        loop {
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control socket: accept: {e}");
                    return;
                }
            };
            if let Err(uid) = peer_is_privileged(&stream) {
                log::warn!("control socket: refused a connection from uid {uid}: root only");
                // A fresh socket's buffer takes this small line; if not, the peer gets EOF.
                let _ = stream.write(
                    &Response::denied(
                        "permission denied: the ftagent control socket serves root only",
                    )
                    .to_line(),
                );
                continue;
            }
            let slot = self.slots.free().unwrap_or_else(|oldest| {
                log::warn!(
                    "control socket: {MAX_CONNECTIONS} connections open; closing the oldest"
                );
                self.answer(
                    oldest,
                    &Response::error("closed: too many control connections at once"),
                    registry,
                );
                self.slots.close(oldest, registry);
                oldest
            });
            let conn = Conn {
                stream,
                opened: Instant::now(),
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                answered: false,
            };
            if let Err(e) = self.slots.insert(slot, conn, registry) {
                log::warn!("control socket: register a connection: {e}");
            }
        }
    }

    /// Handles an event of a connection: returns its request line once complete. A request
    /// that is too long gets an error reply here.
    pub(crate) fn ready(&mut self, event: &Event, registry: &Registry) -> Option<Vec<u8>> {
        let slot = self.slots.slot_of(event.token())?;
        let conn = self.slots.get_mut(slot)?;
        if conn.answered {
            self.flush(slot, registry);
            return None;
        }
        match conn.read_request() {
            ReadState::Pending => None,
            ReadState::Closed => {
                self.slots.close(slot, registry);
                None
            }
            ReadState::TooLong => {
                let too_long = Response::error(format!(
                    "bad request: longer than {} bytes",
                    control::MAX_REQUEST
                ));
                self.answer(slot, &too_long, registry);
                None
            }
            ReadState::Request(line) => Some(line),
        }
    }

    /// Sends the reply to the request `ready` returned for `token`.
    pub(crate) fn respond(&mut self, token: Token, response: &Response, registry: &Registry) {
        if let Some(slot) = self.slots.slot_of(token) {
            self.answer(slot, response, registry);
        }
    }

    fn answer(&mut self, slot: usize, response: &Response, registry: &Registry) {
        let Some(conn) = self.slots.get_mut(slot) else {
            return;
        };
        conn.answered = true;
        conn.output = response.to_line();
        conn.written = 0;
        self.flush(slot, registry);
    }

    /// Writes what the socket takes of the reply; closes the connection once it is all out.
    fn flush(&mut self, slot: usize, registry: &Registry) {
        let Some(conn) = self.slots.get_mut(slot) else {
            return;
        };
        if write_out(&mut conn.stream, &conn.output, &mut conn.written) == Written::Later {
            return;
        }
        self.slots.close(slot, registry);
    }

    /// Closes the connections open longer than `CONNECTION_TIMEOUT`: a client that never
    /// finishes its request or never reads its reply holds nothing for long.
    pub(crate) fn expire(&mut self, now: Instant, registry: &Registry) {
        let closed = self.slots.expire(now, CONNECTION_TIMEOUT, registry);
        if closed > 0 {
            log::debug!("control socket: closed {closed} connections idle for too long");
        }
    }
}

impl Daemon {
    /// Serves one request; returns the response and whether the daemon must stop.
    pub(super) fn serve(&mut self, line: &[u8]) -> (Response, bool) {
        let request = match control::parse_request(line) {
            Ok(r) => r,
            Err(e) => return (Response::error(e), false),
        };
        match request {
            Request::Ban { cidr, timeout_ms } => {
                let own = self.pipeline.safelist_refresh.own();
                let response = match parse_ban(&cidr, timeout_ms, &self.config, own) {
                    Err(e) => Response::error(e),
                    Ok((cidr, timeout)) => self.ban_for_operator(&[cidr], timeout),
                };
                (response, false)
            }
            Request::BanMany { cidrs, timeout_ms } => {
                let own = self.pipeline.safelist_refresh.own();
                let response = match parse_bans(&cidrs, timeout_ms, &self.config, own) {
                    Err(e) => Response::error(e),
                    Ok((cidrs, timeout)) => self.ban_for_operator(&cidrs, timeout),
                };
                (response, false)
            }
            Request::Unban { cidr } => {
                let response = match cidr.parse::<Cidr>() {
                    Err(e) => Response::error(format!("{cidr}: {e}")),
                    Ok(cidr) => match self.kernel.nft.unban(cidr) {
                        Ok(true) => {
                            self.pipeline.operator_bans.forget(cidr);
                            log::info!("operator unban: {cidr}");
                            Response::ok(format!("unbanned {cidr}"))
                        }
                        Ok(false) => Response::error(format!("{cidr} is not banned")),
                        Err(e) => Response::error(e.to_string()),
                    },
                };
                (response, false)
            }
            Request::Lift { incident, measure } => {
                (self.lift_for_operator(&incident, measure.as_deref()), false)
            }
            Request::Flush {} => match self.kernel.nft.remove_table() {
                Ok(_) => {
                    log::info!(
                        "operator flush: table inet {} removed; stopping",
                        ruleset::TABLE
                    );
                    (
                        Response::ok(format!(
                            "table inet {} removed; ftagent stopped",
                            ruleset::TABLE
                        )),
                        true,
                    )
                }
                Err(e) => (Response::error(e.to_string()), false),
            },
            Request::Status {} => (Response::status(self.status(Instant::now())), false),
        }
    }

    /// An operator's lift: what it covers of the incident leaves the kernel now, in one batch
    /// (with SYN cookies or conntrack's strictness put back if nothing else needs them), and
    /// the incident's updates leave it out until it ends.
    fn lift_for_operator(&mut self, incident: &str, measure: Option<&str>) -> Response {
        let what = match Lift::parse(measure) {
            Ok(what) => what,
            Err(e) => return Response::error(e),
        };
        // Between ticks: the last tick's changes and events are done with.
        self.changes.clear();
        self.mitigation_events.clear();
        let lifted = match self
            .pipeline
            .mitigator
            .lift(incident, what, &mut self.changes)
        {
            Ok(n) => n,
            Err(e) => return Response::error(e),
        };
        if !self.pipeline.mitigator.is_monitor() && !self.changes.is_empty() {
            self.apply_changes();
        }
        self.report_notices();
        self.save_mitigation();
        let what = measure.unwrap_or("everything");
        log::info!("operator lift: {what} of incident {incident} ({lifted} taken out)");
        Response::ok(format!(
            "lifted {what} of incident {incident} ({lifted} in force taken out); kept off until it ends"
        ))
    }

    /// Puts an operator's bans in, all in one transaction, and records them.
    fn ban_for_operator(&mut self, cidrs: &[Cidr], timeout: Duration) -> Response {
        let (nft, features) = (&mut self.kernel.nft, self.kernel.features);
        let banned = super::quietly(&mut self.kernel.monitor, cidrs.len(), || {
            nft.ban_many(cidrs, timeout, features)
        });
        if let Err(e) = banned {
            return Response::error(e.to_string());
        }
        let now = Instant::now();
        for &cidr in cidrs {
            self.pipeline.operator_bans.record(cidr, timeout, now);
        }
        self.tally.bans_by_operators += cidrs.len() as u64;
        let t = humantime::format_duration(timeout);
        match cidrs {
            [cidr] => {
                let set = crate::ruleset::SetRole::for_ban(cidr).name();
                log::info!("operator ban: {cidr} in {set} for {t}");
                Response::ok(format!("banned {cidr} for {t}"))
            }
            _ => {
                log::info!(
                    "operator ban: {} addresses and prefixes for {t}",
                    cidrs.len()
                );
                Response::ok(format!(
                    "banned {} addresses and prefixes for {t}",
                    cidrs.len()
                ))
            }
        }
    }
}

/// The bans operators asked for, with their timeout and when they run out, so a table that
/// someone else removed can be put back with them, a restart keeps knowing them, and the
/// iptables compatibility chain gets them too.
#[derive(Debug, Default)]
pub(crate) struct OperatorBans {
    /// Each ban's timeout and when it runs out (a map: 100k+ bans stay cheap to change).
    bans: BTreeMap<Cidr, (Duration, Instant)>,
    /// Counts changes, so the daemon saves them when they change.
    revision: u64,
    /// Bans and unbans not yet mirrored into the iptables ipsets.
    unmirrored: Vec<Change>,
}

impl OperatorBans {
    fn record(&mut self, cidr: Cidr, timeout: Duration, now: Instant) {
        self.bans.insert(cidr, (timeout, now + timeout));
        self.revision += 1;
        self.unmirrored.push(Change::Ban { cidr, timeout });
    }

    fn forget(&mut self, cidr: Cidr) {
        self.bans.remove(&cidr);
        self.revision += 1;
        self.unmirrored.push(Change::Unban { cidr });
    }

    /// The bans and unbans not yet mirrored; the list is left empty.
    pub(crate) fn take_unmirrored(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.unmirrored)
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// Takes over bans saved by an earlier run: (address, timeout, time left at `now`).
    pub(crate) fn resume(
        &mut self,
        saved: impl IntoIterator<Item = (Cidr, Duration, Duration)>,
        now: Instant,
    ) {
        for (cidr, timeout, left) in saved {
            self.bans.insert(cidr, (timeout, now + left));
            self.revision += 1;
        }
    }

    /// The bans still in force at `now`: address, timeout, and the time they have left.
    pub(crate) fn in_force(&mut self, now: Instant) -> Vec<(Cidr, Duration, Duration)> {
        self.bans.retain(|_, (_, until)| *until > now);
        self.bans
            .iter()
            .map(|(&c, &(timeout, until))| (c, timeout, until.saturating_duration_since(now)))
            .collect()
    }
}

/// Checks a ban request: a valid address or prefix, not in the safelist, touching none of
/// the host's addresses (`own`) nor a range that is never banned (loopback, multicast…), a
/// sane duration.
pub fn parse_ban(
    cidr: &str,
    timeout_ms: u64,
    config: &Config,
    own: &[IpAddr],
) -> Result<(Cidr, Duration), String> {
    let parsed: Cidr = cidr.parse().map_err(|e| format!("{cidr}: {e}"))?;
    if let Some(safe) = config.safelist.iter().find(|s| s.contains(parsed.addr())) {
        return Err(format!(
            "{parsed} is in the safelist ({safe}): it is never dropped"
        ));
    }
    if let Some((range, name)) = crate::addr::never_banned(&parsed) {
        let place = if parsed.prefix_len() < range.prefix_len() {
            "holds"
        } else {
            "is in"
        };
        return Err(format!(
            "{parsed} {place} {range} ({name}), which is never banned"
        ));
    }
    if let Some(addr) = own.iter().find(|&&a| parsed.contains(a)) {
        return Err(format!(
            "{parsed} holds {addr}, an address of this host, which is never banned"
        ));
    }
    if timeout_ms < 1000 {
        return Err("a ban lasts at least 1s".to_string());
    }
    Ok((parsed, Duration::from_millis(timeout_ms)))
}

/// Checks a request of many bans like `parse_ban` each; the first bad one is named by its
/// place in the list. An empty list is an error; a repeated entry counts once.
pub(crate) fn parse_bans(
    cidrs: &[String],
    timeout_ms: u64,
    config: &Config,
    own: &[IpAddr],
) -> Result<(Vec<Cidr>, Duration), String> {
    if cidrs.is_empty() {
        return Err("no address or prefix to ban".to_string());
    }
    let mut parsed = Distinct::default();
    let mut timeout = Duration::ZERO;
    for (i, cidr) in cidrs.iter().enumerate() {
        let (c, t) = parse_ban(cidr, timeout_ms, config, own)
            .map_err(|e| format!("entry {}: {e}", i + 1))?;
        parsed.push(c);
        timeout = t;
    }
    Ok((parsed.list, timeout))
}

/// Checks a ban list as `ftagent ban --file` reads it: one address or prefix a line, `#`
/// starting a comment, blank lines skipped; each entry checked like `parse_ban`, the first
/// bad one named `NAME:LINE`. A list without any entry is an error; a repeated entry counts
/// once.
pub fn parse_ban_list(
    text: &str,
    name: &str,
    timeout_ms: u64,
    config: &Config,
    own: &[IpAddr],
) -> Result<(Vec<Cidr>, Duration), String> {
    let mut cidrs = Distinct::default();
    let mut timeout = Duration::ZERO;
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let (cidr, t) = parse_ban(entry, timeout_ms, config, own)
            .map_err(|e| format!("{name}:{}: {e}", i + 1))?;
        cidrs.push(cidr);
        timeout = t;
    }
    if cidrs.list.is_empty() {
        return Err(format!("{name}: no address or prefix to ban"));
    }
    Ok((cidrs.list, timeout))
}

/// Addresses and prefixes in the order first given, each once.
#[derive(Default)]
struct Distinct {
    list: Vec<Cidr>,
    seen: std::collections::HashSet<Cidr>,
}

impl Distinct {
    fn push(&mut self, cidr: Cidr) {
        if self.seen.insert(cidr) {
            self.list.push(cidr);
        }
    }
}

/// Root, or the user the daemon runs as; else the peer's uid.
fn peer_is_privileged(stream: &UnixStream) -> Result<(), u32> {
    match sys::peer_uid(stream) {
        Ok(uid) if uid == 0 || uid == sys::geteuid() => Ok(()),
        Ok(uid) => Err(uid),
        Err(_) => Err(u32::MAX),
    }
}

enum ReadState {
    Pending,
    Closed,
    TooLong,
    Request(Vec<u8>),
}

impl Conn {
    /// Reads until a whole line has arrived (edge-triggered: until WouldBlock). A client that
    /// closes its side after the request needs no newline.
    fn read_request(&mut self) -> ReadState {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) if self.input.is_empty() => return ReadState::Closed,
                Ok(0) => return ReadState::Request(std::mem::take(&mut self.input)),
                Ok(n) => {
                    let seen = self.input.len();
                    self.input.extend_from_slice(&chunk[..n]);
                    let newline = chunk[..n].iter().position(|&b| b == b'\n');
                    if let Some(end) = newline.map(|i| seen + i) {
                        if end > control::MAX_REQUEST {
                            return ReadState::TooLong;
                        }
                        self.input.truncate(end);
                        return ReadState::Request(std::mem::take(&mut self.input));
                    }
                    if self.input.len() > control::MAX_REQUEST {
                        return ReadState::TooLong;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadState::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadState::Closed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            "[safelist]\ncidrs = [\"192.0.2.0/24\"]\n",
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn a_ban_list_takes_comments_blank_lines_and_both_families() {
        let text =
            "# botnet of the day\n198.18.0.1\n\n  2001:db8::1  # a v6 one\n198.18.1.0/24\n\t\n";
        let (cidrs, timeout) = parse_ban_list(text, "bans.txt", 60_000, &config(), &[]).unwrap();
        let want: Vec<Cidr> = ["198.18.0.1", "2001:db8::1", "198.18.1.0/24"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(cidrs, want);
        assert_eq!(timeout, Duration::from_secs(60));
    }

    #[test]
    fn a_ban_list_names_the_file_and_line_of_its_first_bad_entry() {
        let err =
            |text: &str| parse_ban_list(text, "bans.txt", 60_000, &config(), &[]).unwrap_err();
        let bad = err("198.18.0.1\n# fine\n198.18.0.300\n2001:db8::zz\n");
        assert!(bad.starts_with("bans.txt:3: 198.18.0.300"), "{bad}");
        let safe = err("198.18.0.1\n192.0.2.7\n");
        assert!(
            safe.starts_with("bans.txt:2: ") && safe.contains("safelist"),
            "{safe}"
        );
        let two = err("198.18.0.1 198.18.0.2\n");
        assert!(two.starts_with("bans.txt:1: "), "one entry a line: {two}");
        assert_eq!(
            err("# nothing\n\n"),
            "bans.txt: no address or prefix to ban"
        );
        assert_eq!(err(""), "bans.txt: no address or prefix to ban");
        let short = parse_ban_list("198.18.0.1\n", "-", 10, &config(), &[]).unwrap_err();
        assert!(
            short.starts_with("-:1: ") && short.contains("at least 1s"),
            "{short}"
        );
    }

    #[test]
    fn a_request_of_many_bans_names_its_first_bad_entry() {
        let cidrs = |list: &[&str]| -> Vec<String> { list.iter().map(|c| c.to_string()).collect() };
        let (parsed, _) = parse_bans(
            &cidrs(&["198.18.0.1", "2001:db8::/64"]),
            60_000,
            &config(),
            &[],
        )
        .unwrap();
        assert_eq!(parsed.len(), 2);
        let err =
            parse_bans(&cidrs(&["198.18.0.1", "nonsense"]), 60_000, &config(), &[]).unwrap_err();
        assert!(err.starts_with("entry 2: nonsense"), "{err}");
        assert!(parse_bans(&[], 60_000, &config(), &[]).is_err());
    }

    /// Issue 15: an operator's ban of a never-banned range (or one holding it) or of the
    /// host's own address is refused with the reason; private ranges are bannable.
    #[test]
    fn issue15_bans_of_reserved_ranges_and_own_addresses_are_refused() {
        let own: Vec<IpAddr> = vec!["198.18.5.5".parse().unwrap(), "::1".parse().unwrap()];
        let ban = |text: &str| parse_ban(text, 60_000, &config(), &own);
        for (text, want) in [
            (
                "127.0.0.1",
                "127.0.0.1 is in 127.0.0.0/8 (loopback), which is never banned",
            ),
            (
                "255.255.255.255",
                "255.255.255.255 is in 240.0.0.0/4 (reserved and broadcast), which is never banned",
            ),
            (
                "224.0.0.0/8",
                "224.0.0.0/8 is in 224.0.0.0/4 (multicast), which is never banned",
            ),
            (
                "0.0.0.0/0",
                "0.0.0.0/0 holds 0.0.0.0/8 (\"this network\"), which is never banned",
            ),
            (
                "169.254.0.1",
                "169.254.0.1 is in 169.254.0.0/16 (link-local), which is never banned",
            ),
            (
                "fe80::1",
                "fe80::1 is in fe80::/10 (link-local), which is never banned",
            ),
            (
                "ff02::1",
                "ff02::1 is in ff00::/8 (multicast), which is never banned",
            ),
            (
                "::",
                ":: is in :: (the unspecified address), which is never banned",
            ),
            (
                "198.18.5.5",
                "198.18.5.5 holds 198.18.5.5, an address of this host, which is never banned",
            ),
            (
                "198.18.0.0/16",
                "198.18.0.0/16 holds 198.18.5.5, an address of this host, which is never banned",
            ),
        ] {
            assert_eq!(ban(text).unwrap_err(), want);
        }
        for fine in [
            "10.250.0.1",
            "192.168.0.0/16",
            "172.16.0.1",
            "fd00::/8",
            "198.18.5.6",
        ] {
            assert!(ban(fine).is_ok(), "{fine}");
        }
        let list = parse_ban_list(
            "198.18.0.1\n127.0.0.1\n",
            "bans.txt",
            60_000,
            &config(),
            &own,
        );
        assert!(list
            .unwrap_err()
            .starts_with("bans.txt:2: 127.0.0.1 is in 127.0.0.0/8"));
    }
}

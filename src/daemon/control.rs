//! The daemon's side of the control socket: a root-only Unix listener (mode 0600, and every
//! peer's credentials checked), connections read to one request line and answered without
//! ever blocking the loop (a connection that dawdles is closed), and the requests (ban, unban,
//! flush, status) carried out on the daemon's state.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
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
use crate::mitigate::Change;
use crate::ruleset;

const MAX_CONNECTIONS: usize = 16;
/// A connection that has not sent its request and read its reply by then is closed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the control socket, replacing a stale socket file but never a live daemon's.
pub fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
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
    // SAFETY: umask only changes this process's file creation mask; restored right after.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    bound.map_err(err)
}

/// Open control connections, each with its own mio token from `first_token` on.
pub struct Connections {
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
    pub fn new(first_token: usize) -> Connections {
        Connections {
            slots: Slots::new(first_token, MAX_CONNECTIONS),
        }
    }

    pub fn owns(&self, token: Token) -> bool {
        self.slots.owns(token)
    }

    /// Accepts every pending connection (edge-triggered). An unprivileged peer gets an error
    /// reply and is closed; when every slot is taken, the oldest connection is closed.
    pub fn accept_all(&mut self, listener: &UnixListener, registry: &Registry) {
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
    pub fn ready(&mut self, event: &Event, registry: &Registry) -> Option<Vec<u8>> {
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
    pub fn respond(&mut self, token: Token, response: &Response, registry: &Registry) {
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
    pub fn expire(&mut self, now: Instant, registry: &Registry) {
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
                let response = match parse_ban(&cidr, timeout_ms, &self.config) {
                    Err(e) => Response::error(e),
                    Ok((cidr, timeout)) => match self.nft.ban(cidr, timeout, self.features) {
                        Ok(role) => {
                            self.operator_bans.record(cidr, timeout, Instant::now());
                            self.tally.bans_by_operators += 1;
                            let t = humantime::format_duration(timeout);
                            log::info!("operator ban: {cidr} in {} for {t}", role.name());
                            Response::ok(format!("banned {cidr} for {t}"))
                        }
                        Err(e) => Response::error(e.to_string()),
                    },
                };
                (response, false)
            }
            Request::Unban { cidr } => {
                let response = match cidr.parse::<Cidr>() {
                    Err(e) => Response::error(format!("{cidr}: {e}")),
                    Ok(cidr) => match self.nft.unban(cidr) {
                        Ok(true) => {
                            self.operator_bans.forget(cidr);
                            log::info!("operator unban: {cidr}");
                            Response::ok(format!("unbanned {cidr}"))
                        }
                        Ok(false) => Response::error(format!("{cidr} is not banned")),
                        Err(e) => Response::error(e.to_string()),
                    },
                };
                (response, false)
            }
            Request::Flush {} => match self.nft.remove_table() {
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
}

/// The bans operators asked for, with their timeout and when they run out, so a table that
/// someone else removed can be put back with them, a restart keeps knowing them, and the
/// iptables compatibility chain gets them too.
#[derive(Debug, Default)]
pub struct OperatorBans {
    bans: Vec<(Cidr, Duration, Instant)>,
    /// Counts changes, so the daemon saves them when they change.
    revision: u64,
    /// Bans and unbans not yet mirrored into the iptables ipsets.
    unmirrored: Vec<Change>,
}

impl OperatorBans {
    fn record(&mut self, cidr: Cidr, timeout: Duration, now: Instant) {
        self.remove(cidr);
        self.bans.push((cidr, timeout, now + timeout));
        self.unmirrored.push(Change::Ban { cidr, timeout });
    }

    fn forget(&mut self, cidr: Cidr) {
        self.remove(cidr);
        self.unmirrored.push(Change::Unban { cidr });
    }

    fn remove(&mut self, cidr: Cidr) {
        self.bans.retain(|(c, _, _)| *c != cidr);
        self.revision += 1;
    }

    /// The bans and unbans not yet mirrored; the list is left empty.
    pub fn take_unmirrored(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.unmirrored)
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Takes over bans saved by an earlier run: (address, timeout, time left at `now`).
    pub fn resume(
        &mut self,
        saved: impl IntoIterator<Item = (Cidr, Duration, Duration)>,
        now: Instant,
    ) {
        for (cidr, timeout, left) in saved {
            self.remove(cidr);
            self.bans.push((cidr, timeout, now + left));
        }
    }

    /// The bans still in force at `now`: address, timeout, and the time they have left.
    pub fn in_force(&mut self, now: Instant) -> Vec<(Cidr, Duration, Duration)> {
        self.bans.retain(|(_, _, until)| *until > now);
        self.bans
            .iter()
            .map(|&(c, timeout, until)| (c, timeout, until.saturating_duration_since(now)))
            .collect()
    }
}

/// Checks a ban request: a valid address or prefix, not in the safelist, a sane duration.
pub fn parse_ban(cidr: &str, timeout_ms: u64, config: &Config) -> Result<(Cidr, Duration), String> {
    let parsed: Cidr = cidr.parse().map_err(|e| format!("{cidr}: {e}"))?;
    if let Some(safe) = config.safelist.iter().find(|s| s.contains(parsed.addr())) {
        return Err(format!(
            "{parsed} is in the safelist ({safe}): it is never dropped"
        ));
    }
    if timeout_ms < 1000 {
        return Err("a ban lasts at least 1s".to_string());
    }
    Ok((parsed, Duration::from_millis(timeout_ms)))
}

/// Root, or the user the daemon runs as; else the peer's uid.
fn peer_is_privileged(stream: &UnixStream) -> Result<(), u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt into a correctly sized ucred.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    // SAFETY: geteuid cannot fail.
    if rc == 0 && (cred.uid == 0 || cred.uid == unsafe { libc::geteuid() }) {
        Ok(())
    } else {
        Err(cred.uid)
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
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) if self.input.is_empty() => return ReadState::Closed,
                Ok(0) => return ReadState::Request(std::mem::take(&mut self.input)),
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
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

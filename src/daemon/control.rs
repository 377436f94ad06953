//! The daemon's side of the control socket: a root-only Unix listener, connections read to a
//! request line, and the requests (ban, unban, flush) carried out on our nft socket.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use super::DaemonError;
use crate::addr::Cidr;
use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::netlink::{Features, Nft};
use crate::ruleset;

const MAX_CONNECTIONS: usize = 16;

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
    first_token: usize,
    slots: Vec<Option<Conn>>,
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// What a readable connection brought.
pub enum Outcome {
    /// Nothing to do (yet).
    Idle,
    /// A flush was served: the daemon stops.
    Stop,
}

impl Connections {
    pub fn new(first_token: usize) -> Connections {
        Connections {
            first_token,
            slots: (0..MAX_CONNECTIONS).map(|_| None).collect(),
        }
    }

    pub fn owns(&self, token: Token) -> bool {
        (self.first_token..self.first_token + MAX_CONNECTIONS).contains(&token.0)
    }

    /// Accepts every pending connection (edge-triggered) from a privileged peer.
    pub fn accept_all(&mut self, listener: &UnixListener, registry: &Registry) {
        loop {
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("control socket: accept: {e}");
                    return;
                }
            };
            if !peer_is_privileged(&stream) {
                log::warn!("control socket: refused a connection from an unprivileged user");
                continue;
            }
            let Some(slot) = self.slots.iter().position(Option::is_none) else {
                log::warn!("control socket: too many connections; refused one");
                continue;
            };
            let token = Token(self.first_token + slot);
            if registry
                .register(&mut stream, token, Interest::READABLE)
                .is_ok()
            {
                self.slots[slot] = Some(Conn {
                    stream,
                    buf: Vec::new(),
                });
            }
        }
    }

    /// Serves the connection behind `token` once its request line is complete.
    pub fn serve(
        &mut self,
        token: Token,
        registry: &Registry,
        nft: &mut Nft,
        config: &Config,
        features: Features,
        bans: &mut OperatorBans,
    ) -> Outcome {
        let slot = token.0 - self.first_token;
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return Outcome::Idle;
        };
        let mut outcome = Outcome::Idle;
        match conn.read_request() {
            ReadState::Pending => return Outcome::Idle,
            ReadState::Closed => {}
            ReadState::Request(line) => {
                let (response, stop) = handle(nft, config, features, bans, &line);
                conn.reply(&response);
                if stop {
                    outcome = Outcome::Stop;
                }
            }
        }
        if let Some(mut conn) = self.slots[slot].take() {
            let _ = registry.deregister(&mut conn.stream);
        }
        outcome
    }
}

/// Serves one request; returns the response and whether the daemon must stop.
fn handle(
    nft: &mut Nft,
    config: &Config,
    features: Features,
    bans: &mut OperatorBans,
    line: &[u8],
) -> (Response, bool) {
    let request = match control::parse_request(line) {
        Ok(r) => r,
        Err(e) => return (Response::error(e), false),
    };
    match request {
        Request::Ban { cidr, timeout_ms } => {
            let response = match parse_ban(&cidr, timeout_ms, config) {
                Err(e) => Response::error(e),
                Ok((cidr, timeout)) => match nft.ban(cidr, timeout, features) {
                    Ok(role) => {
                        bans.record(cidr, timeout, Instant::now());
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
                Ok(cidr) => match nft.unban(cidr) {
                    Ok(true) => {
                        bans.forget(cidr);
                        log::info!("operator unban: {cidr}");
                        Response::ok(format!("unbanned {cidr}"))
                    }
                    Ok(false) => Response::error(format!("{cidr} is not banned")),
                    Err(e) => Response::error(e.to_string()),
                },
            };
            (response, false)
        }
        Request::Flush => match nft.remove_table() {
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
    }
}

/// The bans operators asked for, with their timeout and when they run out, so a table that
/// someone else removed can be put back with them, and a restart keeps knowing them.
#[derive(Debug, Default)]
pub struct OperatorBans {
    bans: Vec<(Cidr, Duration, Instant)>,
    /// Counts changes, so the daemon saves them when they change.
    revision: u64,
}

impl OperatorBans {
    fn record(&mut self, cidr: Cidr, timeout: Duration, now: Instant) {
        self.forget(cidr);
        self.bans.push((cidr, timeout, now + timeout));
    }

    fn forget(&mut self, cidr: Cidr) {
        self.bans.retain(|(c, _, _)| *c != cidr);
        self.revision += 1;
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
            self.forget(cidr);
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

/// Root, or the user the daemon runs as.
fn peer_is_privileged(stream: &UnixStream) -> bool {
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
    rc == 0 && (cred.uid == 0 || cred.uid == unsafe { libc::geteuid() })
}

enum ReadState {
    Pending,
    Closed,
    Request(Vec<u8>),
}

impl Conn {
    /// Reads until a whole line has arrived (edge-triggered: until WouldBlock).
    fn read_request(&mut self) -> ReadState {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return ReadState::Closed,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                        self.buf.truncate(end);
                        return ReadState::Request(std::mem::take(&mut self.buf));
                    }
                    if self.buf.len() > control::MAX_REQUEST {
                        return ReadState::Closed;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadState::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadState::Closed,
            }
        }
    }

    /// The reply is small enough for the socket buffer; a client that does not read it loses it.
    fn reply(&mut self, response: &Response) {
        let mut line = serde_json::to_vec(response).unwrap_or_default();
        line.push(b'\n');
        let _ = self.stream.write_all(&line);
    }
}

//! `ftagent run`: installs our table, then serves one mio event loop: signals through a
//! signalfd (SIGTERM/SIGINT stop, SIGHUP reloads the configuration) and operator requests on
//! the control socket. One thread; the nf_tables socket lives as long as the process.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::addr::Cidr;
use crate::config::{Compat, Config};
use crate::control::{self, Request, Response};
use crate::netlink::{Features, Nft, NlError};
use crate::ruleset;

const SIGNALS: Token = Token(0);
const CONTROL: Token = Token(1);
/// Control connections take the tokens from here on.
const FIRST_CONNECTION: usize = 2;
const MAX_CONNECTIONS: usize = 16;

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
    #[error("control socket {path}: {source}")]
    Control { path: PathBuf, source: io::Error },
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

/// Installs the table for `config`, failing if it does not read back as written.
fn install(nft: &mut Nft, config: &Config, features: Features) -> Result<(), DaemonError> {
    let spec = ruleset::desired(config);
    let installed = nft
        .install(&spec, &config.safelist, features)
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
        config.safelist.len(),
        installed.kept_bans
    );
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs until SIGTERM/SIGINT (leaving the table and its bans, which expire by themselves) or a
/// flush request (removing the table).
pub fn run(mut config: Config, config_path: Option<PathBuf>) -> Result<(), DaemonError> {
    let signals = SignalFd::new()?;
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
    install(&mut nft, &config, features)?;

    let socket_path = config.agent.control_socket.clone();
    let mut listener = bind_control(&socket_path)?;
    let mut poll = Poll::new().map_err(|source| DaemonError::Os {
        what: "create poll",
        source,
    })?;
    let registry = poll.registry();
    let os = |what| move |source| DaemonError::Os { what, source };
    registry
        .register(
            &mut SourceFd(&signals.fd.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )
        .map_err(os("register signalfd"))?;
    registry
        .register(&mut listener, CONTROL, Interest::READABLE)
        .map_err(os("register control socket"))?;
    log::info!("ready; control socket {}", socket_path.display());

    let mut events = Events::with_capacity(64);
    let mut conns: Vec<Option<Conn>> = (0..MAX_CONNECTIONS).map(|_| None).collect();
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
                        match signo {
                            libc::SIGHUP => {
                                reload(&mut nft, &mut config, config_path.as_deref(), features)
                            }
                            _ => {
                                log::info!("signal {signo}: stopping; table inet {} stays, its bans expire by themselves", ruleset::TABLE);
                                break 'serve Ok(());
                            }
                        }
                    }
                }
                CONTROL => accept_all(&listener, poll.registry(), &mut conns),
                Token(t) => {
                    let slot = t - FIRST_CONNECTION;
                    let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    match conn.read_request() {
                        ReadOutcome::Pending => continue,
                        ReadOutcome::Closed => {}
                        ReadOutcome::Request(line) => {
                            let (response, stop) = handle(&mut nft, &config, features, &line);
                            conn.reply(&response);
                            if stop {
                                conns[slot] = None;
                                break 'serve Ok(());
                            }
                        }
                    }
                    if let Some(mut conn) = conns[slot].take() {
                        let _ = poll.registry().deregister(&mut conn.stream);
                    }
                }
            }
        }
    };
    let _ = std::fs::remove_file(&socket_path);
    outcome
}

fn reload(nft: &mut Nft, config: &mut Config, path: Option<&Path>, features: Features) {
    let fresh = match Config::load(path) {
        Ok((fresh, _)) => fresh,
        Err(e) => {
            log::error!("SIGHUP: configuration not reloaded, keeping the running one: {e}");
            return;
        }
    };
    if fresh.agent.control_socket != config.agent.control_socket
        || fresh.nft.compat != config.nft.compat
    {
        log::warn!("SIGHUP: agent.control_socket and nft.compat take effect at the next start");
    }
    match install(nft, &fresh, features) {
        Ok(()) => {
            *config = fresh;
            log::info!("SIGHUP: configuration reloaded");
        }
        Err(e) => {
            log::error!("SIGHUP: new configuration not applied, keeping the running one: {e}")
        }
    }
}

/// Serves one request; returns the response and whether the daemon must stop.
fn handle(nft: &mut Nft, config: &Config, features: Features, line: &[u8]) -> (Response, bool) {
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
                        log::info!(
                            "operator ban: {cidr} in {} for {}",
                            role.name(),
                            humantime::format_duration(timeout)
                        );
                        Response::ok(format!(
                            "banned {cidr} for {}",
                            humantime::format_duration(timeout)
                        ))
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

fn bind_control(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |source| DaemonError::Control {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket file left by a crash answers nobody: replace it. One that answers belongs to a
    // running ftagent.
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

fn accept_all(listener: &UnixListener, registry: &mio::Registry, conns: &mut [Option<Conn>]) {
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
        let Some(slot) = conns.iter().position(Option::is_none) else {
            log::warn!("control socket: too many connections; refused one");
            continue;
        };
        if registry
            .register(
                &mut stream,
                Token(FIRST_CONNECTION + slot),
                Interest::READABLE,
            )
            .is_ok()
        {
            conns[slot] = Some(Conn {
                stream,
                buf: Vec::new(),
            });
        }
    }
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

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

enum ReadOutcome {
    Pending,
    Closed,
    Request(Vec<u8>),
}

impl Conn {
    /// Reads until a whole line has arrived (edge-triggered: until WouldBlock).
    fn read_request(&mut self) -> ReadOutcome {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                        self.buf.truncate(end);
                        return ReadOutcome::Request(std::mem::take(&mut self.buf));
                    }
                    if self.buf.len() > control::MAX_REQUEST {
                        return ReadOutcome::Closed;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadOutcome::Closed,
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

/// SIGTERM, SIGINT and SIGHUP, blocked and read from a non-blocking signalfd.
struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    fn new() -> Result<SignalFd, DaemonError> {
        // SAFETY: sigset manipulation on a local set; sigprocmask before any thread exists;
        // signalfd returns a new descriptor that we own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(DaemonError::Os {
                    what: "block signals",
                    source: io::Error::last_os_error(),
                });
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(DaemonError::Os {
                    what: "signalfd",
                    source: io::Error::last_os_error(),
                });
            }
            Ok(SignalFd {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// The next pending signal, or None when there is none (WouldBlock).
    fn read(&self) -> Option<i32> {
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading into a correctly sized siginfo.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut info as *mut _ as *mut libc::c_void,
                size,
            )
        };
        (n as usize == size).then_some(info.ssi_signo as i32)
    }
}

//! The systemd notification protocol (sd_notify) without libsystemd: one datagram per state
//! change sent to `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`): READY=1,
//! RELOADING=1, STOPPING=1, STATUS=…, and WATCHDOG=1 at half the interval systemd asks for in
//! `$WATCHDOG_USEC` (for us only, when `$WATCHDOG_PID` names another process). Outside systemd
//! every call does nothing. The periodic sends (watchdog, status) allocate nothing.

use std::io::{self, Write as _};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// How often the STATUS line is refreshed at most.
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_secs(5);
/// The longest STATUS line sent; a longer one is cut.
const STATUS_MAX: usize = 256;

/// Where and how often to notify; `Notifier::default()` notifies no one.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    target: Option<Target>,
    /// Half the watchdog timeout systemd set, when it set one for us.
    watchdog_every: Option<Duration>,
    next_watchdog: Option<Instant>,
    next_status: Option<Instant>,
    status: StatusBuffer,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
}

/// Why the environment's notification settings were not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NotifyEnvError {
    #[error("NOTIFY_SOCKET={0:?}: only a path (/…) or an abstract name (@…) is supported")]
    Socket(String),
    #[error("WATCHDOG_USEC={0:?} is not a positive number of microseconds; the watchdog is off")]
    WatchdogUsec(String),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. Settings that cannot be
    /// used are returned as warnings (for the caller to log) and left off.
    pub(crate) fn from_env() -> (Notifier, Vec<String>) {
        let var = |name| std::env::var(name).ok();
        let (notifier, errors) = Notifier::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        (notifier, errors.iter().map(ToString::to_string).collect())
    }

    /// [`Notifier::from_env`] with the variables and our pid passed in.
    pub(crate) fn from_vars(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> (Notifier, Vec<NotifyEnvError>) {
        let mut errors = Vec::new();
        let mut notifier = Notifier::default();
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return (notifier, errors);
        };
        match Target::new(socket) {
            Ok(target) => notifier.target = Some(target),
            Err(e) => {
                errors.push(e);
                return (notifier, errors);
            }
        }
        let for_us = watchdog_pid.is_none_or(|pid| pid.trim().parse::<u32>() == Ok(own_pid));
        if let (Some(usec), true) = (watchdog_usec, for_us) {
            match usec.trim().parse::<u64>() {
                Ok(usec) if usec > 0 => {
                    notifier.watchdog_every = Some(Duration::from_micros(usec) / 2);
                }
                _ => errors.push(NotifyEnvError::WatchdogUsec(usec.to_string())),
            }
        }
        (notifier, errors)
    }

    /// True when a service manager listens.
    #[cfg(test)]
    pub(crate) fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// How often WATCHDOG=1 must be sent, when the watchdog is on.
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_every
    }

    /// Start-up is complete: the table is installed and the loop is about to serve.
    pub(crate) fn ready(&self) {
        self.send(b"READY=1");
    }

    /// A reload begins (READY=1 again when it is over, whatever its outcome).
    pub(crate) fn reloading(&self) {
        let mut line = StatusBuffer::default();
        let now = crate::sys::monotonic().unwrap_or_default();
        let usec = now.as_secs() * 1_000_000 + u64::from(now.subsec_micros());
        line.write(format_args!("RELOADING=1\nMONOTONIC_USEC={usec}"));
        self.send(line.bytes());
    }

    /// The service is stopping.
    pub(crate) fn stopping(&self) {
        self.send(b"STOPPING=1");
    }

    /// Called on every tick: WATCHDOG=1 when it is due, and a STATUS line (built by
    /// `status` into a fixed buffer) at most every [`STATUS_INTERVAL`]. A stuck loop makes
    /// no ticks, so systemd notices it. Allocates nothing.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        status: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
    ) {
        if self.target.is_none() {
            return;
        }
        if let Some(every) = self.watchdog_every {
            let due = self.next_watchdog.unwrap_or(now);
            if now >= due {
                // On a fixed schedule, so late ticks do not stretch it; after a stall, afresh.
                let next = due + every;
                self.next_watchdog = Some(if next > now { next } else { now + every });
                self.send(b"WATCHDOG=1");
            }
        }
        if self.next_status.is_none_or(|due| now >= due) {
            self.next_status = Some(now + STATUS_INTERVAL);
            let mut line = std::mem::take(&mut self.status);
            line.clear();
            let _ = line.writer().write_all(b"STATUS=");
            let _ = status(&mut line.writer());
            line.one_line(b"STATUS=".len());
            self.send(line.bytes());
            self.status = line;
        }
    }

    /// Sends one notification; a failure is logged, never fatal (systemd may be restarting).
    fn send(&self, message: &[u8]) {
        if let Some(target) = &self.target {
            match target.socket.send_to_addr(message, &target.addr) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => log::warn!("sd_notify: {e}"),
            }
        }
    }
}

impl Target {
    fn new(socket: &str) -> Result<Target, NotifyEnvError> {
        let unsupported = || NotifyEnvError::Socket(socket.to_string());
        let addr = if let Some(name) = socket.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes())
        } else if socket.starts_with('/') {
            SocketAddr::from_pathname(socket)
        } else {
            return Err(unsupported());
        }
        .map_err(|_| unsupported())?;
        // Non-blocking: a service manager that does not read its queue must not stall the
        // event loop; a notification it misses is sent again (watchdog, status) or moot.
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|_| unsupported())?;
        Ok(Target { socket, addr })
    }
}

/// A STATUS line in a fixed array, cut at [`STATUS_MAX`] bytes.
#[derive(Debug)]
struct StatusBuffer {
    bytes: [u8; STATUS_MAX],
    len: usize,
}

impl Default for StatusBuffer {
    fn default() -> StatusBuffer {
        StatusBuffer {
            bytes: [0; STATUS_MAX],
            len: 0,
        }
    }
}

impl StatusBuffer {
    fn clear(&mut self) {
        self.len = 0;
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// A newline after `from` would start another field: it becomes a space.
    fn one_line(&mut self, from: usize) {
        for byte in self.bytes[from.min(self.len)..self.len].iter_mut() {
            if *byte == b'\n' {
                *byte = b' ';
            }
        }
    }

    fn write(&mut self, args: std::fmt::Arguments) {
        let _ = self.writer().write_fmt(args);
    }

    fn writer(&mut self) -> StatusWriter<'_> {
        StatusWriter { buffer: self }
    }
}

/// Appends to a [`StatusBuffer`]; what does not fit is dropped.
struct StatusWriter<'a> {
    buffer: &'a mut StatusBuffer,
}

impl io::Write for StatusWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let b = &mut *self.buffer;
        let room = STATUS_MAX - b.len;
        let n = data.len().min(room);
        for (slot, &byte) in b.bytes[b.len..b.len + n].iter_mut().zip(data) {
            *slot = byte;
        }
        b.len += n;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener_path(tag: &str) -> (UnixDatagram, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("fta-notify-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        (socket, path)
    }

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn nothing_more(socket: &UnixDatagram) {
        socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        let got = socket.recv(&mut buf);
        assert!(got.is_err(), "unexpected notification: {got:?}");
        socket.set_nonblocking(false).unwrap();
    }

    #[test]
    fn path_socket_gets_the_state_changes() {
        let (socket, path) = listener_path("path");
        let (n, errors) = Notifier::from_vars(path.to_str(), None, None, 1);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(n.is_active());
        n.ready();
        assert_eq!(received(&socket), "READY=1");
        n.reloading();
        let reloading = received(&socket);
        let (first, second) = reloading.split_once('\n').unwrap();
        assert_eq!(first, "RELOADING=1");
        let usec: u64 = second
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec > 0);
        n.stopping();
        assert_eq!(received(&socket), "STOPPING=1");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn abstract_socket_is_written_with_an_at() {
        let name = format!("fta-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (n, errors) = Notifier::from_vars(Some(&format!("@{name}")), None, None, 1);
        assert!(errors.is_empty(), "{errors:?}");
        n.ready();
        assert_eq!(received(&socket), "READY=1");
    }

    #[test]
    fn watchdog_at_half_the_interval_and_status_every_few_seconds() {
        let (socket, path) = listener_path("watchdog");
        let (mut n, errors) = Notifier::from_vars(path.to_str(), Some("2000000"), Some("77"), 77);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
        let t0 = Instant::now();
        let mut calls = 0;
        let mut status = |w: &mut dyn io::Write| {
            calls += 1;
            write!(w, "2 incidents open\nsecond line")
        };
        n.tick(t0, &mut status);
        assert_eq!(received(&socket), "WATCHDOG=1");
        assert_eq!(received(&socket), "STATUS=2 incidents open second line");
        // 100 ms ticks: no watchdog before 1 s, no status before 5 s.
        for i in 1..10 {
            n.tick(t0 + Duration::from_millis(100 * i), &mut status);
        }
        nothing_more(&socket);
        n.tick(t0 + Duration::from_secs(1), &mut status);
        assert_eq!(received(&socket), "WATCHDOG=1");
        nothing_more(&socket);
        n.tick(t0 + Duration::from_secs(5), &mut status);
        assert_eq!(received(&socket), "WATCHDOG=1");
        assert_eq!(received(&socket), "STATUS=2 incidents open second line");
        assert_eq!(calls, 2);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn ticks_allocate_nothing() {
        let (socket, path) = listener_path("alloc");
        let (mut n, _) = Notifier::from_vars(path.to_str(), Some("1000"), None, 1);
        let t0 = Instant::now();
        n.tick(t0, |w| write!(w, "warming up"));
        let before = crate::alloc::thread_allocations();
        for i in 1..=50u64 {
            n.tick(t0 + Duration::from_secs(i), |w| {
                write!(w, "{} incidents open, uptime {}s", i % 3, i)
            });
        }
        assert_eq!(crate::alloc::thread_allocations() - before, 0);
        // The queue holds only a few datagrams: the rest were dropped, not waited for.
        assert_eq!(received(&socket), "WATCHDOG=1");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn long_status_is_cut() {
        let (socket, path) = listener_path("long");
        let (mut n, _) = Notifier::from_vars(path.to_str(), None, None, 1);
        n.tick(Instant::now(), |w| w.write_all(&[b'x'; 1000]));
        let got = received(&socket);
        assert_eq!(got.len(), STATUS_MAX);
        assert!(got.starts_with("STATUS=xxx"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn environment_edge_cases() {
        // No socket: nothing to do, whatever else is set.
        let (n, errors) = Notifier::from_vars(None, Some("1000"), None, 1);
        assert!(!n.is_active() && errors.is_empty());
        let (n, errors) = Notifier::from_vars(Some(""), None, None, 1);
        assert!(!n.is_active() && errors.is_empty());
        // Unsupported socket kinds are reported.
        let (n, errors) = Notifier::from_vars(Some("vsock:2:1234"), None, None, 1);
        assert!(!n.is_active());
        assert_eq!(errors, vec![NotifyEnvError::Socket("vsock:2:1234".into())]);
        // The watchdog is someone else's, or its value is nonsense.
        let (n, errors) = Notifier::from_vars(Some("/run/x"), Some("1000"), Some("5"), 6);
        assert!(n.is_active() && n.watchdog_interval().is_none() && errors.is_empty());
        for bad in ["0", "-5", "soon", ""] {
            let (n, errors) = Notifier::from_vars(Some("/run/x"), Some(bad), None, 1);
            assert!(n.watchdog_interval().is_none());
            assert_eq!(errors, vec![NotifyEnvError::WatchdogUsec(bad.into())]);
        }
        // A socket that no one listens on: sends fail quietly.
        let (n, _) = Notifier::from_vars(Some("/nonexistent/fta-notify.sock"), None, None, 1);
        n.ready();
    }
}

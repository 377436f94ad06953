//! The daemon's two kernel clocks and bells, as non-blocking descriptors for mio: a signalfd
//! for SIGTERM/SIGINT/SIGHUP and a periodic timerfd for the tick, which knows when each of
//! its periods was due.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::lateness::Schedule;
use crate::sys;

/// SIGTERM, SIGINT and SIGHUP, blocked and read from a non-blocking signalfd.
pub(crate) struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks the signals (call before any thread exists) and opens the descriptor.
    pub(crate) fn new() -> io::Result<SignalFd> {
        Ok(SignalFd {
            fd: sys::signalfd(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP])?,
        })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next pending signal, or None when there is none.
    pub(crate) fn read(&self) -> Option<i32> {
        sys::read_signal(&self.fd)
    }
}

/// A periodic timer on the monotonic clock, armed at absolute times so that when each period
/// is due is known exactly (for the tick's lateness).
pub(crate) struct TimerFd {
    fd: OwnedFd,
    schedule: Schedule,
}

impl TimerFd {
    pub(crate) fn periodic(interval: Duration) -> io::Result<TimerFd> {
        let mut timer = TimerFd {
            fd: sys::timerfd()?,
            schedule: Schedule::new(Duration::ZERO, interval),
        };
        timer.rearm(interval, interval)?;
        Ok(timer)
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Fires next after `first`, then every `interval` from there.
    pub(crate) fn rearm(&mut self, first: Duration, interval: Duration) -> io::Result<()> {
        let due = sys::monotonic()? + first.max(Duration::from_nanos(1));
        sys::timerfd_set(&self.fd, due, interval)?;
        self.schedule = Schedule::new(due, interval);
        Ok(())
    }

    /// How many periods passed since the last call (0 when none); each one's lateness, from
    /// when it was due until now, goes to `late`.
    pub(crate) fn expired(&mut self, late: impl FnMut(Duration)) -> u64 {
        let Some(count) = sys::timerfd_expirations(&self.fd) else {
            return 0;
        };
        if let Ok(now) = sys::monotonic() {
            self.schedule.served(count, now, late);
        }
        count
    }
}

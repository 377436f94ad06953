//! The daemon's two kernel clocks and bells, as non-blocking descriptors for mio: a signalfd
//! for SIGTERM/SIGINT/SIGHUP and a periodic timerfd for the tick, which knows when each of
//! its periods was due.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::lateness::Schedule;

/// SIGTERM, SIGINT and SIGHUP, blocked and read from a non-blocking signalfd.
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks the signals (call before any thread exists) and opens the descriptor.
    pub fn new() -> io::Result<SignalFd> {
        // SAFETY: sigset manipulation on a local set; signalfd returns a new descriptor that
        // we own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next pending signal, or None when there is none.
    pub fn read(&self) -> Option<i32> {
        // SAFETY: an all-zero siginfo is valid; we read into it with its exact size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
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

/// A periodic timer on the monotonic clock, armed at absolute times so that when each period
/// is due is known exactly (for the tick's lateness).
pub struct TimerFd {
    fd: OwnedFd,
    schedule: Schedule,
}

impl TimerFd {
    pub fn periodic(interval: Duration) -> io::Result<TimerFd> {
        // SAFETY: timerfd_create returns a new descriptor that we own.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut timer = TimerFd {
            // SAFETY: a descriptor just returned to us, owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            schedule: Schedule::new(Duration::ZERO, interval),
        };
        timer.rearm(interval, interval)?;
        Ok(timer)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Fires next after `first`, then every `interval` from there.
    pub fn rearm(&mut self, first: Duration, interval: Duration) -> io::Result<()> {
        let due = monotonic()? + first.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: timespec(interval),
            it_value: timespec(due),
        };
        // SAFETY: settime on our own descriptor with a fully initialised itimerspec.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.schedule = Schedule::new(due, interval);
        Ok(())
    }

    /// How many periods passed since the last call (0 when none); each one's lateness, from
    /// when it was due until now, goes to `late`.
    pub fn expired(&mut self, late: impl FnMut(Duration)) -> u64 {
        let mut count = 0u64;
        // SAFETY: reading the 8-byte expiration count into a u64.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut count as *mut u64 as *mut libc::c_void,
                8,
            )
        };
        if n != 8 {
            return 0;
        }
        if let Ok(now) = monotonic() {
            self.schedule.served(count, now, late);
        }
        count
    }
}

/// The monotonic clock (the timer's, and `Instant`'s on Linux) as time since its origin.
pub fn monotonic() -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    ))
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

//! The daemon's two kernel clocks and bells, as non-blocking descriptors for mio: a signalfd
//! for SIGTERM/SIGINT/SIGHUP and a periodic timerfd for the tick.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

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

/// A periodic monotonic timer.
pub struct TimerFd {
    fd: OwnedFd,
}

impl TimerFd {
    pub fn periodic(interval: Duration) -> io::Result<TimerFd> {
        // SAFETY: timerfd_create returns a new descriptor that we own; settime gets a fully
        // initialised itimerspec.
        unsafe {
            let fd = libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let ts = timespec(interval);
            let spec = libc::itimerspec {
                it_interval: ts,
                it_value: ts,
            };
            if libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(TimerFd { fd })
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Fires next after `first`, then every `interval` from there.
    pub fn rearm(&self, first: Duration, interval: Duration) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: timespec(interval),
            it_value: timespec(first.max(Duration::from_nanos(1))),
        };
        // SAFETY: settime on our own descriptor with a fully initialised itimerspec.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// How many periods passed since the last read (0 when none).
    pub fn expirations(&self) -> u64 {
        let mut count = 0u64;
        // SAFETY: reading the 8-byte expiration count into a u64.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut count as *mut u64 as *mut libc::c_void,
                8,
            )
        };
        if n == 8 {
            count
        } else {
            0
        }
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

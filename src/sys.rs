//! The operating system's calls that need `unsafe`, each behind a safe function: descriptors,
//! signals, clocks, sockets, the terminal, priorities. The lowest layer: it names nothing else
//! of the crate. (The counting allocator in `alloc` is `unsafe` by nature and stays there.)

use std::ffi::CStr;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use libc::c_int;

/// A libc return value: negative is failure, with the reason in errno.
fn check(rc: c_int) -> io::Result<c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Takes ownership of a descriptor a call just returned (negative: the call failed).
fn owned(rc: c_int) -> io::Result<OwnedFd> {
    let raw = check(rc)?;
    // SAFETY: `raw` is a fresh descriptor the kernel just gave us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The effective user id.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sets this process's file creation mask; returns the previous one.
pub(crate) fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: umask only changes the process's creation mask; it cannot fail.
    unsafe { libc::umask(mask) }
}

/// Whether this process may write into `path` (access(2) with W_OK).
pub(crate) fn may_write(path: &CStr) -> bool {
    // SAFETY: access reads the NUL-terminated path, which lives for the call.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

/// The running kernel's release (`uname -r`).
pub(crate) fn kernel_release() -> Option<String> {
    // SAFETY: an all-zero utsname (arrays of integers) is a valid value.
    let mut uts: libc::utsname = unsafe { mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname; uname fills it.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Adds `by` to the calling thread's niceness (Linux: niceness is per thread), at most 19.
pub(crate) fn lower_thread_priority(by: c_int) -> io::Result<()> {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    // getpriority may return -1 on success: errno, cleared first, tells failure apart.
    // SAFETY: __errno_location points to this thread's errno, always valid to write.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: getpriority only reads the thread's priority.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    // SAFETY: as above, this thread's errno.
    let failed = |rc: c_int| rc == -1 && unsafe { *libc::__errno_location() } != 0;
    if failed(nice) {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setpriority on the calling thread with a plain integer.
    if failed(unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, (nice + by).min(19)) }) {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The monotonic clock (timerfd's, and `Instant`'s on Linux) as time since its origin.
pub(crate) fn monotonic() -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec that we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    ))
}

/// Blocks `signals` for the calling thread (threads started later inherit the mask) and
/// opens a non-blocking signalfd that reads them.
pub(crate) fn signalfd(signals: &[c_int]) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero sigset_t is a valid value (emptied right below anyway).
    let mut set: libc::sigset_t = unsafe { mem::zeroed() };
    // SAFETY: sigemptyset and sigaddset only write the set we own.
    unsafe { libc::sigemptyset(&mut set) };
    for &sig in signals {
        // SAFETY: as above.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    // SAFETY: sigprocmask reads our set; the old mask is not asked for (null).
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd(-1, …) reads our set and returns a new descriptor.
    owned(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })
}

/// The number of the next signal pending on a signalfd, or None when there is none.
pub(crate) fn read_signal(fd: impl AsFd) -> Option<i32> {
    // SAFETY: an all-zero signalfd_siginfo (integers only) is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { mem::zeroed() };
    let size = mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: read into `info`, within its exact size.
    let n = unsafe {
        libc::read(
            fd.as_fd().as_raw_fd(),
            &mut info as *mut _ as *mut libc::c_void,
            size,
        )
    };
    (n as usize == size).then_some(info.ssi_signo as i32)
}

/// A new non-blocking timerfd on the monotonic clock, not armed.
pub(crate) fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes plain integers and returns a new descriptor.
    owned(unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    })
}

/// Arms a timerfd to fire at the absolute monotonic time `due`, then every `interval`.
pub(crate) fn timerfd_set(fd: impl AsFd, due: Duration, interval: Duration) -> io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: timespec(interval),
        it_value: timespec(due),
    };
    // SAFETY: settime on a descriptor we hold, with a fully initialised itimerspec; the old
    // value is not asked for (null).
    let rc = unsafe {
        libc::timerfd_settime(
            fd.as_fd().as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
    check(rc).map(drop)
}

/// The expirations a timerfd counted since the last read; None when it has not fired.
pub(crate) fn timerfd_expirations(fd: impl AsFd) -> Option<u64> {
    let mut count = 0u64;
    // SAFETY: reading the 8-byte expiration count into a u64 we own.
    let n = unsafe {
        libc::read(
            fd.as_fd().as_raw_fd(),
            &mut count as *mut u64 as *mut libc::c_void,
            8,
        )
    };
    (n == 8).then_some(count)
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// One read(2) into `buf`.
pub(crate) fn read(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read into a buffer we own, within its length.
    let n = unsafe { libc::read(fd.as_fd().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Waits up to `timeout_ms` for `fd` to be readable (poll(2) for POLLIN); true when it is.
pub(crate) fn poll_readable(fd: RawFd, timeout_ms: c_int) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own; a descriptor that is not open is reported in
    // revents, not undefined.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) > 0 }
}

/// Makes a descriptor non-blocking (best effort: a failure leaves it as it was).
pub(crate) fn set_nonblocking(fd: impl AsFd) {
    let fd = fd.as_fd().as_raw_fd();
    // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor we hold; only adds O_NONBLOCK.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK == 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Whether `fd` is a terminal.
pub(crate) fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

/// The rows of the terminal on `fd` (TIOCGWINSZ); None when it cannot tell.
pub(crate) fn window_rows(fd: impl AsFd) -> Option<u16> {
    // SAFETY: an all-zero winsize (integers only) is a valid value.
    let mut size: libc::winsize = unsafe { mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size.ws_row)
}

/// The terminal settings of `fd`.
pub(crate) fn tcgetattr(fd: impl AsFd) -> io::Result<libc::termios> {
    // SAFETY: an all-zero termios (integers only) is a valid value.
    let mut t: libc::termios = unsafe { mem::zeroed() };
    // SAFETY: tcgetattr fills the termios we own.
    if unsafe { libc::tcgetattr(fd.as_fd().as_raw_fd(), &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

/// Applies terminal settings to `fd` now (TCSANOW).
pub(crate) fn tcsetattr(fd: impl AsFd, t: &libc::termios) -> io::Result<()> {
    // SAFETY: tcsetattr reads the termios it is given.
    if unsafe { libc::tcsetattr(fd.as_fd().as_raw_fd(), libc::TCSANOW, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new socket.
pub(crate) fn socket(domain: c_int, kind: c_int, protocol: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers and returns a new descriptor.
    owned(unsafe { libc::socket(domain, kind, protocol) })
}

/// Binds a netlink socket with port id 0 (the kernel assigns one) and returns the port id it
/// got.
pub(crate) fn bind_netlink(fd: impl AsFd) -> io::Result<u32> {
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: an all-zero sockaddr_nl (integers only) is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    let mut len = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let addr_ptr = &mut addr as *mut libc::sockaddr_nl as *mut libc::sockaddr;
    // SAFETY: bind reads `len` bytes of our sockaddr_nl.
    if unsafe { libc::bind(raw, addr_ptr, len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getsockname writes at most `len` bytes into our sockaddr_nl. On failure the
    // address stays as bound (port id 0).
    unsafe { libc::getsockname(raw, addr_ptr, &mut len) };
    Ok(addr.nl_pid)
}

/// setsockopt(2) with the value `value` of the option's type `T` (an integer or a struct).
pub(crate) fn setsockopt<T: Copy>(
    fd: impl AsFd,
    level: c_int,
    name: c_int,
    value: &T,
) -> io::Result<()> {
    setsockopt_raw(fd.as_fd().as_raw_fd(), level, name, value)
}

/// setsockopt(2) on a descriptor known only by its number (a socket another crate owns, such
/// as neli's): a closed or foreign descriptor gives the kernel's error, never undefined
/// behaviour.
pub(crate) fn setsockopt_raw<T: Copy>(
    fd: RawFd,
    level: c_int,
    name: c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed; the kernel only reads it, and
    // checks the descriptor itself.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(rc).map(drop)
}

/// getsockopt(2) of an integer option.
pub(crate) fn getsockopt_int(fd: impl AsFd, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a correctly sized int we own.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            &mut value as *mut c_int as *mut libc::c_void,
            &mut len,
        )
    };
    check(rc).map(|_| value)
}

/// The uid of the process at the other end of a Unix socket (SO_PEERCRED).
pub(crate) fn peer_uid(fd: impl AsFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt into a correctly sized ucred we own.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    check(rc).map(|_| cred.uid)
}

/// Sends one datagram to the kernel on a netlink socket; returns the bytes sent.
pub(crate) fn send_to_kernel(fd: impl AsFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: an all-zero sockaddr_nl (integers only) is valid and addresses the kernel.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: sendto on a descriptor we hold, with a valid buffer and address of the sizes
    // passed.
    let rc = unsafe {
        libc::sendto(
            fd.as_fd().as_raw_fd(),
            bytes.as_ptr() as *const libc::c_void,
            bytes.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// One recv(2) into `buf` with `flags`; the length the kernel reports (with MSG_TRUNC, the
/// datagram's real length, which may exceed the buffer).
pub(crate) fn recv(fd: impl AsFd, buf: &mut [u8], flags: c_int) -> io::Result<usize> {
    // SAFETY: recv into our own buffer, within its length.
    let rc = unsafe {
        libc::recv(
            fd.as_fd().as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            flags,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// For root unit tests: moves the calling thread into the network namespace `file` names.
#[cfg(test)]
pub(crate) fn enter_netns(file: &std::fs::File) -> io::Result<()> {
    // SAFETY: setns on a descriptor we hold; it affects only this thread.
    check(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// For root unit tests: a TCP connection from `src` (any 127/8 address works on lo) to `dst`.
#[cfg(test)]
pub(crate) fn connect_from(
    src: std::net::Ipv4Addr,
    dst: std::net::SocketAddrV4,
) -> io::Result<std::net::TcpStream> {
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let fd = socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)?;
    let local = sin(src, 0);
    // SAFETY: bind reads a correctly sized sockaddr_in we own.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &local as *const _ as *const libc::sockaddr,
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let remote = sin(*dst.ip(), dst.port());
    // SAFETY: connect reads a correctly sized sockaddr_in we own.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &remote as *const _ as *const libc::sockaddr,
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::TcpStream::from(fd))
}

/// For unit tests: CPU time of the calling thread (user, system).
#[cfg(test)]
pub(crate) fn thread_cpu_time() -> (Duration, Duration) {
    // SAFETY: an all-zero rusage (integers only) is a valid value.
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: getrusage fills the rusage we own.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// For unit tests: drops CAP_NET_ADMIN from the calling thread's effective capabilities
/// (threads have their own). Panics when the kernel refuses.
#[cfg(test)]
pub(crate) fn drop_net_admin() {
    const CAP_NET_ADMIN: u32 = 12;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a version-3 header and two data structs, as the ABI says.
    let got = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(got, 0);
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    // SAFETY: capset with the same header and data, as the ABI says.
    let set = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(set, 0);
}

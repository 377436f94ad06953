//! Network-namespace test lab: a victim and an attacker namespace joined by a veth
//! pair, a users' namespace with its own veth to the victim (real clients of the victim's
//! HTTP and DNS services), bounded traffic helpers (paced floods, trafgen at full speed),
//! per-source arrival counters on the victim, and a record of what the victim received per
//! 100 ms and what share of the users was served during each test's flood.
#![allow(dead_code)]

pub mod fail2ban;
pub mod pacer;
mod record;
mod selftest;
mod traffic;
mod users;
mod web;

pub use pacer::Flood;
pub use traffic::UdpFlood;
pub use users::{USERS4, USERS6};

use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Victim address (IPv4), on the victim side of the veth.
pub const VICTIM4: &str = "10.250.0.2";
/// Main attacker source address (IPv4).
pub const ATTACKER4: &str = "10.250.0.1";
/// Second attacker-namespace source address (IPv4), e.g. an innocent client.
pub const OTHER4: &str = "10.250.0.3";
/// A source in another /24 (10.250.1.0/24), for prefix bans that must spare the others.
pub const FAR4: &str = "10.250.1.1";
/// Victim address (IPv6).
pub const VICTIM6: &str = "fd00:250::2";
/// Main attacker source address (IPv6).
pub const ATTACKER6: &str = "fd00:250::1";
/// Second attacker-namespace source address (IPv6).
pub const OTHER6: &str = "fd00:250::3";

/// Interface name of the veth end inside the victim namespace.
pub const VICTIM_IF: &str = "fta-v0";
/// Interface name of the veth end inside the attacker namespace.
pub const ATTACKER_IF: &str = "fta-a0";

/// The victim's interface towards the users, and the users' end of that veth.
pub const VICTIM_USERS_IF: &str = "fta-v1";
pub const USERS_IF: &str = "fta-u0";

const VICTIM_MAC: &str = "02:fa:00:00:00:02";
const ATTACKER_MAC: &str = "02:fa:00:00:00:01";
const VICTIM_USERS_MAC: &str = "02:fa:00:00:01:02";
const USERS_MAC: &str = "02:fa:00:00:01:01";

/// Source addresses that `count_arrivals` installs a counter for.
const COUNTED: [&str; 5] = [ATTACKER4, OTHER4, FAR4, ATTACKER6, OTHER6];

/// Timeout for `Netns::run` commands.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace period between SIGTERM and SIGKILL when stopping processes.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// Upper bound on `Lab::ping` counts (at 10 ms intervals: 20 s, below `RUN_TIMEOUT`).
pub const MAX_PING_COUNT: u32 = 2000;

const NS_PREFIX_V: &str = "fta-v-";
const NS_PREFIX_A: &str = "fta-a-";
const NS_PREFIX_U: &str = "fta-u-";
const DIR_PREFIX: &str = "ftagent-lab-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Gating and serialisation

fn ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no"
        ),
        Err(_) => false,
    }
}

/// Prints `skipped {test}: {why}` and returns false, or panics when env `CI` is set.
pub fn skip_or_panic(test: &str, why: &str) -> bool {
    if ci() {
        panic!("{test}: {why}; CI is set, so these tests must run rather than be skipped");
    }
    eprintln!("skipped {test}: {why}");
    false
}

fn tool_works(prog: &str, arg: &str) -> bool {
    Command::new(prog)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True when the lab can run here: euid 0 and `ip` and `nft` are installed.
/// Otherwise prints `skipped {test}: ...` and returns false, or panics when env `CI` is set.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_panic(test, "needs root (network namespaces)");
    }
    if !tool_works("ip", "-V") {
        return skip_or_panic(test, "needs the `ip` tool (iproute2)");
    }
    if !tool_works("nft", "-v") {
        return skip_or_panic(test, "needs the `nft` tool (nftables)");
    }
    true
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Held for a whole namespace test so floods never overlap: one test at a time in this process
/// (a mutex; one poisoned by a failed test is recovered) and across processes — a second test
/// run, a benchmark — through an flock on a lock file.
pub struct Serial {
    _process: MutexGuard<'static, ()>,
    _file: std::fs::File,
}

const LOCK_FILE: &str = "/tmp/ftagent-lab.lock";

pub fn serial() -> Serial {
    let process = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("lab: open {LOCK_FILE}: {e}"));
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::Interrupted,
            "lab: flock {LOCK_FILE}: {err}"
        );
    }
    Serial {
        _process: process,
        _file: file,
    }
}

/// True when `program` is installed (an executable path or a name on the PATH). Otherwise prints
/// `skipped {test}: needs {program} ({package})` and returns false, or panics when env `CI` is set.
pub fn require_program(test: &str, program: &str, package: &str) -> bool {
    let found = if program.contains('/') {
        Path::new(program).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).exists()))
    };
    found
        || skip_or_panic(
            test,
            &format!("needs {program} ({package}; tests/deps.sh --test installs it)"),
        )
}

/// True when nginx, the victim's web server, is installed (`web`). Otherwise prints
/// `skipped {test}: ...` and returns false, or panics when env `CI` is set.
pub fn require_nginx(test: &str) -> bool {
    web::binary().is_some()
        || skip_or_panic(
            test,
            "needs nginx for the victim's web server (Debian package nginx-light; tests/deps.sh --test installs it)",
        )
}

/// What a namespace test starts with: the root and nginx checks (None, with a printed reason,
/// when it must skip), the lock, and a fresh lab with its users running. Bind both: the lab is
/// dropped before the lock.
pub fn start(test: &str) -> Option<(Serial, Lab)> {
    if !require_root(test) || !require_nginx(test) {
        return None;
    }
    let serial = serial();
    let lab = Lab::new(test);
    lab.start_users();
    Some((serial, lab))
}

/// The same without the users and their services, for tests that look at what listens in
/// the victim's namespace or need it otherwise idle.
pub fn start_quiet(test: &str) -> Option<(Serial, Lab)> {
    if !require_root(test) {
        return None;
    }
    let serial = serial();
    Some((serial, Lab::new(test)))
}

/// Polls `f` every 50 ms until it returns true; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Panics unless `addr` is inside the lab ranges 10.250.0.0/16 or fd00:250::/64.
/// Returns the parsed address. Use it for every destination/source a test sends to/from.
pub fn assert_lab_addr(addr: &str) -> IpAddr {
    let ip: IpAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("not an IP address: {addr:?}: {e}"));
    let ok = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 10 && o[1] == 250
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0xfd00 && s[1] == 0x0250 && s[2] == 0 && s[3] == 0
        }
    };
    assert!(
        ok,
        "address {addr} is outside the lab ranges 10.250.0.0/16 and fd00:250::/64"
    );
    ip
}

// ---------------------------------------------------------------------------
// Process helpers

fn describe(prog: &str, args: &[&str]) -> String {
    let mut s = prog.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

fn file_stem(args: &[&str]) -> String {
    let prog = args.first().copied().unwrap_or("cmd");
    let base = prog.rsplit('/').next().unwrap_or(prog);
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect()
}

fn read_lossy(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

fn kill_group(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a process group we created (negative pid = pgid).
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
    }
}

fn poll_wait(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => {
                eprintln!("lab: try_wait on pid {} failed: {e}", child.id());
                return None;
            }
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `prog args` in its own process group with output captured to files in `dir`,
/// killing the group with SIGKILL after `timeout`. Returns the output and whether it timed out.
fn run_captured(prog: &str, args: &[&str], dir: &Path, timeout: Duration) -> (Output, bool) {
    let id = next_id();
    let stem = file_stem(args);
    let out_path = dir.join(format!("run-{id}-{stem}.out"));
    let err_path = dir.join(format!("run-{id}-{stem}.err"));
    let out = std::fs::File::create(&out_path)
        .unwrap_or_else(|e| panic!("lab: create {}: {e}", out_path.display()));
    let err = std::fs::File::create(&err_path)
        .unwrap_or_else(|e| panic!("lab: create {}: {e}", err_path.display()));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("lab: cannot start `{}`: {e}", describe(prog, args)));
    let pid = child.id();
    let (status, timed_out) = match poll_wait(&mut child, timeout) {
        Some(st) => (st, false),
        None => {
            eprintln!(
                "lab: `{}` still running after {timeout:?}; killing it",
                describe(prog, args)
            );
            kill_group(pid, libc::SIGKILL);
            let st = child.wait().expect("lab: wait after SIGKILL");
            (st, true)
        }
    };
    let output = Output {
        status,
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
    };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    (output, timed_out)
}

/// Runs a short host (root namespace) command, returning its output; panics if it cannot start.
fn host(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("lab: cannot start `{}`: {e}", args.join(" ")))
}

fn host_ok(args: &[&str]) -> String {
    let out = host(args);
    if !out.status.success() {
        panic!(
            "lab: `{}` failed ({})\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names of all named network namespaces (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    let out = host(&["ip", "netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// A process started with `Netns::spawn`. Dropping it stops it (SIGTERM to its process
/// group, SIGKILL after 3 s) and reaps it. stdout/stderr go to files in the lab dir.
pub struct Proc {
    child: Child,
    status: Option<ExitStatus>,
    cmd: String,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line, for messages.
    pub fn cmd(&self) -> &str {
        &self.cmd
    }

    /// Sends `sig` (e.g. `libc::SIGHUP`) to the process. No-op once it has been reaped.
    pub fn signal(&self, sig: libc::c_int) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: kill(2) on our own, not yet reaped, child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                panic!("lab: kill({}, {sig}) for `{}`: {e}", self.pid(), self.cmd);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = poll_wait(&mut self.child, timeout);
        }
        self.status
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.wait_timeout(Duration::ZERO).is_none()
    }

    /// Stops the process: SIGTERM to its process group, SIGKILL after 3 s; returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        let pid = self.child.id();
        kill_group(pid, libc::SIGTERM);
        if let Some(st) = self.wait_timeout(KILL_GRACE) {
            return st;
        }
        eprintln!(
            "lab: `{}` ignored SIGTERM for {KILL_GRACE:?}; sending SIGKILL",
            self.cmd
        );
        kill_group(pid, libc::SIGKILL);
        let st = self.child.wait().expect("lab: wait after SIGKILL");
        self.status = Some(st);
        st
    }

    /// Captured stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&read_lossy(&self.out_path)).into_owned()
    }

    /// Captured stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&read_lossy(&self.err_path)).into_owned()
    }

    /// Waits up to `timeout` for exit, stops the process (`terminate`) if it is still
    /// running, and returns its status and captured output.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let status = match self.wait_timeout(timeout) {
            Some(st) => st,
            None => self.terminate(),
        };
        Output {
            status,
            stdout: read_lossy(&self.out_path),
            stderr: read_lossy(&self.err_path),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.terminate();
        }
    }
}

// ---------------------------------------------------------------------------
// Namespaces

/// A named network namespace owned by the lab. Dropping it kills every process inside
/// and deletes it.
pub struct Netns {
    name: String,
    dir: PathBuf,
    deleted: bool,
}

impl Netns {
    fn create(name: String, dir: &Path) -> Netns {
        host_ok(&["ip", "netns", "add", &name]);
        Netns {
            name,
            dir: dir.to_path_buf(),
            deleted: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn exec_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        assert!(!args.is_empty(), "lab: empty command");
        let mut v = vec!["netns", "exec", self.name.as_str()];
        v.extend_from_slice(args);
        v
    }

    /// Runs `ip netns exec NAME args...`, killing it after 30 s.
    pub fn run(&self, args: &[&str]) -> Output {
        run_captured("ip", &self.exec_args(args), &self.dir, RUN_TIMEOUT).0
    }

    /// Like `run`, but panics (with command, status, stdout, stderr) unless it succeeds.
    /// Returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let (out, timed_out) = run_captured("ip", &self.exec_args(args), &self.dir, RUN_TIMEOUT);
        if timed_out || !out.status.success() {
            panic!(
                "lab: in netns {}: `{}` failed ({}{})\nstdout:\n{}\nstderr:\n{}",
                self.name,
                args.join(" "),
                out.status,
                if timed_out { ", timed out" } else { "" },
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `args` inside the namespace in the background (own process group,
    /// stdin null, stdout/stderr to files in the lab dir).
    pub fn spawn(&self, args: &[&str]) -> Proc {
        let id = next_id();
        let stem = file_stem(args);
        let out_path = self.dir.join(format!("proc-{id}-{stem}.out"));
        let err_path = self.dir.join(format!("proc-{id}-{stem}.err"));
        let out = std::fs::File::create(&out_path)
            .unwrap_or_else(|e| panic!("lab: create {}: {e}", out_path.display()));
        let err = std::fs::File::create(&err_path)
            .unwrap_or_else(|e| panic!("lab: create {}: {e}", err_path.display()));
        let full = self.exec_args(args);
        let cmd = format!("[{}] {}", self.name, args.join(" "));
        let child = Command::new("ip")
            .args(&full)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("lab: cannot start `{cmd}`: {e}"));
        Proc {
            child,
            status: None,
            cmd,
            out_path,
            err_path,
        }
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv6.conf.all.accept_ra`, `0`).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.run_ok(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// PIDs of processes currently in this namespace.
    fn pids(&self) -> Vec<libc::pid_t> {
        ns_pids(&self.name)
    }

    /// Kills all processes in the namespace and deletes it. Never panics.
    fn destroy(&mut self) {
        if self.deleted {
            return;
        }
        self.deleted = true;
        destroy_ns(&self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.destroy();
    }
}

fn ns_pids(name: &str) -> Vec<libc::pid_t> {
    match Command::new("ip")
        .args(["netns", "pids", name])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Kills every process in namespace `name` (SIGTERM, SIGKILL after 3 s), then deletes it.
/// Errors are printed, never raised (this runs from Drop, possibly while unwinding).
fn destroy_ns(name: &str) {
    let start = Instant::now();
    let mut killed = false;
    loop {
        let pids = ns_pids(name);
        if pids.is_empty() {
            break;
        }
        let sig = if start.elapsed() < KILL_GRACE {
            libc::SIGTERM
        } else {
            killed = true;
            libc::SIGKILL
        };
        for pid in &pids {
            // SAFETY: kill(2); pids are processes inside our own lab namespace.
            unsafe {
                libc::kill(*pid, sig);
            }
        }
        if killed && start.elapsed() > KILL_GRACE + Duration::from_secs(2) {
            eprintln!("lab: processes {pids:?} in netns {name} survive SIGKILL; deleting anyway");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match Command::new("ip")
        .args(["netns", "del", name])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "lab: `ip netns del {name}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("lab: cannot run `ip netns del {name}`: {e}"),
    }
}

/// Deletes lab namespaces and temp dirs left behind by earlier test processes that no
/// longer exist (e.g. killed with SIGKILL). Only touches names `fta-v-PID-N` /
/// `fta-a-PID-N` and `$TMPDIR/ftagent-lab-TAG-PID-N`.
fn sweep_stale() {
    for name in netns_list() {
        let rest = match name
            .strip_prefix(NS_PREFIX_V)
            .or_else(|| name.strip_prefix(NS_PREFIX_A))
            .or_else(|| name.strip_prefix(NS_PREFIX_U))
        {
            Some(r) => r,
            None => continue,
        };
        let mut parts = rest.splitn(2, '-');
        let pid: u32 = match parts.next().and_then(|p| p.parse().ok()) {
            Some(p) => p,
            None => continue,
        };
        if parts.next().and_then(|n| n.parse::<u64>().ok()).is_none() {
            continue;
        }
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("lab: removing stale namespace {name} (process {pid} is gone)");
            destroy_ns(&name);
        }
    }
    // Temp dirs `ftagent-lab-{tag}-{pid}-{n}` of test processes that no longer exist.
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if !name.starts_with(DIR_PREFIX) {
                continue;
            }
            let mut parts = name.rsplitn(3, '-');
            let n_ok = parts.next().is_some_and(|n| n.parse::<u64>().is_ok());
            let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
            if let (true, Some(pid)) = (n_ok, pid) {
                if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Lab

/// Temp dir removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != ErrorKind::NotFound {
                eprintln!("lab: remove {}: {e}", self.0.display());
            }
        }
    }
}

/// Victim and attacker namespaces joined by a veth pair (`VICTIM_IF` <-> `ATTACKER_IF`),
/// and the users' namespace joined to the victim by another (`VICTIM_USERS_IF` <->
/// `USERS_IF`). Dropping the lab writes its record (what the victim received per 100 ms,
/// what share of the users was served during the flood), kills everything running in the
/// namespaces, deletes them and removes the temp dir (fields drop in declaration order).
pub struct Lab {
    test: String,
    users: Mutex<Option<users::Users>>,
    recorder: Mutex<record::Recorder>,
    pub victim: Netns,
    pub attacker: Netns,
    pub people: Netns,
    dir: TempDir,
}

impl Lab {
    /// Builds a fresh lab. `tag` only labels the temp dir (for debugging).
    pub fn new(tag: &str) -> Lab {
        sweep_stale();
        let pid = std::process::id();
        let n = next_id();
        let safe_tag: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let dir_path = std::env::temp_dir().join(format!("{DIR_PREFIX}{safe_tag}-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&dir_path);
        std::fs::create_dir_all(&dir_path)
            .unwrap_or_else(|e| panic!("lab: create {}: {e}", dir_path.display()));
        let dir = TempDir(dir_path);

        // Guards are created one by one so a failure part-way cleans up what exists.
        let victim = Netns::create(format!("{NS_PREFIX_V}{pid}-{n}"), &dir.0);
        let attacker = Netns::create(format!("{NS_PREFIX_A}{pid}-{n}"), &dir.0);
        let people = Netns::create(format!("{NS_PREFIX_U}{pid}-{n}"), &dir.0);
        setup(&victim, &attacker, &people);
        let recorder = record::Recorder::start(victim.name(), VICTIM_IF);
        Lab {
            test: tag.to_string(),
            users: Mutex::new(None),
            recorder: Mutex::new(recorder),
            victim,
            attacker,
            people,
            dir,
        }
    }

    /// Starts the users' services on the victim and their clients; returns once they are
    /// served.
    pub fn start_users(&self) {
        let mut users = self.users.lock().unwrap();
        assert!(users.is_none(), "lab: users started twice");
        *users = Some(users::Users::start(&self.victim, &self.people, self.dir()));
    }

    /// The flood as the victim's interface received it so far (None: no 100 ms bin reached
    /// `record::FLOOD_BIN` packets).
    pub fn flood_shape(&self) -> Option<record::Shape> {
        record::shape(&self.recorder.lock().unwrap().bins())
    }

    /// The packets the victim's interface received in each 100 ms so far.
    pub fn received_per_100ms(&self) -> Vec<u64> {
        self.recorder
            .lock()
            .unwrap()
            .bins()
            .iter()
            .map(|b| b.packets)
            .collect()
    }

    /// The share of the users' requests served during the seconds that held flood bins,
    /// once the clients have reported them; prints the flood's shape and the share. Panics
    /// when there was no flood or no users.
    pub fn users_served(&self) -> f64 {
        let shape = self
            .flood_shape()
            .unwrap_or_else(|| panic!("lab: {}: no flood reached the victim", self.test));
        let served = self.served_in(&shape.seconds);
        eprintln!("{}", record::summary(&self.test, &Some(shape), &served));
        record::share(&served)
    }

    /// The users' results per kind (`http4`, `dns6`…: succeeded, started) during the seconds
    /// that held flood bins, once the clients have reported them; prints the flood's shape.
    pub fn users_served_by_kind(&self) -> std::collections::BTreeMap<String, (u64, u64)> {
        let shape = self
            .flood_shape()
            .unwrap_or_else(|| panic!("lab: {}: no flood reached the victim", self.test));
        let served = self.served_in(&shape.seconds);
        eprintln!("{}", record::summary(&self.test, &Some(shape), &served));
        served
    }

    /// Asserts that at least `min` (e.g. 0.95) of the users' requests were served during
    /// the flood.
    pub fn assert_users_served(&self, min: f64) {
        self.assert_share(self.users_served(), min, "during the flood");
    }

    /// Asserts that at least `min` of the users' requests started from `from` to `to` were
    /// served: for attacks that are no flood of packets (held connections).
    pub fn assert_users_served_between(
        &self,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
        min: f64,
    ) {
        let secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        };
        let seconds: Vec<u64> = (secs(from)..=secs(to)).collect();
        let served = self.served_in(&seconds);
        let share = record::share(&served);
        eprintln!(
            "{}: users served {:.1} % from {} to {} ({served:?})",
            self.test,
            share * 100.0,
            secs(from),
            secs(to)
        );
        self.assert_share(share, min, "from the attack's start to its check");
    }

    /// The users' results per kind for the requests started from `from` to `to` (whole
    /// seconds), once the clients have reported them.
    pub fn users_served_between(
        &self,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
    ) -> std::collections::BTreeMap<String, (u64, u64)> {
        let seconds: Vec<u64> = (unix_secs(from)..=unix_secs(to)).collect();
        self.served_in(&seconds)
    }

    /// Asserts that at least `min` of the users' HTTP requests (both families) started from
    /// `from` to `to` were served: the clients of :80 alone, whom a measure on that port
    /// could hit, apart from the DNS queries that outnumber them.
    pub fn assert_web_users_served_between(
        &self,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
        min: f64,
    ) {
        let mut served = self.users_served_between(from, to);
        served.retain(|kind, _| kind.starts_with("http"));
        let share = record::share(&served);
        eprintln!(
            "{}: web users served {:.1} % from {} to {} ({served:?})",
            self.test,
            share * 100.0,
            unix_secs(from),
            unix_secs(to)
        );
        self.assert_share(
            share,
            min,
            "by the web server from the attack's start to its check",
        );
    }

    /// The users' results in `seconds` (unix), once the clients have reported the last.
    fn served_in(&self, seconds: &[u64]) -> std::collections::BTreeMap<String, (u64, u64)> {
        let guard = self.users.lock().unwrap();
        let users = guard.as_ref().expect("lab: no users in this lab");
        let last = seconds.last().copied().unwrap_or(0);
        users.wait_reported(std::time::UNIX_EPOCH + Duration::from_secs(last + 1));
        record::served(&users.seconds(), seconds)
    }

    fn assert_share(&self, share: f64, min: f64, when: &str) {
        assert!(
            share >= min,
            "lab: {}: {:.1} % of the users' requests were served {when}, at least {:.0} % \
             expected",
            self.test,
            share * 100.0,
            min * 100.0
        );
    }

    /// Writes this lab's record (`record::append`): the flood's summary and its per-100 ms
    /// counts. Never panics.
    fn write_record(&self) {
        let mut recorder = self.recorder.lock().unwrap_or_else(|p| p.into_inner());
        recorder.stop();
        let bins = recorder.bins();
        let shape = record::shape(&bins);
        let guard = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let served = match (guard.as_ref(), &shape) {
            (Some(users), Some(s)) => {
                let last = s.seconds.last().copied().unwrap_or(0);
                users.wait_reported(std::time::UNIX_EPOCH + Duration::from_secs(last + 1));
                record::served(&users.seconds(), &s.seconds)
            }
            _ => Default::default(),
        };
        let summary = if guard.is_none() && shape.is_some() {
            record::summary(&self.test, &shape, &served) + " (no users in this lab)"
        } else {
            record::summary(&self.test, &shape, &served)
        };
        let series = record::series(&bins, &shape);
        if series.is_empty() {
            record::append(&summary);
        } else {
            record::append(&format!("{summary}\n{series}"));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.write_record();
    }
}

/// Links the namespaces: the victim and the attacker on one veth, the victim and the users
/// on another, addresses, routes and permanent neighbour entries both ways.
fn setup(v: &Netns, a: &Netns, u: &Netns) {
    // The veth pair is created directly inside the namespaces; it never exists in the
    // root namespace.
    host_ok(&[
        "ip",
        "link",
        "add",
        "name",
        VICTIM_IF,
        "netns",
        v.name(),
        "address",
        VICTIM_MAC,
        "type",
        "veth",
        "peer",
        "name",
        ATTACKER_IF,
        "netns",
        a.name(),
        "address",
        ATTACKER_MAC,
    ]);
    for (ns, ifname) in [(v, VICTIM_IF), (a, ATTACKER_IF)] {
        for key in ["all", "default", ifname] {
            ns.sysctl(&format!("net.ipv6.conf.{key}.accept_ra"), "0");
            ns.sysctl(&format!("net.ipv6.conf.{key}.router_solicitations"), "0");
            ns.sysctl(&format!("net.ipv6.conf.{key}.accept_dad"), "0");
        }
        ns.run_ok(&["ip", "link", "set", "lo", "up"]);
    }
    v.run_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{VICTIM4}/24"),
        "dev",
        VICTIM_IF,
    ]);
    v.run_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{VICTIM6}/64"),
        "dev",
        VICTIM_IF,
        "nodad",
    ]);
    for addr in [ATTACKER4, OTHER4] {
        a.run_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            ATTACKER_IF,
        ]);
    }
    a.run_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{FAR4}/24"),
        "dev",
        ATTACKER_IF,
    ]);
    for addr in [ATTACKER6, OTHER6] {
        a.run_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{addr}/64"),
            "dev",
            ATTACKER_IF,
            "nodad",
        ]);
    }
    // Permanent neighbour entries both ways: a banned source must not also break
    // ARP/ND and so hide what is being tested.
    permanent_neighbours(v, &COUNTED, ATTACKER_MAC, VICTIM_IF);
    permanent_neighbours(a, &[VICTIM4, VICTIM6], VICTIM_MAC, ATTACKER_IF);
    v.run_ok(&["ip", "link", "set", VICTIM_IF, "up"]);
    a.run_ok(&["ip", "link", "set", ATTACKER_IF, "up"]);
    // The victim reaches FAR4's /24 over the veth too, so no reverse-path check drops it.
    v.run_ok(&["ip", "route", "add", "10.250.1.0/24", "dev", VICTIM_IF]);
    // The attacker does what SYN flooders do: its kernel never answers the victim's SYN-ACKs
    // to the paced TCP floods' source ports (`pacer::FLOOD_PORTS`, above the ephemeral range)
    // with resets, which would be a second flood of their own. Its real connections (ephemeral
    // ports) are untouched.
    let (lo, hi) = pacer::FLOOD_PORTS;
    a.run_ok(&["nft", "add table inet lab_attacker"]);
    a.run_ok(&[
        "nft",
        "add chain inet lab_attacker input { type filter hook input priority 0; }",
    ]);
    a.run_ok(&[
        "nft",
        &format!(
            "add rule inet lab_attacker input tcp dport {lo}-{hi} tcp flags & (syn | ack) == syn | ack drop"
        ),
    ]);
    setup_users(v, u);
}

/// Permanent neighbour entries in `ns` for `addrs`, all at `mac` on `dev`.
fn permanent_neighbours(ns: &Netns, addrs: &[&str], mac: &str, dev: &str) {
    for addr in addrs {
        ns.run_ok(&[
            "ip",
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }
}

/// The users' veth: their addresses on their end, a route each way (the users' /24 and /120
/// through `VICTIM_USERS_IF`, the victim's two addresses through `USERS_IF`), permanent
/// neighbour entries.
fn setup_users(v: &Netns, u: &Netns) {
    host_ok(&[
        "ip",
        "link",
        "add",
        "name",
        VICTIM_USERS_IF,
        "netns",
        v.name(),
        "address",
        VICTIM_USERS_MAC,
        "type",
        "veth",
        "peer",
        "name",
        USERS_IF,
        "netns",
        u.name(),
        "address",
        USERS_MAC,
    ]);
    for key in ["all", "default", USERS_IF] {
        u.sysctl(&format!("net.ipv6.conf.{key}.accept_ra"), "0");
        u.sysctl(&format!("net.ipv6.conf.{key}.router_solicitations"), "0");
        u.sysctl(&format!("net.ipv6.conf.{key}.accept_dad"), "0");
    }
    v.sysctl(&format!("net.ipv6.conf.{VICTIM_USERS_IF}.accept_dad"), "0");
    v.sysctl(&format!("net.ipv6.conf.{VICTIM_USERS_IF}.accept_ra"), "0");
    u.run_ok(&["ip", "link", "set", "lo", "up"]);
    for addr in USERS4 {
        u.run_ok(&["ip", "addr", "add", &format!("{addr}/32"), "dev", USERS_IF]);
    }
    for addr in USERS6 {
        u.run_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{addr}/128"),
            "dev",
            USERS_IF,
            "nodad",
        ]);
    }
    v.run_ok(&["ip", "link", "set", VICTIM_USERS_IF, "up"]);
    u.run_ok(&["ip", "link", "set", USERS_IF, "up"]);
    v.run_ok(&[
        "ip",
        "route",
        "add",
        users::USERS4_NET,
        "dev",
        VICTIM_USERS_IF,
    ]);
    v.run_ok(&[
        "ip",
        "-6",
        "route",
        "add",
        users::USERS6_NET,
        "dev",
        VICTIM_USERS_IF,
    ]);
    u.run_ok(&["ip", "route", "add", VICTIM4, "dev", USERS_IF]);
    u.run_ok(&["ip", "-6", "route", "add", VICTIM6, "dev", USERS_IF]);
    let users: Vec<&str> = USERS4.iter().chain(USERS6.iter()).copied().collect();
    permanent_neighbours(v, &users, USERS_MAC, VICTIM_USERS_IF);
    permanent_neighbours(u, &[VICTIM4, VICTIM6], VICTIM_USERS_MAC, USERS_IF);
}

impl Lab {
    /// The lab's temp dir (removed when the lab is dropped).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Installs `table inet lab` in the victim namespace: an `input` hook chain at
    /// priority 0 (policy accept) with one counter rule per lab source address. It counts
    /// what reaches the victim's stack, i.e. after any prerouting drop.
    pub fn count_arrivals(&self) {
        let mut rules = String::new();
        for src in COUNTED {
            let fam = if src.contains(':') { "ip6" } else { "ip" };
            rules.push_str(&format!(
                "        {fam} saddr {src} counter comment \"src {src}\"\n"
            ));
        }
        let script = format!(
            "table inet lab {{\n    chain input {{\n        type filter hook input priority 0; policy accept;\n{rules}    }}\n}}\n"
        );
        let path = self.dir().join(format!("lab-count-{}.nft", next_id()));
        std::fs::write(&path, script)
            .unwrap_or_else(|e| panic!("lab: write {}: {e}", path.display()));
        self.victim
            .run_ok(&["nft", "-f", path.to_str().expect("utf-8 temp path")]);
    }

    /// Packets from `src` counted by `count_arrivals` so far. `src` must be one of
    /// ATTACKER4, OTHER4, FAR4, ATTACKER6, OTHER6.
    pub fn arrivals(&self, src: &str) -> u64 {
        let ip = assert_lab_addr(src);
        let src = ip.to_string();
        assert!(
            COUNTED.contains(&src.as_str()),
            "lab: no arrival counter for {src}; counted sources are {COUNTED:?}"
        );
        let want = format!("src {src}");
        let json = self
            .victim
            .run_ok(&["nft", "-j", "list", "table", "inet", "lab"]);
        let v: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("lab: bad JSON from nft: {e}\n{json}"));
        let items = v["nftables"]
            .as_array()
            .unwrap_or_else(|| panic!("lab: no `nftables` array in:\n{json}"));
        let mut found = None;
        for item in items {
            let rule = &item["rule"];
            if rule.is_null() || rule["comment"].as_str() != Some(want.as_str()) {
                continue;
            }
            let exprs = rule["expr"]
                .as_array()
                .unwrap_or_else(|| panic!("lab: rule without expr:\n{rule}"));
            let packets = exprs
                .iter()
                .find_map(|e| e["counter"]["packets"].as_u64())
                .unwrap_or_else(|| panic!("lab: rule without counter:\n{rule}"));
            assert!(found.is_none(), "lab: two counter rules for {src}:\n{json}");
            found = Some(packets);
        }
        found.unwrap_or_else(|| {
            panic!(
                "lab: no counter for {src} in table inet lab (call count_arrivals first):\n{json}"
            )
        })
    }

    /// Sends `count` ICMP echo requests from the attacker namespace with source `from` to
    /// `to` (`ping -c COUNT -i 0.01 -W 1 -I FROM TO`, v4 or v6). Missing replies are fine.
    /// Bounded: `count <= MAX_PING_COUNT`, and the run is killed after 30 s.
    pub fn ping(&self, from: &str, to: &str, count: u32) {
        let f = assert_lab_addr(from);
        let t = assert_lab_addr(to);
        assert_eq!(
            f.is_ipv4(),
            t.is_ipv4(),
            "lab: ping {from} -> {to} mixes families"
        );
        assert!(
            (1..=MAX_PING_COUNT).contains(&count),
            "lab: ping count {count} outside 1..={MAX_PING_COUNT}"
        );
        let count = count.to_string();
        let out = self.attacker.run(&[
            "ping", "-n", "-q", "-c", &count, "-i", "0.01", "-W", "1", "-I", from, to,
        ]);
        // ping exits 1 when replies are missing (expected when traffic is dropped);
        // 2 or a signal means it did not run as asked.
        if out.status.code() != Some(0) && out.status.code() != Some(1) {
            panic!(
                "lab: ping -I {from} {to} failed ({}); is iputils-ping installed?\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Whole seconds since the epoch.
fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

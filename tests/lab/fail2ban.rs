//! The real Fail2Ban (Debian 12's fail2ban 1.0.2) inside a lab namespace, for the coexistence
//! tests of issue 6: a private copy of /etc/fail2ban, one sshd jail fed by a log file the test
//! writes, a real stop and start, and the firewall listings to compare before and after.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{assert_lab_addr, next_id, skip_or_panic, tool_works, wait_until, Netns, Proc};

/// The one jail: filter `sshd`, port 22/tcp, banned after `MAX_RETRY` failures.
pub const JAIL: &str = "ftest";
/// Failed logins within `findtime` (10 minutes) that get a source banned.
pub const MAX_RETRY: u32 = 2;
/// The chain the iptables actions create (`f2b-<jail>`).
pub const IPTABLES_CHAIN: &str = "f2b-ftest";
/// The table of the nftables action.
pub const NFT_TABLE: &str = "f2b-table";

/// Where the host's Fail2Ban configuration is copied from (only read, never written).
const HOST_CONFIG: &str = "/etc/fail2ban";
/// Upper bound for the server to answer on its socket, and to shut down.
const SERVER_TIMEOUT: Duration = Duration::from_secs(20);
/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// How Fail2Ban's ban action reaches the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F2bAction {
    /// `iptables-multiport` run with `iptables-legacy` / `ip6tables-legacy`.
    IptablesMultiportLegacy,
    /// `iptables-multiport` run with `iptables-nft` / `ip6tables-nft`.
    IptablesMultiportNft,
    /// `nftables-multiport`: sets in `table inet f2b-table`.
    Nftables,
}

impl F2bAction {
    pub const ALL: [F2bAction; 3] = [
        F2bAction::IptablesMultiportLegacy,
        F2bAction::IptablesMultiportNft,
        F2bAction::Nftables,
    ];

    /// The `banaction` of the jail.
    fn banaction(self) -> &'static str {
        match self {
            F2bAction::IptablesMultiportLegacy | F2bAction::IptablesMultiportNft => {
                "iptables-multiport"
            }
            F2bAction::Nftables => "nftables-multiport",
        }
    }

    /// For the iptables actions: whether they drive the legacy (true) or nft (false) backend.
    pub fn legacy(self) -> Option<bool> {
        match self {
            F2bAction::IptablesMultiportLegacy => Some(true),
            F2bAction::IptablesMultiportNft => Some(false),
            F2bAction::Nftables => None,
        }
    }

    /// The programs this action runs, for the skip check.
    fn tools(self) -> &'static [(&'static str, &'static str)] {
        match self {
            F2bAction::IptablesMultiportLegacy => {
                &[("iptables-legacy", "-V"), ("ip6tables-legacy", "-V")]
            }
            F2bAction::IptablesMultiportNft => &[("iptables-nft", "-V"), ("ip6tables-nft", "-V")],
            F2bAction::Nftables => &[("nft", "-v")],
        }
    }
}

/// True when Fail2Ban and the tools of `action` are installed. Otherwise prints
/// `skipped {test}: ...` and returns false, or panics when env `CI` is set.
pub fn require(test: &str, action: F2bAction) -> bool {
    if !tool_works("fail2ban-server", "-V") || !tool_works("fail2ban-client", "-V") {
        return skip_or_panic(test, "needs Fail2Ban (Debian package fail2ban)");
    }
    for (tool, arg) in action.tools() {
        if !tool_works(tool, arg) {
            return skip_or_panic(test, &format!("needs `{tool}` for {action:?}"));
        }
    }
    true
}

/// A `fail2ban-server -f` running in a lab namespace with its own configuration, socket,
/// pid file, database and log in a directory of the test. Dropping it stops the server (its
/// process guard); the namespace's teardown kills whatever is left.
pub struct Fail2Ban<'a> {
    ns: &'a Netns,
    action: F2bAction,
    dir: PathBuf,
    server: Option<Proc>,
    /// The next sshd process id written to the log: one per failed login.
    next_sshd_pid: AtomicU32,
}

impl<'a> Fail2Ban<'a> {
    /// Writes a private configuration under `dir` (a fresh `f2b-N` subdirectory), starts
    /// `fail2ban-server -f` inside `ns` and returns once jail `ftest` answers on the socket.
    /// No firewall rule exists yet: Fail2Ban creates its chains at the first ban.
    pub fn start(ns: &'a Netns, dir: &Path, action: F2bAction) -> Fail2Ban<'a> {
        let dir = dir.join(format!("f2b-{}", next_id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("f2b: create {}: {e}", dir.display()));
        let mut f2b = Fail2Ban {
            ns,
            action,
            dir,
            server: None,
            next_sshd_pid: AtomicU32::new(10_000),
        };
        let socket = f2b.path("fail2ban.sock");
        assert!(
            socket.len() <= MAX_SOCKET_PATH,
            "f2b: socket path {socket} is longer than {MAX_SOCKET_PATH} bytes"
        );
        f2b.write_config();
        std::fs::File::create(f2b.dir.join("auth.log"))
            .unwrap_or_else(|e| panic!("f2b: create auth.log in {}: {e}", f2b.dir.display()));
        f2b.spawn_server();
        f2b
    }

    pub fn action(&self) -> F2bAction {
        self.action
    }

    /// The private directory: `config/`, `auth.log`, `fail2ban.{sock,pid,sqlite3,log}`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fail2Ban's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("fail2ban.log")).unwrap_or_default()
    }

    /// Appends `n` sshd "Failed password for root from ADDR port P ssh2" lines, time-stamped
    /// now (RFC 3339 as Debian's rsyslog writes them), each from its own sshd process id:
    /// Fail2Ban's sshd filter groups lines by `sshd[PID]`, so lines sharing one are taken as
    /// one session and all charged to the first address seen in it.
    pub fn fail_logins(&self, addr: &str, n: u32) {
        let ip = assert_lab_addr(addr);
        let mut lines = String::new();
        for _ in 0..n {
            let pid = self.next_sshd_pid.fetch_add(1, Ordering::Relaxed);
            let port = 40_000 + pid % 20_000;
            lines.push_str(&format!(
                "{} victim sshd[{pid}]: Failed password for root from {ip} port {port} ssh2\n",
                rfc3339_utc(SystemTime::now())
            ));
        }
        let path = self.dir.join("auth.log");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("f2b: open {}: {e}", path.display()));
        file.write_all(lines.as_bytes())
            .unwrap_or_else(|e| panic!("f2b: append to {}: {e}", path.display()));
    }

    /// Sources jail `ftest` holds banned (`fail2ban-client get ftest banned`).
    pub fn banned(&self) -> Vec<String> {
        let out = self.client_ok(&["get", JAIL, "banned"]);
        parse_python_list(&out)
    }

    /// Waits up to `timeout` until Fail2Ban lists `addr` as banned AND its action has put it
    /// in the kernel (the rule in `f2b-ftest`, or the element in the nft set). Fail2Ban lists
    /// a ban before its action has run, so the list alone is not enough.
    pub fn wait_banned(&self, addr: &str, timeout: Duration) -> bool {
        let ip = assert_lab_addr(addr);
        let start = Instant::now();
        loop {
            if self.banned().contains(&ip.to_string()) && self.kernel_bans(ip) {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the kernel holds the ban of `ip` the way this action writes it.
    pub fn kernel_bans(&self, ip: IpAddr) -> bool {
        match self.action.legacy() {
            Some(legacy) => {
                let rule = format!(
                    "-A {IPTABLES_CHAIN} -s {ip}/{} -j REJECT",
                    if ip.is_ipv4() { 32 } else { 128 }
                );
                iptables_save(self.ns, legacy, ip.is_ipv6())
                    .lines()
                    .any(|l| l.starts_with(&rule))
            }
            None => nft_set_elements(self.ns, ip.is_ipv6()).contains(&ip.to_string()),
        }
    }

    /// A real restart: `fail2ban-client stop` (the server removes its chains and exits), then
    /// a new server on the same configuration and database. Returns once the jail answers;
    /// the bans come back from the database moments later (use `wait_banned`).
    pub fn restart(&mut self) {
        self.shut_down();
        self.spawn_server();
    }

    /// `fail2ban-client stop`: the server removes its chains (and the nft table, once empty)
    /// and exits; panics unless it exits cleanly within 20 s.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let server = self.server.take().expect("f2b: server not running");
        self.client_ok(&["stop"]);
        let out = server.finish(SERVER_TIMEOUT);
        assert!(
            out.status.success(),
            "f2b: fail2ban-server exited with {} after `stop`\nstderr:\n{}\nlog:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn spawn_server(&mut self) {
        let (config, socket, pid) = (
            self.path("config"),
            self.path("fail2ban.sock"),
            self.path("fail2ban.pid"),
        );
        let mut server = self.ns.spawn(&[
            "fail2ban-server",
            "-f",
            "-x",
            "-c",
            &config,
            "-s",
            &socket,
            "-p",
            &pid,
        ]);
        let start = Instant::now();
        loop {
            if self.client(&["status", JAIL]).status.success() {
                break;
            }
            if !server.running() || start.elapsed() >= SERVER_TIMEOUT {
                let out = server.finish(Duration::ZERO);
                panic!(
                    "f2b: fail2ban-server did not come up ({}, after {:?})\nstdout:\n{}\nstderr:\n{}\nlog:\n{}",
                    out.status,
                    start.elapsed(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.server = Some(server);
    }

    /// `fail2ban-client -c CONFIG -s SOCKET args...` inside the namespace.
    fn client(&self, args: &[&str]) -> Output {
        let (config, socket) = (self.path("config"), self.path("fail2ban.sock"));
        let mut full = vec!["fail2ban-client", "-c", &config, "-s", &socket];
        full.extend_from_slice(args);
        self.ns.run(&full)
    }

    fn client_ok(&self, args: &[&str]) -> String {
        let out = self.client(args);
        assert!(
            out.status.success(),
            "f2b: `fail2ban-client {}` failed ({})\nstdout:\n{}\nstderr:\n{}\nlog:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .join(name)
            .to_str()
            .expect("f2b: temp path is not UTF-8")
            .to_string()
    }

    /// `config/`: the host's `*.conf` files (not jail.d/ nor fail2ban.d/, whose Debian
    /// defaults enable an sshd jail on the host's auth log, nor any host `*.local`), plus
    /// `fail2ban.local` (private socket, pid file, database, log), `jail.local` (jail
    /// `ftest`) and, for the iptables actions, `action.d/iptables.local` naming the backend.
    fn write_config(&self) {
        let config = self.dir.join("config");
        copy_conf_files(Path::new(HOST_CONFIG), &config);
        let write = |name: &str, text: String| {
            let path = config.join(name);
            std::fs::write(&path, text)
                .unwrap_or_else(|e| panic!("f2b: write {}: {e}", path.display()));
        };
        write(
            "fail2ban.local",
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {}\nsocket = {}\npidfile = {}\ndbfile = {}\nallowipv6 = auto\n",
                self.path("fail2ban.log"),
                self.path("fail2ban.sock"),
                self.path("fail2ban.pid"),
                self.path("fail2ban.sqlite3"),
            ),
        );
        write(
            "jail.local",
            format!(
                "[{JAIL}]\nenabled = true\nfilter = sshd\nbackend = polling\nlogpath = {}\nport = 22\nmaxretry = {MAX_RETRY}\nfindtime = 10m\nbantime = 1h\nignoreip =\nbanaction = {}\n",
                self.path("auth.log"),
                self.action.banaction(),
            ),
        );
        if let Some(legacy) = self.action.legacy() {
            let backend = if legacy { "legacy" } else { "nft" };
            // The family-conditional `iptables?family=inet6` of iptables.conf cannot be set from
            // the jail line, hence a .local for both families.
            write(
                "action.d/iptables.local",
                format!(
                    "[Init]\niptables = iptables-{backend} <lockingopt>\n\n[Init?family=inet6]\niptables = ip6tables-{backend} <lockingopt>\n"
                ),
            );
        }
    }
}

/// Copies every `*.conf` under `from` to `to`, keeping the layout, except jail.d/ and
/// fail2ban.d/.
fn copy_conf_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("f2b: create {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("f2b: read {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("f2b: read {}: {e}", from.display()));
        let (src, name) = (entry.path(), entry.file_name());
        let file_type = entry
            .file_type()
            .unwrap_or_else(|e| panic!("f2b: stat {}: {e}", src.display()));
        if file_type.is_dir() {
            if name != "jail.d" && name != "fail2ban.d" {
                copy_conf_files(&src, &to.join(&name));
            }
        } else if src.extension().is_some_and(|x| x == "conf") {
            std::fs::copy(&src, to.join(&name))
                .unwrap_or_else(|e| panic!("f2b: copy {}: {e}", src.display()));
        }
    }
}

/// `['10.250.0.1', 'fd00:250::1']` (a Python list repr) as strings.
fn parse_python_list(text: &str) -> Vec<String> {
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or_else(|| panic!("f2b: not a list: {text:?}"));
    inner
        .split(',')
        .map(|s| s.trim().trim_matches('\'').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`.
fn rfc3339_utc(t: SystemTime) -> String {
    let since = t
        .duration_since(UNIX_EPOCH)
        .expect("f2b: clock before 1970");
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

// ---------------------------------------------------------------------------
// Firewall listings inside the namespace

/// `iptables-legacy-save` / `iptables-nft-save` (`ip6tables-…` with `v6`) inside `ns`.
pub fn iptables_save(ns: &Netns, legacy: bool, v6: bool) -> String {
    let prog = format!(
        "{}-{}-save",
        if v6 { "ip6tables" } else { "iptables" },
        if legacy { "legacy" } else { "nft" }
    );
    ns.run_ok(&[&prog])
}

/// `iptables -L -n` of one backend and family (`iptables-legacy -w -L -n`, ...) inside `ns`.
pub fn iptables_list(ns: &Netns, legacy: bool, v6: bool) -> String {
    let prog = format!(
        "{}-{}",
        if v6 { "ip6tables" } else { "iptables" },
        if legacy { "legacy" } else { "nft" }
    );
    ns.run_ok(&[&prog, "-w", "-L", "-n"])
}

/// `nft list table inet f2b-table` inside `ns`; empty when the table does not exist.
pub fn nft_list_f2b(ns: &Netns) -> String {
    let out = ns.run(&["nft", "list", "table", "inet", NFT_TABLE]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else if stderr.contains("No such file or directory") {
        String::new()
    } else {
        panic!(
            "f2b: `nft list table inet {NFT_TABLE}` failed ({}):\n{stderr}",
            out.status
        )
    }
}

/// Elements of the nftables action's set for jail `ftest` (`addr-set-ftest`, or
/// `addr6-set-ftest` with `v6`); empty when the table or set does not exist.
fn nft_set_elements(ns: &Netns, v6: bool) -> Vec<String> {
    let set = if v6 {
        "addr6-set-ftest"
    } else {
        "addr-set-ftest"
    };
    let out = ns.run(&["nft", "-j", "list", "set", "inet", NFT_TABLE, set]);
    if !out.status.success() {
        return Vec::new();
    }
    let json = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("f2b: bad JSON from nft: {e}\n{json}"));
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["set"]["elem"].as_array())
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect()
}

/// A listing without its volatile parts, for byte-for-byte comparison: drops comment lines
/// (iptables-save's `# Generated by ... on DATE` / `# Completed on DATE` header and footer),
/// packet/byte counters `[n:m]` (iptables-save) and `packets N bytes M` after `counter`
/// (nft). Everything else is kept, in order.
pub fn normalise(listing: &str) -> String {
    let mut out = String::new();
    for line in listing.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let body = line.trim_start();
        out.push_str(&line[..line.len() - body.len()]);
        let mut tokens = body.split(' ').peekable();
        let mut first = true;
        while let Some(token) = tokens.next() {
            if is_iptables_counter(token) {
                continue;
            }
            if token == "packets" && tokens.peek().is_some_and(|n| is_number(n)) {
                // `packets N bytes M`: skip N, `bytes` and M.
                tokens.nth(2);
                continue;
            }
            if !first {
                out.push(' ');
            }
            out.push_str(token);
            first = false;
        }
        out.push('\n');
    }
    out
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `[123:4567]`
fn is_iptables_counter(token: &str) -> bool {
    token
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.split_once(':'))
        .is_some_and(|(p, b)| is_number(p) && is_number(b))
}

// ---------------------------------------------------------------------------
// The guarded service

/// A dual-stack TCP listener on `[::]:22` inside `ns` that accepts and closes every
/// connection: the sshd the jail guards. Returns once it listens; the guard stops it.
pub fn ssh_listener(ns: &Netns) -> Proc {
    let script = "import socket\nl = socket.socket(socket.AF_INET6)\nl.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\nl.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\nl.bind(('::', 22))\nl.listen(64)\nprint('listening', flush=True)\nwhile True:\n    l.accept()[0].close()\n";
    let mut p = ns.spawn(&["python3", "-c", script]);
    wait_until(Duration::from_secs(10), "the port-22 listener", || {
        assert!(p.running(), "f2b: port-22 listener exited: {}", p.stderr());
        p.stdout().contains("listening")
    });
    p
}

/// From `ns`, bound to `from` (an address of `ns`), whether a TCP connection to `to`:22 is
/// accepted within `timeout` (at most 10 s). Refused, reset or silent is `false`.
pub fn ssh_connects(ns: &Netns, from: &str, to: &str, timeout: Duration) -> bool {
    let (f, t) = (assert_lab_addr(from), assert_lab_addr(to));
    assert_eq!(
        f.is_ipv4(),
        t.is_ipv4(),
        "f2b: connect {from} -> {to} mixes families"
    );
    assert!(
        !timeout.is_zero() && timeout <= Duration::from_secs(10),
        "f2b: connect timeout {timeout:?} outside (0, 10 s]"
    );
    let script = "import socket, sys\nfam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\ns = socket.socket(fam)\ns.settimeout(float(sys.argv[3]))\ns.bind((sys.argv[1], 0))\ntry:\n    s.connect((sys.argv[2], 22))\nexcept OSError:\n    sys.exit(3)\n";
    let secs = format!("{:.3}", timeout.as_secs_f64());
    let out = ns.run(&["python3", "-c", script, from, to, &secs]);
    match out.status.code() {
        Some(0) => true,
        Some(3) => false,
        _ => panic!(
            "f2b: connect {from} -> {to}:22 did not run ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

// ---------------------------------------------------------------------------
// Pure helpers

#[test]
fn f2b_timestamps_are_rfc3339_utc() {
    assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000000+00:00");
    let t = UNIX_EPOCH + Duration::new(1_709_251_199, 123_456_000);
    assert_eq!(rfc3339_utc(t), "2024-02-29T23:59:59.123456+00:00");
    let t = UNIX_EPOCH + Duration::from_secs(1_798_761_600);
    assert_eq!(rfc3339_utc(t), "2027-01-01T00:00:00.000000+00:00");
}

#[test]
fn f2b_normalise_drops_only_volatile_parts() {
    let save = "# Generated by iptables-save v1.8.9 on Wed Nov 25 17:26:38 2026\n*filter\n:INPUT ACCEPT [12:3456]\n:f2b-ftest - [0:0]\n-A INPUT -p tcp -m multiport --dports 22 -j f2b-ftest\nCOMMIT\n# Completed on Wed Nov 25 17:26:38 2026\n";
    assert_eq!(
        normalise(save),
        "*filter\n:INPUT ACCEPT\n:f2b-ftest -\n-A INPUT -p tcp -m multiport --dports 22 -j f2b-ftest\nCOMMIT\n"
    );
    let nft = "table ip filter {\n\tchain INPUT {\n\t\tmeta l4proto tcp tcp dport 22 counter packets 7 bytes 420 jump f2b-ftest\n\t}\n}\n";
    assert_eq!(
        normalise(nft),
        "table ip filter {\n\tchain INPUT {\n\t\tmeta l4proto tcp tcp dport 22 counter jump f2b-ftest\n\t}\n}\n"
    );
}

#[test]
fn f2b_parses_the_banned_list() {
    assert_eq!(parse_python_list("[]\n"), Vec::<String>::new());
    assert_eq!(
        parse_python_list("['10.250.0.1', 'fd00:250::1']\n"),
        ["10.250.0.1", "fd00:250::1"]
    );
}

//! Issue 7, items 1 and 2: `ftagent --setup` in a lab namespace with real listeners, its
//! refusals, the systemd unit (`systemd-analyze verify` of what `--install-service` would
//! install), and the sd_notify protocol of a real daemon (READY, WATCHDOG, STATUS, RELOADING,
//! STOPPING) read from a socket the test binds.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::agent::BIN;
use crate::lab::{self, VICTIM4};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The real binary outside any namespace, stdin closed.
fn ftagent(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .expect("run ftagent")
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ftagent-setup-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `[[service]]` entries of a configuration as "port/proto", in file order.
fn services_of(config: &str) -> Vec<String> {
    let value: toml::Value = toml::from_str(config).unwrap();
    value["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let port = match &s["port"] {
                toml::Value::Integer(p) => p.to_string(),
                other => other.as_str().unwrap().to_string(),
            };
            let proto = s.get("proto").and_then(|p| p.as_str()).unwrap_or("tcp");
            format!("{port}/{proto}")
        })
        .collect()
}

/// Listeners in the victim namespace: 22 on the lab address, 80 on every IPv4 address, 443
/// on every IPv4 and IPv6 address, DNS over UDP on the lab address, and MySQL and a DNS
/// stub on loopback only.
const LISTENERS_PY: &str = r#"
import socket, time
def tcp(family, addr, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(16); return s
def udp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, port)); return s
keep = [tcp(socket.AF_INET, "@VICTIM@", 22), tcp(socket.AF_INET, "0.0.0.0", 80),
        tcp(socket.AF_INET6, "::", 443), udp("@VICTIM@", 53),
        tcp(socket.AF_INET, "127.0.0.1", 3306), udp("127.0.0.53", 53)]
print("listening", flush=True)
time.sleep(60)
"#;

/// Issue 7: `--setup --yes` proposes what listens beyond loopback and writes a configuration
/// that `config check` accepts; a second run without --force changes nothing; --force
/// replaces it and keeps the old one.
#[test]
fn issue7_setup_yes_writes_the_listening_services() {
    let Some((_serial, lab)) = lab::start_quiet("issue7_setup_yes") else {
        return;
    };
    let script = LISTENERS_PY.replace("@VICTIM@", VICTIM4);
    let listeners = lab.victim.spawn(&["python3", "-c", &script]);
    lab::wait_until(Duration::from_secs(10), "the listeners", || {
        listeners.stdout().contains("listening")
    });
    let path = lab.dir().join("etc/ftagent.toml");
    let path_s = path.to_str().unwrap();
    let setup = |extra: &[&str]| {
        let mut args = vec![
            "env",
            "SSH_CONNECTION=10.250.0.1 50022 10.250.0.2 22",
            BIN,
            "-c",
            path_s,
            "--setup",
            "--yes",
        ];
        args.extend_from_slice(extra);
        lab.victim.run(&args)
    };

    let out = setup(&[]);
    assert!(out.status.success(), "{out:?}");
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        services_of(&written),
        ["22/tcp", "53/udp", "80/tcp", "443/tcp"],
        "{written}"
    );
    assert!(
        !written.contains("3306"),
        "loopback-only MySQL proposed:\n{written}"
    );
    assert!(
        written.contains("\"10.250.0.1\",") && written.contains("your SSH session"),
        "the SSH client is not safelisted:\n{written}"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let check = ftagent(&["-c", path_s, "config", "check"]);
    assert!(check.status.success(), "config check: {check:?}\n{written}");
    assert_eq!(text(&check.stdout).trim(), format!("{path_s}: ok"));
    // What setup saw is shown too.
    let shown = text(&out.stdout);
    for line in ["nf_tables:", "iptables:", "80/tcp", "wrote "] {
        assert!(shown.contains(line), "{line:?} missing from:\n{shown}");
    }

    // Again without --force: refused, the file byte for byte as it was.
    let out = setup(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("exists and was left as it is"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);

    // With --force and other answers: replaced; the old one kept beside it.
    let out = setup(&[
        "--force",
        "--services",
        "8080,53/udp",
        "--safelist",
        "10.250.9.0/24",
        "--mode",
        "monitor",
    ]);
    assert!(out.status.success(), "{out:?}");
    let replaced = std::fs::read_to_string(&path).unwrap();
    assert_eq!(services_of(&replaced), ["8080/tcp", "53/udp"]);
    assert!(replaced.contains("\"10.250.9.0/24\",") && replaced.contains("mode = \"monitor\""));
    let backup = std::fs::read_to_string(lab.dir().join("etc/ftagent.toml.bak")).unwrap();
    assert_eq!(backup, written);
    assert!(ftagent(&["-c", path_s, "config", "check"]).status.success());
}

/// Issue 7: bad answers and impossible requests exit 2 (or 1 for an existing file) and write
/// nothing. Runs without a namespace: all of these stop before the host is looked at.
#[test]
fn issue7_setup_refuses_bad_answers_and_writes_nothing() {
    let dir = temp_dir("bad");
    let path = dir.join("ftagent.toml");
    let path_s = path.to_str().unwrap();
    for (args, says) in [
        (&["--services", "70000"][..], "70000"),
        (&["--services", "80/sctp"], "sctp"),
        (&["--services", "8000-8100,8080"], "overlaps"),
        (&["--safelist", "10.0.0.1/33"], "10.0.0.1/33"),
        (&["--safelist", "none,10.0.0.1"], "none"),
        (&["--mode", "maybe"], "maybe"),
    ] {
        let mut all = vec!["-c", path_s, "--setup", "--yes"];
        all.extend_from_slice(args);
        let out = ftagent(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(text(&out.stderr).contains(says), "{args:?}: {out:?}");
        assert!(!path.exists(), "{args:?} wrote {path_s}");
    }
    // Interactive, but stdin is no terminal.
    let out = ftagent(&["-c", path_s, "--setup"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("not one: add --yes"), "{out:?}");
    assert!(!path.exists());
    // --enable where systemd does not run: refused before anything is written.
    if !Path::new("/run/systemd/system").exists() {
        let out = ftagent(&["-c", path_s, "--setup", "--yes", "--enable"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            text(&out.stderr).contains("systemd is not the init system"),
            "{out:?}"
        );
        assert!(!path.exists());
    }
    // An existing file is refused before anything else.
    std::fs::write(&path, "# mine\n").unwrap();
    let out = ftagent(&["-c", path_s, "--setup", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 7: the unit `--install-service` would install passes `systemd-analyze verify`
/// without a single warning (ExecStart points at the built binary, which must exist).
#[test]
fn issue7_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").is_err(),
            "systemd-analyze missing (tests/deps.sh installs systemd)"
        );
        eprintln!("skipped: no systemd-analyze");
        return;
    }
    let out = ftagent(&["--install-service", "--dry-run"]);
    assert!(out.status.success(), "{out:?}");
    let unit = text(&out.stdout);
    let exe = Path::new(BIN).canonicalize().unwrap();
    assert!(
        unit.contains(&format!("\nExecStart={} run\n", exe.display())),
        "{unit}"
    );
    let dir = temp_dir("verify");
    let path = dir.join("ftagent.service");
    std::fs::write(&path, &unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .unwrap();
    let said = format!("{}{}", text(&verify.stdout), text(&verify.stderr));
    assert!(verify.status.success(), "{said}");
    // verify only warns about unknown keys or values: any word about our unit fails.
    assert!(!said.contains("ftagent"), "systemd-analyze verify:\n{said}");

    // The same check can fail: a misspelt key is reported.
    std::fs::write(&path, unit.replace("ProtectHome=", "ProtectHomes=")).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(text(&verify.stderr).contains("ProtectHomes"), "{verify:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 7: without systemd as init, --install-service says so, exits 1 and installs nothing.
#[test]
fn issue7_install_service_without_systemd_installs_nothing() {
    let unit = Path::new("/etc/systemd/system/ftagent.service");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if Path::new("/run/systemd/system").exists() || unit.exists() || !root {
        eprintln!("skipped: systemd runs here (or not root): the refusal cannot be shown");
        return;
    }
    let out = ftagent(&["--install-service", "--enable"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("systemd is not the init system here"),
        "{out:?}"
    );
    assert!(!unit.exists());
}

/// Collects the notifications sent to a socket the test binds.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<(Instant, String)>,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        NotifySocket {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// Reads until `want` has been seen (after what was seen so far), for at most `timeout`.
    fn wait_for(&mut self, want: &str, timeout: Duration) -> usize {
        let from = self.seen.len();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.read_some();
            if let Some(i) = self.seen[from..]
                .iter()
                .position(|(_, m)| m.starts_with(want))
            {
                return from + i;
            }
        }
        panic!(
            "no {want:?} within {timeout:?}; seen: {:?}",
            self.messages()
        );
    }

    fn read_some(&mut self) {
        let mut buf = [0u8; 1024];
        if let Ok(n) = self.socket.recv(&mut buf) {
            self.seen.push((Instant::now(), text(&buf[..n])));
        }
    }

    fn messages(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, m)| m.as_str()).collect()
    }
}

/// Issue 7: a real daemon with $NOTIFY_SOCKET and $WATCHDOG_USEC set: READY=1 once its table
/// is installed (and nothing before it), WATCHDOG=1 at half the watchdog interval, a STATUS
/// line, RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 on SIGTERM.
#[test]
fn issue7_daemon_speaks_sd_notify() {
    let Some((_serial, lab)) = lab::start_quiet("issue7_sd_notify") else {
        return;
    };
    let dir = lab.dir();
    let config = dir.join("ftagent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\nwarmup = \"2s\"\n",
            dir.join("ftagent.sock").display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    let mut notify = NotifySocket::bind(dir.join("notify.sock"));
    let socket_var = format!("NOTIFY_SOCKET={}", notify.path.display());
    let mut daemon = lab.victim.spawn(&[
        "env",
        &socket_var,
        "WATCHDOG_USEC=400000",
        BIN,
        "-c",
        config.to_str().unwrap(),
        "run",
    ]);
    notify.wait_for("READY=1", Duration::from_secs(10));
    assert_eq!(
        notify.messages()[0],
        "READY=1",
        "something came before READY"
    );
    let table = lab.victim.run(&["nft", "list", "table", "inet", "ftagent"]);
    assert!(table.status.success(), "READY=1 but no table: {table:?}");

    // 2 s of ticks: the watchdog every 200 ms (half of 400 ms), so about 10.
    let start = notify.seen.len();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        notify.read_some();
    }
    let watchdogs = notify.seen[start..]
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .count();
    assert!(
        (7..=13).contains(&watchdogs),
        "{watchdogs} WATCHDOG=1 in 2 s: {:?}",
        notify.messages()
    );
    let status = notify
        .messages()
        .into_iter()
        .find(|m| m.starts_with("STATUS="))
        .expect("a STATUS line")
        .to_string();
    assert!(
        status.starts_with("STATUS=protecting 3 services; 0 incidents open"),
        "{status}"
    );

    daemon.signal(libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", Duration::from_secs(5));
    assert!(notify.seen[reloading].1.contains("\nMONOTONIC_USEC="));
    notify.wait_for("READY=1", Duration::from_secs(5));

    daemon.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
    let status = daemon
        .wait_timeout(Duration::from_secs(10))
        .expect("the daemon stops");
    assert!(status.success(), "{}", daemon.stderr());
    let _ = std::fs::remove_file(&notify.path);
}

/// Runs inside new PID, mount, network, UTS, IPC and cgroup namespaces: a private /run,
/// /var/lib and /srv, the binary and its configuration in /srv (outside everything the unit
/// hides), the unit rendered by `--install-service --dry-run` as the only unit in
/// /etc/systemd/system beside stand-ins for the targets it names, and a 2 s watchdog drop-in;
/// then systemd as PID 1.
const SYSTEMD_PID1_SH: &str = r#"
set -e
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for d in /run /var/lib /srv; do mount -t tmpfs tmpfs $d; done
cp "$1" /srv/ftagent
printf '[agent]\nwarmup = "2s"\n' > /srv/ftagent.toml
mkdir -p /srv/etc/ftagent.service.d /srv/lib
/srv/ftagent -c /srv/ftagent.toml --install-service --dry-run > /srv/etc/ftagent.service
printf '[Service]\nWatchdogSec=2s\n' > /srv/etc/ftagent.service.d/watchdog.conf
for t in sysinit basic shutdown multi-user network-online; do
  printf '[Unit]\nDescription=%s stand-in\n' $t > /srv/lib/$t.target
done
printf '[Unit]\nDescription=ftagent test\nWants=ftagent.service\n' > /srv/lib/ftagent-test.target
mount --bind /srv/etc /etc/systemd/system
mount --bind /srv/lib /usr/lib/systemd/system
exec env -i container=ftagent-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=ftagent-test.target --show-status=no
"#;

/// systemd as PID 1 of its own namespaces, in a cgroup of its own; killed with everything
/// in it, and the cgroup removed, on drop.
struct SystemdPid1 {
    unshare: std::process::Child,
    cgroup: PathBuf,
}

impl SystemdPid1 {
    /// None (with the reason printed) where it cannot run: no systemd, no cgroup2 to create
    /// a group in.
    fn start() -> Option<SystemdPid1> {
        let skip = |why: &str| {
            eprintln!("skipped issue7_unit_runs_under_systemd: {why}");
            None
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !Path::new("/lib/systemd/systemd").exists() {
            return skip("needs root and /lib/systemd/systemd");
        }
        let Some(unified) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
        else {
            return skip("no cgroup2 hierarchy");
        };
        let cgroup = unified.join(format!("fta-systemd-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&cgroup) {
            return skip(&format!("cannot create {}: {e}", cgroup.display()));
        }
        let procs = cgroup.join("cgroup.procs");
        let unshare = Command::new("sh")
            .args([
                "-c",
                "echo $$ > \"$0\" && exec unshare --pid --fork --kill-child=SIGKILL --mount \
                 --net --uts --ipc --cgroup --mount-proc bash -c \"$1\" ftagent-pid1 \"$2\"",
                procs.to_str().unwrap(),
                SYSTEMD_PID1_SH,
                BIN,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Some(SystemdPid1 { unshare, cgroup })
    }

    /// systemd's PID on the host: the one process in init.scope.
    fn pid(&self) -> Option<String> {
        let procs = std::fs::read_to_string(self.cgroup.join("init.scope/cgroup.procs")).ok()?;
        procs.lines().next().map(str::to_string)
    }

    /// Runs a command in systemd's namespaces.
    fn run(&self, args: &[&str]) -> Output {
        let pid = self.pid().expect("systemd runs");
        Command::new("nsenter")
            .args(["-t", &pid, "-m", "-p", "-n", "-u"])
            .args(args)
            .output()
            .unwrap()
    }

    /// `systemctl show ftagent -p KEY --value`.
    fn show(&self, key: &str) -> String {
        let out = self.run(&["systemctl", "show", "ftagent", "-p", key, "--value"]);
        text(&out.stdout).trim().to_string()
    }

    /// The agent's PID on the host.
    fn agent_pid(&self) -> Option<i32> {
        let procs = self
            .cgroup
            .join("system.slice/ftagent.service/cgroup.procs");
        std::fs::read_to_string(procs)
            .ok()?
            .lines()
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for SystemdPid1 {
    fn drop(&mut self) {
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        lab::wait_until(Duration::from_secs(10), "the test cgroup to empty", || {
            std::fs::read_to_string(self.cgroup.join("cgroup.events"))
                .map_or(true, |e| e.contains("populated 0"))
        });
        // Removed deepest first.
        let mut dirs = vec![self.cgroup.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            i += 1;
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Issue 7: the installed unit under a real systemd (PID 1 of its own namespaces, since the
/// host's init is not systemd): the agent becomes active through READY=1, with its status
/// line, its table, the sandbox (two capabilities, no new privileges, a syscall filter, /proc/sys
/// read-only but for tcp_syncookies); `systemctl reload` keeps it running; a stuck agent
/// (SIGSTOP) is killed by the watchdog and restarted; `systemctl stop` stops it cleanly.
#[test]
fn issue7_unit_runs_under_systemd() {
    let Some(systemd) = SystemdPid1::start() else {
        return;
    };
    lab::wait_until(Duration::from_secs(30), "ftagent.service active", || {
        systemd.pid().is_some() && systemd.show("ActiveState") == "active"
    });
    assert_eq!(systemd.show("Type"), "notify");
    lab::wait_until(Duration::from_secs(10), "the status line", || {
        systemd
            .show("StatusText")
            .starts_with("protecting 3 services")
    });
    let table = systemd.run(&["nft", "list", "table", "inet", "ftagent"]);
    assert!(table.status.success(), "{table:?}");

    let agent = systemd.agent_pid().expect("the agent's pid");
    let status = std::fs::read_to_string(format!("/proc/{agent}/status")).unwrap();
    // CAP_NET_ADMIN (12) and CAP_NET_RAW (13) only.
    assert!(status.contains("CapBnd:\t0000000000003000"), "{status}");
    assert!(
        status.contains("NoNewPrivs:\t1") && status.contains("Seccomp:\t2"),
        "{status}"
    );
    let sysctl = Command::new("nsenter")
        .args(["-t", &agent.to_string(), "-m", "-n", "sh", "-c"])
        .arg(
            "echo 1 > /proc/sys/net/ipv4/tcp_syncookies && echo syncookies-ok; \
             echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo ip_forward-refused",
        )
        .output()
        .unwrap();
    assert_eq!(
        text(&sysctl.stdout),
        "syncookies-ok\nip_forward-refused\n",
        "{sysctl:?}"
    );

    let reload = systemd.run(&["systemctl", "reload", "ftagent"]);
    assert!(reload.status.success(), "{reload:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(systemd.show("ActiveState"), "active");
    assert_eq!(systemd.agent_pid(), Some(agent), "a reload is no restart");

    // A stuck loop sends no WATCHDOG=1: killed and started again.
    // SAFETY: kill(2) on the agent's pid, which this test found in its own cgroup.
    unsafe { libc::kill(agent, libc::SIGSTOP) };
    lab::wait_until(Duration::from_secs(20), "a watchdog restart", || {
        systemd.show("NRestarts") == "1" && systemd.show("ActiveState") == "active"
    });
    let again = systemd.agent_pid().expect("restarted");
    assert_ne!(again, agent);

    let stop = systemd.run(&["systemctl", "stop", "ftagent"]);
    assert!(stop.status.success(), "{stop:?}");
    assert_eq!(systemd.show("ActiveState"), "inactive");
    assert_eq!(systemd.show("Result"), "success");
}

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
    let Some((_serial, lab)) = lab::start("issue7_setup_yes") else {
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
    let Some((_serial, lab)) = lab::start("issue7_sd_notify") else {
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

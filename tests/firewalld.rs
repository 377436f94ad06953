//! Issue 17, beside firewalld: Debian's firewalld (nftables backend, as AlmaLinux 9 runs it) in
//! the victim's namespace, on a private `dbus-daemon` as its system bus and with its own
//! configuration in the lab's temp dir (its module unloading on `--complete-reload` disarmed: a
//! private mount namespace binds /bin/true over kmod, so the host's modules stay loaded). The
//! agent runs in the older-kernel mode (unowned table: what AlmaLinux 9's 5.14 gets). Our table
//! and bans come through `firewall-cmd --reload`, `--complete-reload` and a firewalld restart
//! untouched (the same table, never deleted and put back), firewalld's zone keeps working with
//! ours in place (its open port answers, its closed one does not), the iptables chain FTAGENT
//! that firewalld's reload deletes (it flushes every iptables table) is put back by the agent
//! within moments (it hears the deletion in the nf_tables notices),
//! and `rules flush` leaves `table inet firewalld` byte-identical.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::agent::{Agent, Setup};
use crate::lab::{self, Lab, Netns, Proc, ATTACKER4, ATTACKER6, OTHER4, VICTIM4};

const FIREWALLD: &str = "/usr/sbin/firewalld";
const DBUS_DAEMON: &str = "/usr/bin/dbus-daemon";
/// The port firewalld's zone opens, and one it does not; both have a listener on the victim.
const OPEN_PORT: u16 = 8080;
const CLOSED_PORT: u16 = 8081;

/// firewalld on a private system bus, in the victim's namespace.
struct Firewalld<'a> {
    ns: &'a Netns,
    bus: String,
    config: PathBuf,
    daemon: Option<Proc>,
}

impl<'a> Firewalld<'a> {
    /// A private `dbus-daemon` and firewalld's configuration (the package's, with the public
    /// zone opening `OPEN_PORT`) in `dir`.
    fn configure(ns: &'a Netns, dir: &Path) -> (Firewalld<'a>, Proc) {
        let socket = dir.join("system_bus");
        let bus_conf = dir.join("dbus.conf");
        std::fs::write(
            &bus_conf,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>system</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>\n\
                 <policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>\
                 <allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n",
                socket.display()
            ),
        )
        .unwrap();
        let bus = ns.spawn(&[
            DBUS_DAEMON,
            "--nofork",
            "--nopidfile",
            &format!("--config-file={}", bus_conf.display()),
        ]);
        lab::wait_until(Duration::from_secs(10), "the private D-Bus socket", || {
            socket.exists()
        });

        let config = dir.join("firewalld");
        let copied = std::process::Command::new("cp")
            .args(["-a", "/etc/firewalld"])
            .arg(&config)
            .status()
            .unwrap();
        assert!(copied.success(), "cp -a /etc/firewalld");
        std::fs::write(
            config.join("firewalld.conf"),
            "DefaultZone=public\nCleanupOnExit=yes\nCleanupModulesOnExit=no\nLockdown=no\n\
             IPv6_rpfilter=yes\nIndividualCalls=no\nLogDenied=off\nFirewallBackend=nftables\n\
             FlushAllOnReload=yes\nRFC3964_IPv4=yes\n",
        )
        .unwrap();
        std::fs::write(
            config.join("zones/public.xml"),
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone>\n  <short>Public</short>\n  \
                 <service name=\"ssh\"/>\n  <port protocol=\"tcp\" port=\"{OPEN_PORT}\"/>\n</zone>\n"
            ),
        )
        .unwrap();
        let firewalld = Firewalld {
            ns,
            bus: format!("DBUS_SYSTEM_BUS_ADDRESS=unix:path={}", socket.display()),
            config,
            daemon: None,
        };
        (firewalld, bus)
    }

    /// Starts firewalld and waits until it says it is running.
    fn start(&mut self) {
        let script = format!(
            "mount --bind /bin/true /usr/bin/kmod && exec {FIREWALLD} --nofork --nopid \
             --system-config {} --log-target console",
            self.config.display()
        );
        self.daemon = Some(self.ns.spawn(&[
            "env",
            &self.bus,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]));
        let daemon = self.daemon.as_mut().unwrap();
        let (ns, bus) = (self.ns, &self.bus);
        lab::wait_until(Duration::from_secs(30), "firewalld running", || {
            assert!(daemon.running(), "firewalld exited: {}", daemon.stderr());
            firewall_cmd(ns, bus, &["--state"]).status.success()
        });
    }

    /// Stops firewalld (SIGTERM: it removes its own tables).
    fn stop(&mut self) {
        let mut daemon = self.daemon.take().expect("firewalld running");
        daemon.signal(libc::SIGTERM);
        assert!(
            daemon.wait_timeout(Duration::from_secs(15)).is_some(),
            "firewalld stops on SIGTERM"
        );
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = firewall_cmd(self.ns, &self.bus, args);
        assert!(
            out.status.success(),
            "firewall-cmd {args:?}: {out:?}\nfirewalld: {}",
            self.daemon.as_ref().map(Proc::stderr).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `nft list table inet firewalld`, or None when there is none.
    fn table(&self) -> Option<String> {
        let out = self.ns.run(&["nft", "list", "table", "inet", "firewalld"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn firewall_cmd(ns: &Netns, bus: &str, args: &[&str]) -> Output {
    let mut all = vec!["env", bus, "firewall-cmd"];
    all.extend_from_slice(args);
    ns.run(&all)
}

/// The handle of our table (`nft -a`): the same handle means the table was never deleted.
fn our_handle(ns: &Netns) -> Option<String> {
    let out = ns.run(&["nft", "-a", "list", "table", "inet", "ftagent"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?;
    Some(first.split("# handle ").nth(1)?.trim().to_string())
}

/// A TCP connection from `OTHER4` to the victim's `port` is accepted within 3 s.
fn connects(lab: &Lab, port: u16) -> bool {
    let code = format!(
        "import socket; s = socket.socket(); s.settimeout(3); s.bind(('{OTHER4}', 0)); \
         s.connect(('{VICTIM4}', {port}))"
    );
    lab.attacker.run(&["python3", "-c", &code]).status.success()
}

/// A ping from `from` to the victim is answered.
fn answered(lab: &Lab, from: &str) -> bool {
    lab.attacker
        .run(&[
            "ping", "-n", "-q", "-c", "1", "-W", "2", "-I", from, VICTIM4,
        ])
        .status
        .success()
}

#[test]
fn issue17_beside_firewalld_reloads_and_restarts_leave_our_table_and_flush_leaves_theirs() {
    const TEST: &str = "issue17_beside_firewalld";
    if !lab::require_root(TEST)
        || !lab::require_program(TEST, FIREWALLD, "Debian package firewalld")
        || !lab::require_program(TEST, DBUS_DAEMON, "Debian package dbus-daemon")
        || !lab::require_program(TEST, "unshare", "Debian package util-linux")
    {
        return;
    }
    let began = Instant::now();
    let Some((_serial, lab)) = lab::start_quiet(TEST) else {
        return;
    };
    let ns = &lab.victim;
    let (mut firewalld, _bus) = Firewalld::configure(ns, lab.dir());
    firewalld.start();
    assert_eq!(firewalld.cmd(&["--get-default-zone"]).trim(), "public");
    let theirs = firewalld
        .table()
        .expect("firewalld's nftables backend: table inet firewalld");
    let _listeners: Vec<Proc> = [OPEN_PORT, CLOSED_PORT]
        .iter()
        .map(|port| {
            ns.spawn(&[
                "python3",
                "-m",
                "http.server",
                "--bind",
                VICTIM4,
                &port.to_string(),
            ])
        })
        .collect();
    lab::wait_until(Duration::from_secs(10), "the listeners", || {
        let out = ns.run(&["ss", "-Hltn"]);
        let text = String::from_utf8_lossy(&out.stdout);
        [OPEN_PORT, CLOSED_PORT]
            .iter()
            .all(|p| text.contains(&format!("{VICTIM4}:{p}")))
    });
    assert!(
        connects(&lab, OPEN_PORT),
        "firewalld's zone opens {OPEN_PORT}"
    );
    assert!(
        !connects(&lab, CLOSED_PORT),
        "firewalld's zone closes {CLOSED_PORT}"
    );

    let mut agent = Agent::configured(
        &lab,
        Setup {
            compat: "legacy",
            ..Setup::default()
        },
    );
    agent.start();
    assert_eq!(
        firewalld.table().as_deref(),
        Some(theirs.as_str()),
        "our start leaves table inet firewalld as it was"
    );
    agent.run_ok(&["ban", ATTACKER4, "--for", "10m"]);
    agent.run_ok(&["ban", ATTACKER6, "--for", "10m"]);
    agent.run_ok(&["ban", "10.250.1.0/24", "--for", "1h"]);
    let handle = our_handle(ns).expect("our table");
    let ours_whole = |firewalld: &Firewalld, when: &str| {
        assert_eq!(
            our_handle(ns).as_deref(),
            Some(handle.as_str()),
            "{when}: table inet ftagent is the same table (never deleted)"
        );
        let dump = agent.dump();
        for ban in [
            format!("{ATTACKER4} timeout 10m expires"),
            format!("{ATTACKER6} timeout 10m expires"),
            "10.250.1.0/24 timeout 1h expires".to_string(),
        ] {
            assert!(dump.contains(&ban), "{when}: {ban} in our table:\n{dump}");
        }
        let restored: Vec<_> = agent
            .all_events()
            .into_iter()
            .filter(|e| e["event"] == "table_restored")
            .collect();
        assert!(
            restored.is_empty(),
            "{when}: nothing to restore: {restored:?}"
        );
        assert!(
            !answered(&lab, ATTACKER4),
            "{when}: the banned source dropped"
        );
        assert!(answered(&lab, OTHER4), "{when}: another source answered");
        assert!(connects(&lab, OPEN_PORT), "{when}: the zone's open port");
        assert!(
            !connects(&lab, CLOSED_PORT),
            "{when}: the zone's closed port"
        );
        assert!(firewalld.table().is_some(), "{when}: firewalld's table");
    };
    ours_whole(&firewalld, "with both in place");
    let shim = || {
        let out = ns.run(&["iptables", "-S", "FTAGENT"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ftagent-ban4")
    };
    lab::wait_until(Duration::from_secs(15), "the iptables chain FTAGENT", shim);

    // firewalld's reload flushes every iptables table (`iptables -F; -X`), our FTAGENT chain
    // and its jump with them: the agent hears it in the nf_tables notices and puts them back
    // at once, not at its check every 10 s.
    let shim_back = |when: &str, since: Instant| {
        lab::wait_until(
            Duration::from_secs(5),
            &format!("the iptables chain FTAGENT put back {when}"),
            shim,
        );
        eprintln!(
            "{TEST}: the iptables chain FTAGENT in place {:.2} s {when}",
            since.elapsed().as_secs_f64()
        );
    };
    firewalld.cmd(&["--reload"]);
    shim_back("after firewall-cmd --reload", Instant::now());
    ours_whole(&firewalld, "after firewall-cmd --reload");
    let ipsets = ns.run_ok(&["ipset", "list", "ftagent-ip4"]);
    assert!(ipsets.contains(&format!("{ATTACKER4} timeout")), "{ipsets}");

    firewalld.cmd(&["--complete-reload"]);
    shim_back("after firewall-cmd --complete-reload", Instant::now());
    ours_whole(&firewalld, "after firewall-cmd --complete-reload");

    firewalld.stop();
    assert!(
        firewalld.table().is_none(),
        "firewalld's stop removes its table"
    );
    assert!(
        !answered(&lab, ATTACKER4),
        "firewalld stopped: the ban still drops"
    );
    firewalld.start();
    shim_back("after firewalld's restart", Instant::now());
    ours_whole(&firewalld, "after firewalld's restart");

    let before = firewalld.table().expect("firewalld's table");
    agent.run_ok(&["rules", "flush"]);
    assert!(
        our_handle(ns).is_none(),
        "rules flush removes table inet ftagent"
    );
    assert_eq!(
        firewalld.table().as_deref(),
        Some(before.as_str()),
        "rules flush leaves table inet firewalld byte-identical"
    );
    assert!(
        connects(&lab, OPEN_PORT),
        "after rules flush: the zone's open port"
    );
    assert!(
        !connects(&lab, CLOSED_PORT),
        "after rules flush: the zone's closed port"
    );
    assert!(answered(&lab, ATTACKER4), "after rules flush: no ban left");
    let log = agent
        .daemon
        .take()
        .map(|d| String::from_utf8_lossy(&d.finish(Duration::from_secs(10)).stderr).into_owned())
        .unwrap_or_default();
    eprintln!(
        "{TEST}: the agent put the iptables chain back {} times",
        log.matches("was removed by another tool: put back").count()
    );
    firewalld.stop();
    eprintln!("{TEST}: {:.1} s", began.elapsed().as_secs_f64());
}

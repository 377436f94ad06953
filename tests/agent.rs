//! ftagent as the tests drive it: the real binary, running in a lab's victim namespace with a
//! config of the test's own (control socket and state in the lab's temp dir).

use std::path::PathBuf;
use std::process::{ExitStatus, Output};
use std::time::Duration;

use serde_json::Value;

use crate::lab::{self, Lab, Netns, Proc};

pub const BIN: &str = env!("CARGO_BIN_EXE_ftagent");

/// The nft table of a `rules dump`: what comes before the iptables-shim comment lines.
pub fn table_part(dump: &str) -> &str {
    dump.split("\n# The iptables compatibility chain")
        .next()
        .unwrap_or(dump)
}

/// The lines of a `rules dump` that list the elements of the sets whose name `set` accepts
/// (`elements = { …` and its continuation lines), trimmed.
pub fn element_lines(dump: &str, set: impl Fn(&str) -> bool) -> Vec<&str> {
    let mut in_set = false;
    let mut found = Vec::new();
    for line in table_part(dump).lines() {
        let t = line.trim();
        if let Some(header) = t.strip_prefix("set ") {
            in_set = set(header.split(' ').next().unwrap_or(""));
        }
        if in_set && (t.starts_with("elements") || line.starts_with("\t\t\t ")) {
            found.push(t);
        }
    }
    found
}

/// The packets of a named counter of our table in a `rules dump`
/// (`counter NAME {` then `packets N bytes M`).
pub fn dump_counter(dump: &str, name: &str) -> Option<u64> {
    let mut lines = dump.lines();
    lines.find(|l| l.trim() == format!("counter {name} {{"))?;
    lines
        .next()?
        .trim()
        .strip_prefix("packets ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// What a test puts in the agent's config beside the lab's paths.
pub struct Setup<'s> {
    /// `nft.compat`: "auto" or "legacy".
    pub compat: &'s str,
    /// More `[agent]` keys, e.g. `warmup = "3s"`.
    pub agent: &'s str,
    /// More `[nft]` keys.
    pub nft: &'s str,
    pub safelist: &'s [&'s str],
    /// Whole sections: `[[service]]`, `[sense]`, `[detection]`, `[mitigation]`…
    pub sections: &'s str,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            compat: "auto",
            agent: "",
            nft: "",
            safelist: &["10.250.9.0/24", "fd00:250::99"],
            sections: "",
        }
    }
}

pub struct Agent<'a> {
    ns: &'a Netns,
    config: PathBuf,
    pub daemon: Option<Proc>,
}

impl<'a> Agent<'a> {
    /// With the given table mode (`nft.compat`).
    pub fn new(lab: &'a Lab, compat: &str) -> Agent<'a> {
        Agent::configured(
            lab,
            Setup {
                compat,
                ..Setup::default()
            },
        )
    }

    pub fn configured(lab: &'a Lab, setup: Setup) -> Agent<'a> {
        let agent = Agent {
            ns: &lab.victim,
            config: lab.dir().join("ftagent.toml"),
            daemon: None,
        };
        agent.reconfigure(setup);
        agent
    }

    /// Writes the config file anew (a running daemon reads it on SIGHUP).
    pub fn reconfigure(&self, setup: Setup) {
        let dir = self.config.parent().unwrap();
        let safelist: Vec<String> = setup.safelist.iter().map(|s| format!("\"{s}\"")).collect();
        let text = format!(
            "[agent]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n{}\n\n[safelist]\ncidrs = [{}]\n\n[nft]\ncompat = \"{}\"\n{}\n{}",
            dir.join("ftagent.sock").display(),
            dir.join("state").display(),
            setup.agent,
            safelist.join(", "),
            setup.compat,
            setup.nft,
            setup.sections,
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// The config file and the control socket the daemon uses.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    pub fn socket(&self) -> PathBuf {
        self.config.with_file_name("ftagent.sock")
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts `ftagent run` with more arguments and waits until it answers on its socket.
    pub fn start_with(&mut self, args: &[&str]) {
        self.start_args_within(args, Duration::from_secs(10));
    }

    /// Starts `ftagent run` and waits up to `timeout` until it answers on its socket (a
    /// start with full sets takes longer).
    pub fn start_within(&mut self, timeout: Duration) {
        self.start_args_within(&[], timeout);
    }

    /// Starts `ftagent run` through `launcher` (e.g. `env NAME=value nice -n N`: programs that
    /// exec it, so the pid is the daemon's).
    pub fn start_through(&mut self, launcher: &[&str]) {
        let config = self.config.to_str().unwrap().to_string();
        let mut all = launcher.to_vec();
        all.extend_from_slice(&[BIN, "-c", &config, "run"]);
        self.spawn_within(&all, Duration::from_secs(10));
    }

    fn start_args_within(&mut self, args: &[&str], timeout: Duration) {
        let config = self.config.to_str().unwrap().to_string();
        let mut all = vec![BIN, "-c", &config, "run"];
        all.extend_from_slice(args);
        self.spawn_within(&all, timeout);
    }

    /// Runs `command` in the namespace and waits up to `timeout` until the daemon answers on
    /// its socket.
    fn spawn_within(&mut self, command: &[&str], timeout: Duration) {
        self.daemon = Some(self.ns.spawn(command));
        let socket = self.config.with_file_name("ftagent.sock");
        let daemon = self.daemon.as_mut().unwrap();
        lab::wait_until(timeout, "the daemon's control socket", || {
            assert!(
                daemon.running(),
                "ftagent run exited early: {}",
                daemon.stderr()
            );
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
    }

    /// Stops the daemon with SIGTERM and returns its exit status and log.
    pub fn stop(&mut self) -> (ExitStatus, String) {
        let mut daemon = self.daemon.take().expect("daemon running");
        daemon.signal(libc::SIGTERM);
        let status = daemon
            .wait_timeout(Duration::from_secs(10))
            .expect("daemon stops on SIGTERM");
        (status, daemon.stderr())
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec![BIN, "-c", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        self.ns.run(&all)
    }

    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "ftagent {args:?} failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `rules dump` without its iptables-shim part (issue 6): our nft table as nft text.
    pub fn dump(&self) -> String {
        table_part(&self.run_ok(&["rules", "dump"])).to_string()
    }

    /// The JSON lines printed on stdout so far whose `event` passes `keep`.
    fn lines(&self, keep: impl Fn(&str) -> bool) -> Vec<Value> {
        let daemon = self.daemon.as_ref().expect("daemon running");
        daemon
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"].as_str().is_some_and(&keep))
            .collect()
    }

    /// The `--trace-samples` lines printed so far.
    pub fn traces(&self) -> Vec<Value> {
        self.lines(|e| e == "sample")
    }

    /// The detection events (`attack_*`) printed so far.
    pub fn events(&self) -> Vec<Value> {
        self.lines(|e| e.starts_with("attack_"))
    }

    /// Every event printed so far: detection and mitigation.
    pub fn all_events(&self) -> Vec<Value> {
        self.lines(|e| e != "sample")
    }

    /// Waits for the next trace line and returns it.
    pub fn next_trace(&self) -> Value {
        let seen = self.traces().len();
        lab::wait_until(Duration::from_secs(5), "a trace line", || {
            self.traces().len() > seen
        });
        self.traces().pop().unwrap()
    }

    /// The daemon's CPU time so far (user + system), from /proc.
    pub fn cpu_time(&self) -> Duration {
        let pid = self.daemon.as_ref().expect("daemon running").pid();
        // `ip netns exec` execs the binary: the pid is ftagent's.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }
}

//! What `--setup` finds out about the host before proposing anything: distribution, kernel,
//! what nf_tables can do for our table, which iptables backend is in use (and whether the
//! legacy one still holds rules), and which neighbours are present (Fail2Ban, firewalld,
//! Docker, Plesk). Every probe degrades to "unknown" with a reason; none is fatal.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::netlink::{Features, Nft};

/// Everything found, for the summary and the configuration's comments.
#[derive(Debug, Clone)]
pub(crate) struct HostReport {
    pub(crate) hostname: String,
    pub(crate) distribution: String,
    pub(crate) kernel: String,
    /// The table flags and element updates this kernel supports, or why that is unknown.
    pub(crate) nft: Result<Features, String>,
    pub(crate) iptables: Iptables,
    pub(crate) neighbours: Vec<Neighbour>,
}

/// The iptables front end and what the legacy backend still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Iptables {
    /// `iptables -V`, e.g. "iptables v1.8.9 (nf_tables)"; None when there is no iptables.
    pub(crate) version: Option<String>,
    pub(crate) backend: Backend,
    /// Rules (`-A` lines) in the legacy IPv4 and IPv6 tables; None when they could not be
    /// read. 0 when the legacy modules are not even loaded.
    pub(crate) legacy_rules: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    NfTables,
    Legacy,
    Unknown,
    Missing,
}

/// Another tool that shapes the firewall or the services on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Neighbour {
    pub(crate) name: &'static str,
    pub(crate) installed: bool,
    /// None when "running" cannot be told (Plesk is many processes).
    pub(crate) running: Option<bool>,
    /// What ftagent does about it, said in the summary and the configuration.
    pub(crate) note: &'static str,
}

/// Runs every probe. `nft` needs CAP_NET_ADMIN; without it the features are unknown.
pub(crate) fn detect() -> HostReport {
    let processes = process_names();
    HostReport {
        hostname: read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "?".into()),
        distribution: distribution(),
        kernel: kernel_release(),
        nft: Nft::open()
            .and_then(|mut nft| nft.probe())
            .map_err(|e| e.to_string()),
        iptables: iptables(),
        neighbours: neighbours(&processes),
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// PRETTY_NAME of os-release (NAME VERSION_ID when it has none).
fn distribution() -> String {
    let text = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok());
    text.as_deref()
        .and_then(os_release_name)
        .unwrap_or_else(|| "unknown (no /etc/os-release)".into())
}

/// The distribution's name from os-release text.
pub(crate) fn os_release_name(text: &str) -> Option<String> {
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let value = line.trim().strip_prefix(key)?.strip_prefix('=')?;
            let value = value.trim().trim_matches('"').trim_matches('\'');
            (!value.is_empty()).then(|| value.to_string())
        })
    };
    field("PRETTY_NAME").or_else(|| match (field("NAME"), field("VERSION_ID")) {
        (Some(name), Some(version)) => Some(format!("{name} {version}")),
        (name, _) => name,
    })
}

fn kernel_release() -> String {
    crate::sys::kernel_release().unwrap_or_else(|| "unknown".into())
}

/// Runs `program args` and returns its stdout when it succeeds.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn iptables() -> Iptables {
    let version = output("iptables", &["-V"]).map(|s| s.trim().to_string());
    let backend = match &version {
        None => Backend::Missing,
        Some(v) => backend_of(v),
    };
    Iptables {
        version,
        backend,
        legacy_rules: legacy_rules(),
    }
}

/// The backend named in `iptables -V` output.
pub(crate) fn backend_of(version: &str) -> Backend {
    if version.contains("(nf_tables)") {
        Backend::NfTables
    } else if version.contains("(legacy)") {
        Backend::Legacy
    } else {
        Backend::Unknown
    }
}

/// The rules the legacy x_tables hold. Their module lists tables in /proc/net only once
/// loaded; when it is not, there are none, and `iptables-legacy-save` (which would load it)
/// is not run.
fn legacy_rules() -> Option<usize> {
    let mut total = 0;
    for (names, save) in [
        ("/proc/net/ip_tables_names", "iptables-legacy-save"),
        ("/proc/net/ip6_tables_names", "ip6tables-legacy-save"),
    ] {
        let loaded = std::fs::read_to_string(names).is_ok_and(|t| !t.trim().is_empty());
        if loaded {
            total += count_rules(&output(save, &[])?);
        }
    }
    Some(total)
}

/// The rules (`-A` lines) of iptables-save output.
pub(crate) fn count_rules(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with("-A ")).count()
}

/// The command names (`comm`) of the running processes.
fn process_names() -> BTreeSet<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

fn exists_any(paths: &[&str]) -> bool {
    paths.iter().any(|p| Path::new(p).exists())
}

fn unit_installed(unit: &str) -> bool {
    [
        "/etc/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
    ]
    .iter()
    .any(|dir| Path::new(dir).join(unit).exists())
}

fn neighbours(processes: &BTreeSet<String>) -> Vec<Neighbour> {
    let running = |comm: &str| Some(processes.contains(comm));
    vec![
        Neighbour {
            name: "Fail2Ban",
            installed: exists_any(&["/usr/bin/fail2ban-server", "/usr/local/bin/fail2ban-server"])
                || unit_installed("fail2ban.service"),
            running: running("fail2ban-server"),
            note: "it keeps the credential attacks (SSH, mail, panel logins); ftagent never touches its f2b tables or chains",
        },
        Neighbour {
            name: "firewalld",
            installed: exists_any(&["/usr/sbin/firewalld"]) || unit_installed("firewalld.service"),
            running: running("firewalld"),
            note: "its reloads leave our table alone; the service reloads with it (ReloadPropagatedFrom) and re-checks the table",
        },
        Neighbour {
            name: "Docker",
            installed: exists_any(&["/usr/bin/dockerd", "/usr/sbin/dockerd"])
                || unit_installed("docker.service"),
            running: running("dockerd"),
            note: "published container ports are seen before Docker's NAT, under the host port: list them as services",
        },
        Neighbour {
            name: "Plesk",
            installed: exists_any(&["/usr/local/psa/version"]),
            running: None,
            note: "its panel (8443) and updates (8447) ports are proposed when they listen; \"apply firewall\" in the panel may remove our table, which the agent restores",
        },
    ]
}

impl fmt::Display for HostReport {
    /// The summary shown before the questions, one fact a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "host:       {}", self.hostname)?;
        writeln!(
            f,
            "system:     {}, kernel {}",
            self.distribution, self.kernel
        )?;
        writeln!(f, "nf_tables:  {}", self.nft_summary())?;
        writeln!(f, "iptables:   {}", self.iptables_summary())?;
        for n in &self.neighbours {
            writeln!(f, "{:<11} {}", format!("{}:", n.name), n.summary())?;
        }
        Ok(())
    }
}

impl HostReport {
    pub(crate) fn nft_summary(&self) -> String {
        match &self.nft {
            Ok(f) if f.owner_persist => "table flags owner+persist: no other process can change our table, and it outlives the agent".into(),
            Ok(_) => "no table owner flag (kernel before 6.9): the unowned mode; a table removed by another tool is put back within a second".into(),
            Err(e) => format!("unknown ({e})"),
        }
    }

    pub(crate) fn iptables_summary(&self) -> String {
        let ipt = &self.iptables;
        let front = match (&ipt.version, ipt.backend) {
            (None, _) => "not installed".to_string(),
            (Some(v), Backend::NfTables) => {
                format!("{v}: its rules are nf_tables tables of their own, beside ours")
            }
            (Some(v), Backend::Legacy) => {
                format!("{v}: the legacy backend, evaluated apart from nf_tables")
            }
            (Some(v), _) => v.clone(),
        };
        let legacy = match ipt.legacy_rules {
            Some(0) => String::new(),
            Some(n) => format!(
                "; the legacy tables hold {n} rules (ftagent's drops come first: priority -310)"
            ),
            None => "; the legacy tables could not be read".into(),
        };
        front + &legacy
    }
}

impl Neighbour {
    pub(crate) fn summary(&self) -> String {
        match (self.installed, self.running) {
            (false, Some(true)) => format!("running — {}", self.note),
            (false, _) => "not found".into(),
            (true, Some(true)) => format!("installed, running — {}", self.note),
            (true, Some(false)) => format!("installed, not running — {}", self.note),
            (true, None) => format!("installed — {}", self.note),
        }
    }

    /// Present in any way: worth a line in the configuration.
    pub(crate) fn present(&self) -> bool {
        self.installed || self.running == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_names() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n";
        assert_eq!(
            os_release_name(debian).unwrap(),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(
            os_release_name("NAME='AlmaLinux'\nVERSION_ID=9.4\n").unwrap(),
            "AlmaLinux 9.4"
        );
        assert_eq!(os_release_name("NAME=Arch\n").unwrap(), "Arch");
        assert_eq!(os_release_name("PRETTY_NAME=\"\"\n# x\n"), None);
        assert_eq!(os_release_name(""), None);
    }

    #[test]
    fn iptables_backends_and_rules() {
        assert_eq!(backend_of("iptables v1.8.9 (nf_tables)"), Backend::NfTables);
        assert_eq!(backend_of("iptables v1.8.7 (legacy)"), Backend::Legacy);
        assert_eq!(backend_of("iptables v1.4.21"), Backend::Unknown);
        let save = "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 192.0.2.1/32 -j DROP\n-A f2b-sshd -j RETURN\nCOMMIT\n";
        assert_eq!(count_rules(save), 2);
        assert_eq!(count_rules(""), 0);
    }

    /// Everything but the nf_tables probe, which the namespace test runs (it would create a
    /// throwaway table in the host's namespace here).
    #[test]
    fn detection_never_fails() {
        let report = HostReport {
            hostname: "h".into(),
            distribution: distribution(),
            kernel: kernel_release(),
            nft: Err("not probed".into()),
            iptables: iptables(),
            neighbours: neighbours(&process_names()),
        };
        assert!(!report.kernel.is_empty() && report.kernel != "unknown");
        assert_eq!(report.neighbours.len(), 4);
        let text = report.to_string();
        for word in ["system:", "nf_tables:", "iptables:", "Fail2Ban:", "Plesk:"] {
            assert!(text.contains(word), "{word} in {text}");
        }
    }
}

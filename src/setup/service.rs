//! `ftagent --install-service`: the unit of `systemd/ftagent.service` (embedded), with
//! ExecStart pointing at this binary, written to /etc/systemd/system; then `systemctl
//! daemon-reload` and, with --enable, `systemctl enable --now`. Where a package installed the
//! unit (in /usr/lib/systemd/system or /lib/systemd/system) for this very binary and the
//! default configuration, that unit is enabled instead and no copy is written. Everything that
//! could stop it half-way (no systemd, not root, a binary or path the sandbox hides, an invalid
//! configuration) is checked before anything is written.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{Config, DEFAULT_PATH};

use super::files::{write_atomically, Existing};
use super::SetupError;

/// The unit as kept in the repository: ExecStart is rewritten, the rest is installed as is.
pub(crate) const TEMPLATE: &str = include_str!("../../systemd/ftagent.service");
pub(crate) const UNIT_NAME: &str = "ftagent.service";
pub(crate) const UNIT_DIR: &str = "/etc/systemd/system";
/// Where packages install the unit: /usr/lib (AlmaLinux 9), /lib (Debian 12).
const PACKAGED_DIRS: &[&str] = &["/usr/lib/systemd/system", "/lib/systemd/system"];
/// The directories the unit provides (StateDirectory=, RuntimeDirectory=).
const STATE_DIR: &str = "/var/lib/ftagent";
const RUNTIME_DIR: &str = "/run/ftagent";
/// What the unit's ProtectHome= and PrivateTmp= hide from the service.
const HIDDEN: &[&str] = &["/home", "/root", "/run/user", "/tmp", "/var/tmp"];

/// What the unit is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitSpec {
    /// The binary ExecStart runs.
    pub(crate) exe: PathBuf,
    /// `-c PATH` when the configuration is not at the default path.
    pub(crate) config: Option<PathBuf>,
    /// Directories the configuration uses beyond the unit's own (ReadWritePaths=).
    pub(crate) writable: Vec<PathBuf>,
}

/// The unit text for `spec`.
pub(crate) fn render(spec: &UnitSpec) -> Result<String, SetupError> {
    let mut exec = format!("ExecStart={}", unit_path(&spec.exe)?);
    if let Some(config) = &spec.config {
        exec.push_str(&format!(" -c {}", unit_path(config)?));
    }
    exec.push_str(" run");
    let mut out = String::with_capacity(TEMPLATE.len() + 256);
    for line in TEMPLATE.lines() {
        if line.starts_with("ExecStart=") {
            out.push_str(&exec);
        } else {
            out.push_str(line);
        }
        out.push('\n');
        if line.starts_with("ReadWritePaths=") && !spec.writable.is_empty() {
            out.push_str(
                "# The state directory and control socket directory of the configuration.\n",
            );
            out.push_str("ReadWritePaths=");
            let dirs: Result<Vec<String>, SetupError> =
                spec.writable.iter().map(|d| unit_path(d)).collect();
            out.push_str(&dirs?.join(" "));
            out.push('\n');
        }
    }
    Ok(out)
}

/// A path as a unit file may hold it unquoted: absolute, and no character systemd would
/// read as a separator, quote, escape or specifier.
fn unit_path(path: &Path) -> Result<String, SetupError> {
    let text = path.to_string_lossy();
    let plain = path.is_absolute()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+-@".contains(&b));
    if plain {
        Ok(text.into_owned())
    } else {
        Err(SetupError::Input(format!(
            "{text:?}: a path in the unit must be absolute and made of letters, digits and /._+-@"
        )))
    }
}

/// The unit for this binary and `config`, read from `config_path` (the default when None),
/// and the problems a real installation would refuse (paths the sandbox hides).
pub(crate) fn spec_for(
    config_path: Option<&Path>,
    config: &Config,
) -> Result<(UnitSpec, Vec<String>), SetupError> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|source| SetupError::Io {
            what: "finding this program's path".into(),
            source,
        })?;
    let config_file = config_path
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
        .filter(|p| p != Path::new(DEFAULT_PATH));
    let mut writable = Vec::new();
    let state = &config.agent.state_dir;
    if state != Path::new(STATE_DIR) {
        writable.push(state.clone());
    }
    let socket_dir = config.agent.control_socket.parent().map(Path::to_path_buf);
    if let Some(dir) = socket_dir.filter(|d| d != Path::new(RUNTIME_DIR) && !writable.contains(d)) {
        writable.push(dir);
    }
    let mut problems = Vec::new();
    let mut check = |what: &str, path: &Path| {
        if let Some(hidden) = HIDDEN.iter().find(|h| path.starts_with(h)) {
            problems.push(format!(
                "{what} {} is under {hidden}, which the service's sandbox hides (ProtectHome=, PrivateTmp=)",
                path.display()
            ));
        }
    };
    check("the binary", &exe);
    if let Some(c) = &config_file {
        check("the configuration", c);
    }
    for dir in &writable {
        check("the directory", dir);
    }
    let spec = UnitSpec {
        exe,
        config: config_file,
        writable,
    };
    Ok((spec, problems))
}

/// The unit a package installed, when there is one that runs `spec`'s binary with the default
/// configuration and directories: it is enabled as it is rather than copied.
pub(crate) fn packaged_unit(spec: &UnitSpec) -> Option<PathBuf> {
    packaged_unit_in(spec, PACKAGED_DIRS)
}

fn packaged_unit_in(spec: &UnitSpec, dirs: &[&str]) -> Option<PathBuf> {
    if spec.config.is_some() || !spec.writable.is_empty() {
        return None;
    }
    let want = format!("ExecStart={} run", unit_path(&spec.exe).ok()?);
    dirs.iter()
        .map(|dir| Path::new(dir).join(UNIT_NAME))
        .find(|path| {
            std::fs::read_to_string(path).is_ok_and(|text| text.lines().any(|l| l == want))
        })
}

/// Whether systemd is the init system (as sd_booted(3) tells).
pub(crate) fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Refuses, before anything is written, what would leave an installation half-done.
pub(crate) fn check_installable(problems: &[String]) -> Result<(), SetupError> {
    if !crate::daemon::is_root() {
        return Err(SetupError::Permission);
    }
    if !systemd_running() {
        return Err(SetupError::no_systemd());
    }
    if let Some(first) = problems.first() {
        return Err(SetupError::Input(format!(
            "{first}; install it elsewhere first, e.g. `install -m 0755 {} /usr/local/sbin/ftagent`, and run that one",
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "ftagent".into())
        )));
    }
    Ok(())
}

/// An installation checked and ready to be applied: nothing is written yet.
#[derive(Debug)]
pub(crate) enum Installation {
    /// A unit to write in /etc/systemd/system.
    Write {
        spec: UnitSpec,
        text: String,
        path: PathBuf,
        /// The unit file there now, if any.
        existing: Option<String>,
    },
    /// The packaged unit at this path, to enable as it is.
    Packaged { path: PathBuf },
}

/// Checks everything an installation needs (root, systemd, paths the sandbox can see, a unit
/// file that is ours to replace) and renders the unit, writing nothing. A packaged unit that
/// runs this binary with the default configuration is used as it is, unless a unit in
/// /etc/systemd/system (which would override it) is there already.
pub(crate) fn prepare(
    config_path: Option<&Path>,
    config: &Config,
    force: bool,
) -> Result<Installation, SetupError> {
    let (spec, problems) = spec_for(config_path, config)?;
    check_installable(&problems)?;
    let path = Path::new(UNIT_DIR).join(UNIT_NAME);
    if !path.exists() {
        if let Some(packaged) = packaged_unit(&spec) {
            return Ok(Installation::Packaged { path: packaged });
        }
    }
    let text = render(&spec)?;
    let existing = std::fs::read_to_string(&path).ok();
    let differs = existing.as_deref().is_some_and(|e| e != text);
    if (differs || (existing.is_none() && path.exists())) && !force {
        return Err(SetupError::Exists { path });
    }
    Ok(Installation::Write {
        spec,
        text,
        path,
        existing,
    })
}

impl Installation {
    /// Writes the unit (if it changed), creates the directories it names, reloads systemd
    /// (taking a new unit back out if that fails) and with `enable` enables and starts it; or
    /// enables the packaged unit. Prints what it did.
    pub(crate) fn apply(self, enable: bool) -> Result<(), SetupError> {
        let (spec, text, path, existing) = match self {
            Installation::Packaged { path } => return enable_packaged(&path, enable),
            Installation::Write {
                spec,
                text,
                path,
                existing,
            } => (spec, text, path, existing),
        };
        let changed = existing.as_deref() != Some(text.as_str());
        if changed {
            let mode = if path.exists() {
                Existing::Replace
            } else {
                Existing::Keep
            };
            write_atomically(&path, &text, 0o644, mode)?;
        }
        for dir in &spec.writable {
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(dir)
                .map_err(|source| SetupError::Io {
                    what: format!("creating {}", dir.display()),
                    source,
                })?;
        }
        if let Err(e) = systemctl(&["daemon-reload"]) {
            if existing.is_none() {
                let _ = std::fs::remove_file(&path);
            }
            return Err(e);
        }
        let exec = text
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap_or_default();
        let done = match (&existing, changed) {
            (_, false) => "unchanged:",
            (Some(_), true) => "replaced",
            (None, true) => "installed",
        };
        super::print(&format!("{done} {} ({exec})\n", path.display()))?;
        if !enable {
            return super::print("start it with `systemctl enable --now ftagent`\n");
        }
        systemctl(&["enable", "--now", UNIT_NAME])?;
        super::print(
            "enabled and started; see `systemctl status ftagent` and `journalctl -u ftagent`\n",
        )?;
        if changed && existing.is_some() {
            super::print(
                "if it was already running: `systemctl restart ftagent` applies the new unit\n",
            )?;
        }
        Ok(())
    }
}

/// The packaged unit: nothing to write; systemd re-reads its units and, with `enable`, enables
/// and starts it.
fn enable_packaged(path: &Path, enable: bool) -> Result<(), SetupError> {
    systemctl(&["daemon-reload"])?;
    super::print(&format!(
        "the packaged unit {} runs this binary\n",
        path.display()
    ))?;
    if !enable {
        return super::print("start it with `systemctl enable --now ftagent`\n");
    }
    systemctl(&["enable", "--now", UNIT_NAME])?;
    super::print(
        "enabled and started; see `systemctl status ftagent` and `journalctl -u ftagent`\n",
    )
}

fn systemctl(args: &[&str]) -> Result<(), SetupError> {
    let command = format!("systemctl {}", args.join(" "));
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| SetupError::Systemctl {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SetupError::Systemctl {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_points_at_the_binary_and_config() {
        let spec = UnitSpec {
            exe: "/usr/local/sbin/ftagent".into(),
            config: Some("/srv/ftagent/ftagent.toml".into()),
            writable: vec!["/srv/ftagent/state".into(), "/srv/ftagent/run".into()],
        };
        let unit = render(&spec).unwrap();
        assert_eq!(
            unit.lines()
                .filter(|l| l.starts_with("ExecStart="))
                .collect::<Vec<_>>(),
            ["ExecStart=/usr/local/sbin/ftagent -c /srv/ftagent/ftagent.toml run"]
        );
        assert!(unit.contains("\nReadWritePaths=/srv/ftagent/state /srv/ftagent/run\n"));
        // Everything else is the template's.
        assert_eq!(unit.lines().count(), TEMPLATE.lines().count() + 2);
        let plain = render(&UnitSpec {
            exe: "/opt/ftagent/bin/ftagent".into(),
            config: None,
            writable: vec![],
        })
        .unwrap();
        assert!(plain.contains("\nExecStart=/opt/ftagent/bin/ftagent run\n"));
        assert_eq!(plain.lines().count(), TEMPLATE.lines().count());
    }

    #[test]
    fn odd_paths_are_refused() {
        for exe in [
            "/opt/my ftagent",
            "/opt/100%",
            "relative/ftagent",
            "/opt/\"x\"",
            "/opt/a\nb",
        ] {
            let spec = UnitSpec {
                exe: exe.into(),
                config: None,
                writable: vec![],
            };
            assert!(
                matches!(render(&spec), Err(SetupError::Input(_))),
                "{exe:?}"
            );
        }
    }

    /// Every line of the unit has a comment above it (or is a section header).
    #[test]
    fn every_line_is_commented() {
        let mut previous = "";
        for line in TEMPLATE.lines() {
            if line.contains('=') && !line.starts_with('#') {
                assert!(previous.starts_with('#'), "{line:?} has no comment");
            }
            previous = line;
        }
        // Settings the issue asks for.
        for want in [
            "Type=notify",
            "NotifyAccess=main",
            "WatchdogSec=",
            "Restart=on-failure",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "StateDirectory=ftagent",
            "RuntimeDirectory=ftagent",
            "ReadWritePaths=/proc/sys/net/ipv4/tcp_syncookies",
            "After=network-online.target nftables.service firewalld.service",
            "ReloadPropagatedFrom=nftables.service firewalld.service",
        ] {
            assert!(TEMPLATE.lines().any(|l| l.starts_with(want)), "{want}");
        }
    }

    /// Issue 17: a packaged unit is used only when it runs this binary with the default
    /// configuration and directories.
    #[test]
    fn the_packaged_unit_is_used_when_it_runs_this_binary() {
        let dir = std::env::temp_dir().join(format!("fta-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(UNIT_NAME), TEMPLATE).unwrap();
        let dirs = ["/nonexistent/ftagent-units", dir.to_str().unwrap()];
        let packaged = UnitSpec {
            exe: "/usr/sbin/ftagent".into(),
            config: None,
            writable: vec![],
        };
        assert_eq!(
            packaged_unit_in(&packaged, &dirs),
            Some(dir.join(UNIT_NAME))
        );
        let elsewhere = UnitSpec {
            exe: "/usr/local/sbin/ftagent".into(),
            ..packaged.clone()
        };
        assert_eq!(packaged_unit_in(&elsewhere, &dirs), None);
        let other_config = UnitSpec {
            config: Some("/srv/ftagent.toml".into()),
            ..packaged.clone()
        };
        assert_eq!(packaged_unit_in(&other_config, &dirs), None);
        let other_dirs = UnitSpec {
            writable: vec!["/srv/state".into()],
            ..packaged
        };
        assert_eq!(packaged_unit_in(&other_dirs, &dirs), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The unit's directories are the configuration's defaults.
    #[test]
    fn unit_directories_match_the_default_configuration() {
        let config = Config::default();
        assert_eq!(config.agent.state_dir, Path::new(STATE_DIR));
        assert_eq!(
            config.agent.control_socket.parent(),
            Some(Path::new(RUNTIME_DIR))
        );
    }
}

//! `ftagent --setup`: look at the host, propose the services that listen and a safelist, ask
//! (or take `--yes` and the answer flags), write the configuration atomically — never over an
//! existing one without asking or `--force` — and optionally install and start the service.
//! `ftagent --install-service`: the systemd unit alone (see `service`).
//!
//! - [`host`]: distribution, kernel, nf_tables features, iptables backend, neighbours;
//! - [`proposal`]: services from the listening sockets, the safelist from the session, routes
//!   and resolvers;
//! - [`prompt`]: the questions; [`render`]: the configuration text; [`files`]: atomic writes;
//! - [`service`]: the unit and its installation.

mod files;
pub(crate) mod host;
mod prompt;
pub(crate) mod proposal;
pub(crate) mod render;
pub(crate) mod service;

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cli::{ModeArg, SetupArgs};
use crate::config::{Config, ConfigError, Mode, DEFAULT_PATH};
use files::{write_atomically, Existing};
use prompt::{safelist_answer, Prompt};
use proposal::{check_services, SafeSources};
use render::{Answers, Context};

/// Which of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Setup,
    InstallService,
}

/// Why `--setup` or `--install-service` did not finish; nothing half-done is left.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// An answer or flag that cannot be used, or no way to ask.
    #[error("{0}")]
    Input(String),
    #[error("permission denied: writing the configuration and installing the service need root")]
    Permission,
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{} exists and was left as it is (--force replaces it)", .path.display())]
    Exists { path: PathBuf },
    #[error("systemd is not the init system here (no /run/systemd/system; PID 1 is {init:?}): nothing was installed; start `ftagent run` from the init system in use")]
    NoSystemd { init: String },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("`{command}` failed: {message}")]
    Systemctl { command: String, message: String },
}

impl SetupError {
    pub(crate) fn no_systemd() -> SetupError {
        let init = std::fs::read_to_string("/proc/1/comm")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        SetupError::NoSystemd { init }
    }
}

pub fn run(action: Action, config_path: Option<&Path>, args: &SetupArgs) -> Result<(), SetupError> {
    match action {
        Action::Setup => setup(config_path, args),
        Action::InstallService => {
            let (config, _) = Config::load(config_path)?;
            if args.dry_run {
                let (spec, problems) = service::spec_for(config_path, &config)?;
                for p in problems {
                    eprintln!("ftagent: warning: {p}: a real installation refuses this");
                }
                let own = Path::new(service::UNIT_DIR).join(service::UNIT_NAME);
                let packaged = service::packaged_unit(&spec).filter(|_| !own.exists());
                if let Some(path) = packaged {
                    eprintln!(
                        "ftagent: the packaged unit {} would be enabled:",
                        path.display()
                    );
                    let text = std::fs::read_to_string(&path).map_err(|source| SetupError::Io {
                        what: format!("reading {}", path.display()),
                        source,
                    })?;
                    return print(&text);
                }
                return print(&service::render(&spec)?);
            }
            service::prepare(config_path, &config, args.force)?.apply(args.enable)
        }
    }
}

/// Prints `text` on standard output (its reader may have gone: an error, not a panic).
fn print(text: &str) -> Result<(), SetupError> {
    crate::terminal::print(text).map_err(|source| SetupError::Io {
        what: "writing to standard output".into(),
        source,
    })
}

fn setup(config_path: Option<&Path>, args: &SetupArgs) -> Result<(), SetupError> {
    let path = config_path.unwrap_or(Path::new(DEFAULT_PATH));
    // The answers given as flags are checked before anything is looked at or written.
    let given_services = match &args.services {
        Some(list) => Some(check_services(list).map_err(SetupError::Input)?),
        None => None,
    };
    let given_safelist = match &args.safelist {
        Some(list) => {
            Some(safelist_answer(list.iter().map(|e| Ok(*e))).map_err(SetupError::Input)?)
        }
        None => None,
    };
    if !args.dry_run {
        writable(path)?;
    }
    if args.enable && !args.dry_run && !service::systemd_running() {
        return Err(SetupError::no_systemd());
    }
    let interactive = !args.yes;
    if interactive && !io::stdin().is_terminal() {
        return Err(SetupError::Input(
            "--setup asks its questions on a terminal, and stdin is not one: add --yes to take \
             what is detected, and --services, --safelist, --mode or --enable to answer otherwise"
                .into(),
        ));
    }
    // The human part goes to stderr when stdout carries the configuration (--dry-run).
    let mut out: Box<dyn Write> = if args.dry_run {
        Box::new(io::stderr())
    } else {
        Box::new(io::stdout())
    };
    let mut stdin = io::stdin().lock();

    let exists = path.symlink_metadata().is_ok();
    // The commented file a package installs, as installed, sets nothing: it is replaced
    // without asking, and not kept.
    let sets_nothing = exists && is_packaged_file(path);
    let replace = exists && !args.dry_run && {
        sets_nothing
            || args.force
            || (interactive
                && Prompt::new(&mut stdin, &mut out).confirm(
                    &format!(
                        "{} exists. Replace it (the current one is kept as {})?",
                        path.display(),
                        backup_path(path).display()
                    ),
                    false,
                )?)
    };
    if exists && !args.dry_run && !replace {
        return Err(SetupError::Exists {
            path: path.to_path_buf(),
        });
    }

    let _ = writeln!(out, "Looking at this host:");
    let host = host::detect();
    let _ = write!(out, "{host}");
    let session = proposal::ssh_session_from_env();
    let ssh_port = session.map_or(22, |s| s.server_port);
    let (listeners, mut warnings) = proposal::listeners();
    let found = proposal::services(&listeners, ssh_port);
    let (sources, more) = SafeSources::read(session, ssh_port);
    warnings.extend(more);
    for w in warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let proposed = proposed_services(&found, &mut out);

    let services = match given_services {
        Some(list) => list,
        None if interactive => Prompt::new(&mut stdin, &mut out).services(&proposed)?,
        None => proposed,
    };
    let proposed_safelist = proposal::safelist(&sources);
    let safelist = match given_safelist {
        Some(list) => list,
        None if interactive => Prompt::new(&mut stdin, &mut out).safelist(&proposed_safelist)?,
        None => proposed_safelist,
    };
    let mode = match args.mode {
        Some(ModeArg::Mitigate) => Mode::Mitigate,
        Some(ModeArg::Monitor) => Mode::Monitor,
        None if interactive => Prompt::new(&mut stdin, &mut out).mode()?,
        None => Mode::Mitigate,
    };
    let answers = Answers {
        services,
        safelist,
        mode,
        ssh_port,
    };
    let text = render::config_text(
        &answers,
        &Context {
            host: &host,
            proposal: &found,
            path,
            written: SystemTime::now(),
        },
    );
    let config = Config::from_toml(&text, path).map_err(|e| {
        SetupError::Input(format!(
            "the configuration made of these answers is refused: {e}"
        ))
    })?;
    if args.dry_run {
        return print(&text);
    }

    let enable = args.enable
        || (interactive
            && service::systemd_running()
            && crate::daemon::is_root()
            && Prompt::new(&mut stdin, &mut out).confirm(
                "\nInstall, enable and start the systemd service now?",
                false,
            )?);
    // The service is checked before the configuration is written, so that neither is left
    // half-done.
    let installation = if enable {
        Some(service::prepare(config_path, &config, args.force)?)
    } else {
        None
    };
    if replace && !sets_nothing {
        let backup = backup_path(path);
        std::fs::copy(path, &backup).map_err(|source| SetupError::Io {
            what: format!("keeping {} as {}", path.display(), backup.display()),
            source,
        })?;
    }
    let existing = if replace {
        Existing::Replace
    } else {
        Existing::Keep
    };
    write_atomically(path, &text, 0o600, existing)?;
    let _ = writeln!(out, "\nwrote {}", path.display());
    let c = config_path.map_or(String::new(), |p| format!(" -c {}", p.display()));
    if let Some(installation) = installation {
        let _ = out.flush();
        return installation.apply(true);
    }
    let start = if service::systemd_running() {
        format!("`ftagent{c} --install-service --enable`")
    } else {
        format!("`ftagent{c} run` from the init system (systemd does not run here)")
    };
    let _ = writeln!(out, "next: `ftagent{c} config check`, then {start}");
    Ok(())
}

/// The services to propose (printed with where they listen): the well-known listening ones,
/// or the defaults when none listens.
fn proposed_services(
    found: &proposal::ServiceProposal,
    out: &mut dyn Write,
) -> Vec<crate::cli::ServiceArg> {
    let _ = writeln!(out, "\nListening beyond loopback:");
    for p in &found.proposed {
        let on: Vec<String> = p.listening_on.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  {:<10} {:<16} on {}",
            format!("{}/{}", p.service.ports, p.service.proto),
            p.name,
            on.join(", ")
        );
    }
    if !found.others.is_empty() {
        let others: Vec<String> = found
            .others
            .iter()
            .map(|(port, proto)| format!("{port}/{proto}"))
            .collect();
        let _ = writeln!(
            out,
            "  not proposed (not well-known): {}",
            others.join(", ")
        );
    }
    if found.proposed.is_empty() {
        let _ = writeln!(
            out,
            "  no well-known service: proposing the defaults (22, 80 and 443 over TCP)"
        );
        return Config::default()
            .services
            .iter()
            .map(|s| crate::cli::ServiceArg {
                ports: s.ports,
                proto: s.proto,
            })
            .collect();
    }
    found.proposed.iter().map(|p| p.service).collect()
}

/// Refuses early (before any question) a configuration path this process cannot write: the
/// nearest existing directory on its way must be writable.
fn writable(path: &Path) -> Result<(), SetupError> {
    use std::os::unix::ffi::OsStrExt;
    let Some(dir) = path.ancestors().skip(1).find(|d| d.is_dir()) else {
        return Ok(());
    };
    let Ok(c_dir) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return Ok(());
    };
    if crate::sys::may_write(&c_dir) {
        Ok(())
    } else {
        Err(SetupError::Permission)
    }
}

/// Whether the file at `path` is the commented configuration a package installs, unchanged
/// (it sets no key).
fn is_packaged_file(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text == crate::config::commented_file())
}

/// Where a replaced configuration is kept.
fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

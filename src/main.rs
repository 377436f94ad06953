//! Entry point: parse and validate the arguments and configuration first, then act, and map
//! every outcome to an exit code here and nowhere else: 0 success, 1 a runtime failure, 2 bad
//! input (arguments, configuration) or missing privileges.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ftagent::alloc::CountingAllocator;

use ftagent::cli::{Cli, Command, ConfigCommand, RulesCommand};
use ftagent::config::{self, Config, ConfigError, ConfigSource};
use ftagent::control::{self, Request, Response};
use ftagent::daemon::{self, DaemonError};
use ftagent::netlink::{host, shim, Nft, NlError};
use ftagent::ruleset::change::Change;
use ftagent::ruleset::{SetRole, TABLE};
use ftagent::setup::{self, SetupError};
use ftagent::status::Status;
use ftagent::terminal::{self, LiveScreen};

/// Counts allocations so the daemon can report that its ticks make none.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Everything that can end a command unsuccessfully.
enum Failure {
    /// Bad input: exit 2.
    Input(String),
    /// Not root / no CAP_NET_ADMIN: exit 2.
    Permission,
    /// The system refused or failed: exit 1.
    Runtime(String),
    /// Standard output could not be written: exit 1, but 0 and nothing said when its reader
    /// went away (`| head`, `| grep -q`), as for any filter.
    Output(std::io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Input(m) | Failure::Runtime(m) => f.write_str(m),
            Failure::Permission => {
                f.write_str("permission denied: ftagent needs root (or CAP_NET_ADMIN)")
            }
            Failure::Output(e) => write!(f, "standard output: {e}"),
        }
    }
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Output(e) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Failure::Runtime(_) | Failure::Output(_) => ExitCode::from(1),
            Failure::Input(_) | Failure::Permission => ExitCode::from(2),
        }
    }

    /// Whether it is worth a message (a reader that went away is not).
    fn is_quiet(&self) -> bool {
        matches!(self, Failure::Output(e) if e.kind() == ErrorKind::BrokenPipe)
    }
}

/// Prints `text` on standard output.
fn out(text: &str) -> Result<(), Failure> {
    terminal::print(text).map_err(Failure::Output)
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::Input(e.to_string())
    }
}

impl From<NlError> for Failure {
    fn from(e: NlError) -> Failure {
        if e.errno() == Some(libc::EPERM) && !daemon::is_root() {
            Failure::Permission
        } else {
            Failure::Runtime(e.to_string())
        }
    }
}

impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Failure {
        match e {
            DaemonError::Netlink(e) => e.into(),
            DaemonError::Control { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Failure::Permission
            }
            other => Failure::Runtime(other.to_string()),
        }
    }
}

impl From<SetupError> for Failure {
    fn from(e: SetupError) -> Failure {
        match e {
            SetupError::Input(_) => Failure::Input(e.to_string()),
            SetupError::Permission => Failure::Permission,
            SetupError::Config(e) => e.into(),
            SetupError::Io { source, .. } if source.kind() == ErrorKind::BrokenPipe => {
                Failure::Output(source)
            }
            SetupError::Exists { .. }
            | SetupError::NoSystemd { .. }
            | SetupError::Io { .. }
            | SetupError::Systemctl { .. } => Failure::Runtime(e.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.is_quiet() {
                eprintln!("ftagent: {failure}");
            }
            failure.exit_code()
        }
    }
}

fn execute(cli: Cli) -> Result<(), Failure> {
    let Some(command) = cli.command else {
        let action = if cli.setup {
            setup::Action::Setup
        } else {
            setup::Action::InstallService
        };
        return Ok(setup::run(action, cli.config.as_deref(), &cli.answers)?);
    };
    // What the configuration can hold, read from the program itself: no file needed.
    match command {
        Command::Config(ConfigCommand::Defaults) => {
            return out(&config::default_file());
        }
        Command::Config(ConfigCommand::Keys) => {
            return out(&config::keys_text());
        }
        Command::PackageFiles { dir } => {
            let written = ftagent::manual::write_package_files(&dir)
                .map_err(|e| Failure::Runtime(format!("{}: {e}", dir.display())))?;
            let listed: String = written
                .iter()
                .map(|path| format!("{}\n", path.display()))
                .collect();
            return out(&listed);
        }
        _ => {}
    }
    let (config, source) = match Config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        // status and top only ask the daemon: they work with a file that no longer loads (a
        // failed reload is what they then show), finding the socket as best they can.
        Err(e) if matches!(command, Command::Status { .. } | Command::Top { .. }) => {
            let mut config = Config::default();
            config.agent.control_socket = socket_in(cli.config.as_deref());
            eprintln!(
                "ftagent: warning: {e}; asking the daemon on {}",
                config.agent.control_socket.display()
            );
            (config, ConfigSource::Defaults)
        }
        Err(e) => return Err(e.into()),
    };
    match command {
        Command::Config(ConfigCommand::Defaults | ConfigCommand::Keys)
        | Command::PackageFiles { .. } => Ok(()),
        Command::Config(ConfigCommand::Check) => match source {
            ConfigSource::File(path) => out(&format!("{}: ok\n", path.display())),
            ConfigSource::Defaults => {
                out("no configuration file: the embedded defaults are in use (ok)\n")
            }
        },
        Command::Run { trace_samples } => Ok(daemon::run(config, cli.config, trace_samples)?),
        Command::Rules(RulesCommand::Dump) => {
            let mut nft = Nft::open()?;
            match nft.table_state()? {
                Some(state) => out(&state.render())?,
                None => eprintln!("ftagent: no table inet {TABLE} in this network namespace"),
            }
            out(&shim::render_installed())
        }
        Command::Rules(RulesCommand::Flush) => {
            if let Some(reply) = ask_daemon(&config, &Request::Flush {})? {
                return reply;
            }
            let mut nft = Nft::open()?;
            match nft.remove_table() {
                Ok(true) => out(&format!("table inet {TABLE} removed\n"))?,
                Ok(false) => out(&format!("no table inet {TABLE}: nothing to remove\n"))?,
                Err(e) if e.errno() == Some(libc::EPERM) && daemon::is_root() => {
                    return Err(Failure::Runtime(format!(
                        "table inet {TABLE} is held by a running ftagent whose control socket {} does not answer; stop that process first",
                        config.agent.control_socket.display()
                    )))
                }
                Err(e) => return Err(e.into()),
            }
            for what in shim::remove_everywhere().map_err(|e| Failure::Runtime(e.to_string()))? {
                out(&format!("{what} removed\n"))?;
            }
            Ok(())
        }
        Command::Ban {
            address,
            file,
            duration,
        } => {
            let timeout = duration.unwrap_or(config.mitigation.ban_duration);
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            // The daemon checks again with the addresses it knows.
            let own = host::own_addresses().unwrap_or_default();
            let (cidrs, timeout) = match (address, file) {
                (Some(address), _) => daemon::parse_ban(&address, timeout_ms, &config, &own)
                    .map(|(cidr, timeout)| (vec![cidr], timeout)),
                (None, Some(path)) => read_ban_list(&path).and_then(|(text, name)| {
                    daemon::parse_ban_list(&text, &name, timeout_ms, &config, &own)
                }),
                (None, None) => Err("an address or --file is needed".to_string()),
            }
            .map_err(Failure::Input)?;
            let request = match cidrs.as_slice() {
                [cidr] => Request::Ban {
                    cidr: cidr.to_string(),
                    timeout_ms,
                },
                _ => Request::BanMany {
                    cidrs: cidrs.iter().map(ToString::to_string).collect(),
                    timeout_ms,
                },
            };
            if let Some(reply) = ask_daemon(&config, &request)? {
                return reply;
            }
            let mut nft = Nft::open()?;
            let features = daemon::features(&mut nft, &config)?;
            nft.ban_many(&cidrs, timeout, features)?;
            let changes: Vec<Change> = cidrs
                .iter()
                .map(|&cidr| Change::Ban { cidr, timeout })
                .collect();
            shim::mirror_without_daemon(&changes).map_err(|e| Failure::Runtime(e.to_string()))?;
            let t = humantime::format_duration(timeout);
            match cidrs.as_slice() {
                [cidr] => out(&format!(
                    "banned {cidr} in {} for {t}\n",
                    SetRole::for_ban(cidr).name()
                )),
                _ => out(&format!(
                    "banned {} addresses and prefixes for {t}\n",
                    cidrs.len()
                )),
            }
        }
        Command::Unban { address } => {
            let cidr: ftagent::addr::Cidr = address
                .parse()
                .map_err(|e| Failure::Input(format!("{address}: {e}")))?;
            if let Some(reply) = ask_daemon(
                &config,
                &Request::Unban {
                    cidr: cidr.to_string(),
                },
            )? {
                return reply;
            }
            let mut nft = Nft::open()?;
            if nft.unban(cidr)? {
                shim::mirror_without_daemon(&[Change::Unban { cidr }])
                    .map_err(|e| Failure::Runtime(e.to_string()))?;
                out(&format!("unbanned {cidr}\n"))
            } else {
                Err(Failure::Runtime(format!("{cidr} is not banned")))
            }
        }
        Command::Lift { incident, measure } => {
            ftagent::mitigate::Lift::parse(measure.as_deref()).map_err(Failure::Input)?;
            let request = Request::Lift { incident, measure };
            match ask_daemon(&config, &request)? {
                Some(reply) => reply,
                None => Err(Failure::Runtime(format!(
                    "no ftagent is running (control socket {}): there is nothing to lift",
                    config.agent.control_socket.display()
                ))),
            }
        }
        Command::Status { json } => status(&config.agent.control_socket, json),
        Command::Top { once } => top(&config.agent.control_socket, once),
    }
}

fn status(socket: &Path, json: bool) -> Result<(), Failure> {
    let status = daemon_status(socket)?;
    if json {
        out(&format!(
            "{}\n",
            serde_json::to_string(&status).unwrap_or_default()
        ))
    } else {
        out(&status.render())
    }
}

/// The live view, redrawn every second until q or Ctrl-C; one screen when stdout or stdin is
/// not a terminal, or with `once`.
fn top(socket: &Path, once: bool) -> Result<(), Failure> {
    let live =
        !once && terminal::is_tty(libc::STDOUT_FILENO) && terminal::is_tty(libc::STDIN_FILENO);
    if !live {
        return out(&daemon_status(socket)?.render_top(usize::MAX));
    }
    let terminal_error = |e: std::io::Error| Failure::Runtime(format!("terminal: {e}"));
    let screen = LiveScreen::enter().map_err(terminal_error)?;
    loop {
        let status = daemon_status(socket)?;
        screen
            .draw(&status.render_top(terminal::rows()))
            .map_err(terminal_error)?;
        if screen.quit_requested(std::time::Duration::from_secs(1)) {
            return Ok(());
        }
    }
}

/// The text of a ban list and the name its errors use: a file, or standard input for `-`.
fn read_ban_list(path: &Path) -> Result<(String, String), String> {
    let mut text = String::new();
    let (read, name) = if path == Path::new("-") {
        let read = std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text);
        (read, "-".to_string())
    } else {
        let read = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_to_string(&mut f, &mut text));
        (read, path.display().to_string())
    };
    let label = if name == "-" { "standard input" } else { &name };
    read.map_err(|e| format!("{label}: {e}"))?;
    Ok((text, name))
}

/// `agent.control_socket` of a configuration file that does not load, if it is still TOML.
fn socket_in(path: Option<&Path>) -> PathBuf {
    let path = path.unwrap_or(Path::new(ftagent::config::DEFAULT_PATH));
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| {
            Some(PathBuf::from(
                t.get("agent")?.get("control_socket")?.as_str()?,
            ))
        })
        .unwrap_or_else(|| Config::default().agent.control_socket)
}

/// The running daemon's status, with our own listing of its sets; an error when none runs.
fn daemon_status(path: &Path) -> Result<Status, Failure> {
    let mut status = reply_status(path)?;
    status.add_listing(
        Nft::open()
            .and_then(|mut nft| nft.sets())
            .map_err(|e| e.to_string()),
    );
    Ok(status)
}

fn reply_status(path: &Path) -> Result<Status, Failure> {
    match call_daemon(path, &Request::Status {})? {
        None => Err(Failure::Runtime(format!(
            "no ftagent is running (nothing listens on {})",
            path.display()
        ))),
        Some(Response {
            status: Some(status),
            ..
        }) => Ok(*status),
        Some(reply) if reply.denied => Err(Failure::Permission),
        Some(reply) => Err(Failure::Runtime(format!(
            "control socket {}: {}",
            path.display(),
            reply.message
        ))),
    }
}

/// Passes a request to the running daemon and prints its answer. Outer None: no daemon is
/// running.
fn ask_daemon(config: &Config, request: &Request) -> Result<Option<Result<(), Failure>>, Failure> {
    Ok(
        call_daemon(&config.agent.control_socket, request)?.map(|reply| {
            if reply.ok {
                out(&format!("{}\n", reply.message))
            } else if reply.denied {
                Err(Failure::Permission)
            } else {
                Err(Failure::Runtime(reply.message))
            }
        }),
    )
}

/// The daemon's reply to `request`; None when no daemon is running.
fn call_daemon(path: &Path, request: &Request) -> Result<Option<Response>, Failure> {
    control::call(path, request).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Failure::Permission
        } else {
            Failure::Runtime(format!("control socket {}: {e}", path.display()))
        }
    })
}

//! Entry point: parse and validate the arguments and configuration first, then act, and map
//! every outcome to an exit code here and nowhere else: 0 success, 1 a runtime failure, 2 bad
//! input (arguments, configuration) or missing privileges.

use std::fmt;
use std::io::Write as _;
use std::process::ExitCode;

use ftagent::alloc::CountingAllocator;

use ftagent::cli::{Cli, Command, ConfigCommand, RulesCommand};
use ftagent::config::{Config, ConfigError, ConfigSource};
use ftagent::control::{self, Request};
use ftagent::daemon::{self, DaemonError};
use ftagent::netlink::{Nft, NlError};
use ftagent::ruleset::TABLE;
use ftagent::setup::{self, SetupError};

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
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Input(m) | Failure::Runtime(m) => f.write_str(m),
            Failure::Permission => {
                f.write_str("permission denied: ftagent needs root (or CAP_NET_ADMIN)")
            }
        }
    }
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Runtime(_) => ExitCode::from(1),
            Failure::Input(_) | Failure::Permission => ExitCode::from(2),
        }
    }
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
            eprintln!("ftagent: {failure}");
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
    let (config, source) = Config::load(cli.config.as_deref())?;
    match command {
        Command::Config(ConfigCommand::Check) => {
            match source {
                ConfigSource::File(path) => println!("{}: ok", path.display()),
                ConfigSource::Defaults => {
                    println!("no configuration file: the embedded defaults are in use (ok)")
                }
            }
            Ok(())
        }
        Command::Run { trace_samples } => Ok(daemon::run(config, cli.config, trace_samples)?),
        Command::Rules(RulesCommand::Dump) => {
            let mut nft = Nft::open()?;
            match nft.table_state()? {
                Some(state) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(state.render().as_bytes());
                }
                None => eprintln!("ftagent: no table inet {TABLE} in this network namespace"),
            }
            Ok(())
        }
        Command::Rules(RulesCommand::Flush) => {
            if let Some(reply) = ask_daemon(&config, &Request::Flush)? {
                return reply;
            }
            let mut nft = Nft::open()?;
            match nft.remove_table() {
                Ok(true) => println!("table inet {TABLE} removed"),
                Ok(false) => println!("no table inet {TABLE}: nothing to remove"),
                Err(e) if e.errno() == Some(libc::EPERM) && daemon::is_root() => {
                    return Err(Failure::Runtime(format!(
                        "table inet {TABLE} is held by a running ftagent whose control socket {} does not answer; stop that process first",
                        config.agent.control_socket.display()
                    )))
                }
                Err(e) => return Err(e.into()),
            }
            Ok(())
        }
        Command::Ban { address, duration } => {
            let timeout = duration.unwrap_or(config.mitigation.ban_duration);
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            let (cidr, timeout) =
                daemon::parse_ban(&address, timeout_ms, &config).map_err(Failure::Input)?;
            let request = Request::Ban {
                cidr: cidr.to_string(),
                timeout_ms,
            };
            if let Some(reply) = ask_daemon(&config, &request)? {
                return reply;
            }
            let mut nft = Nft::open()?;
            let features = daemon::features(&mut nft, &config)?;
            let role = nft.ban(cidr, timeout, features)?;
            println!(
                "banned {cidr} in {} for {}",
                role.name(),
                humantime::format_duration(timeout)
            );
            Ok(())
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
                println!("unbanned {cidr}");
                Ok(())
            } else {
                Err(Failure::Runtime(format!("{cidr} is not banned")))
            }
        }
    }
}

/// Passes a request to the running daemon. Outer None: no daemon is running.
fn ask_daemon(config: &Config, request: &Request) -> Result<Option<Result<(), Failure>>, Failure> {
    let path = &config.agent.control_socket;
    match control::call(path, request) {
        Ok(None) => Ok(None),
        Ok(Some(reply)) if reply.ok => {
            println!("{}", reply.message);
            Ok(Some(Ok(())))
        }
        Ok(Some(reply)) => Ok(Some(Err(Failure::Runtime(reply.message)))),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(Failure::Permission),
        Err(e) => Err(Failure::Runtime(format!(
            "control socket {}: {e}",
            path.display()
        ))),
    }
}

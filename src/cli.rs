//! Command-line arguments: parsing and validation only. Nothing here touches the system; `main`
//! turns the parsed command into actions and decides the exit code.

use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::addr::Cidr;
use crate::config::{PortRange, Proto};

/// ftagent: nftables-native DDoS detection and mitigation sidecar.
///
/// Detects volumetric and connection floods (UDP, SYN, amplification, HTTP, Slowloris,
/// distributed) and drops them in its own nft table, `table inet ftagent`, beside Fail2Ban,
/// which keeps credential attacks. Every ban has a timeout.
#[derive(Debug, Parser)]
#[command(name = "ftagent", version, about, long_about = None, propagate_version = true)]
#[command(arg_required_else_help = true)]
#[command(group(ArgGroup::new("action").args(["setup", "install_service"])))]
pub struct Cli {
    /// Configuration file [default: /etc/ftagent/ftagent.toml if it exists, else the
    /// embedded defaults]
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Detect this host's services, propose them and a safelist, and write the configuration
    /// (to --config, default /etc/ftagent/ftagent.toml); asks first unless --yes
    #[arg(long)]
    pub setup: bool,

    /// Install systemd/ftagent.service for this binary in /etc/systemd/system, or use the
    /// packaged unit when it runs this binary, and reload systemd (--enable: also enable and
    /// start it)
    #[arg(long)]
    pub(crate) install_service: bool,

    #[command(flatten)]
    pub answers: SetupArgs,

    /// A command; none when --setup or --install-service is given
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The answers of `--setup` given on the command line, and how to install.
#[derive(Debug, Clone, Default, Args)]
pub struct SetupArgs {
    /// Do not ask: take the answers below, or what was detected for those not given
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,

    /// Service ports to protect, e.g. 22,80,443,53/udp,8000-8100/tcp [default: the
    /// listening ones among the well-known services]
    #[arg(long, value_name = "PORT[/PROTO],...", value_delimiter = ',', value_parser = parse_service)]
    pub(crate) services: Option<Vec<ServiceArg>>,

    /// Addresses and prefixes never to drop, e.g. 203.0.113.7,2001:db8::/48, or `none`
    /// [default: your SSH client, the default gateways, the DNS resolvers]
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',', value_parser = parse_safelist_entry)]
    pub(crate) safelist: Option<Vec<SafelistArg>>,

    /// `mitigate` (drop floods) or `monitor` (only report what would be done)
    /// [default: mitigate]
    #[arg(long, value_enum)]
    pub(crate) mode: Option<ModeArg>,

    /// Replace an existing configuration (--setup) or unit file (--install-service)
    #[arg(long)]
    pub(crate) force: bool,

    /// Install, enable and start the systemd service (with --setup: after writing the
    /// configuration)
    #[arg(long)]
    pub(crate) enable: bool,

    /// Print the configuration or unit that would be written, and change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// One `--services` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServiceArg {
    pub(crate) ports: PortRange,
    pub(crate) proto: Proto,
}

/// One `--safelist` entry: a CIDR, or `none` for an empty safelist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SafelistArg {
    Cidr(Cidr),
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ModeArg {
    Mitigate,
    Monitor,
}

impl SetupArgs {
    /// The answers belong to --setup; --force, --enable and --dry-run to either action.
    fn check(&self, setup: bool, action: bool) -> Result<(), clap::Error> {
        let answers = [
            ("--yes", self.yes),
            ("--services", self.services.is_some()),
            ("--safelist", self.safelist.is_some()),
            ("--mode", self.mode.is_some()),
        ];
        let options = [
            ("--force", self.force),
            ("--enable", self.enable),
            ("--dry-run", self.dry_run),
        ];
        let misplaced = answers
            .iter()
            .map(|&(flag, given)| (flag, given && !setup, "--setup"))
            .chain(
                options
                    .iter()
                    .map(|&(flag, given)| (flag, given && !action, "--setup or --install-service")),
            )
            .find(|&(_, wrong, _)| wrong);
        match misplaced {
            Some((flag, _, owner)) => Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                format!("{flag} belongs to {owner}"),
            )),
            None => Ok(()),
        }
    }
}

impl Cli {
    /// Parses the process arguments: a command, or one of --setup and --install-service.
    pub fn parse_args() -> Result<Cli, clap::Error> {
        Cli::checked(Cli::try_parse()?)
    }

    /// Like [`Cli::parse_args`], from the given arguments.
    #[cfg(test)]
    pub(crate) fn parse_args_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::checked(Cli::try_parse_from(args)?)
    }

    fn checked(cli: Cli) -> Result<Cli, clap::Error> {
        let action = cli.setup || cli.install_service;
        match (&cli.command, action) {
            (None, false) => Err(Cli::command().error(
                ErrorKind::MissingSubcommand,
                "a command is required (or --setup, or --install-service); see --help",
            )),
            (Some(_), true) => Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "--setup and --install-service take no command",
            )),
            _ => cli.answers.check(cli.setup, action).map(|()| cli),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: install table inet ftagent and protect this host until stopped
    Run {
        /// Print one JSON line per second on stdout with what the agent sees: rates per
        /// counter, top talkers, connection counts, sample loss
        #[arg(long)]
        trace_samples: bool,
    },
    /// Show or remove ftagent's firewall objects (and nothing else)
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Check the configuration without touching the system
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Ban an address or prefix, or every one in a file (through the running daemon, if there
    /// is one)
    Ban {
        /// IPv4/IPv6 address, or prefix such as 203.0.113.0/24
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        address: Option<String>,
        /// Ban every address and prefix in FILE (`-`: standard input) at once: one a line,
        /// `#` starts a comment, blank lines are skipped; all are checked before any is
        /// banned, and all go in together
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// How long, e.g. 30s, 10m, 1h [default: mitigation.ban_duration]
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Lift a ban (through the running daemon, if there is one)
    Unban {
        /// The address or prefix that was banned
        address: String,
    },
    /// Take a measure of an open incident out (a port limit, the SYN proxy, a ban… that hurts
    /// real users) and keep it out until the incident ends (through the running daemon)
    Lift {
        /// The incident, as its events name it
        incident: String,
        /// An action as the events name it (`limit_port`, `synproxy`, `ban`…) or a banned
        /// address or prefix [default: everything the incident holds]
        measure: Option<String>,
    },
    /// Show the running daemon's state: rates against baselines, incidents, mitigations in
    /// force with their time left, set fill levels, sample loss, the last reload
    Status {
        /// Print it as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Live view of the running daemon, redrawn every second; q or Ctrl-C quits
    Top {
        /// Print one screen and exit (also when stdout or stdin is not a terminal)
        #[arg(long)]
        once: bool,
    },
    /// Write the man pages, the shell completions and the commented configuration file into
    /// DIR (for packaging/build.sh)
    #[command(hide = true)]
    PackageFiles {
        /// Where to write them (created if needed)
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Print table inet ftagent as nft syntax (accepted by `nft -c -f`), with current
    /// elements, their remaining timeouts and counters
    Dump,
    /// Remove table inet ftagent (stopping a running daemon first); nothing else is touched
    Flush,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration; print file:line:column: key: problem and exit 2 if invalid
    Check,
    /// Print the default configuration, every key with its default, as a TOML file
    Defaults,
    /// List every configuration key: its type, default, allowed values, whether SIGHUP
    /// applies it, and what it does
    Keys,
}

/// `22`, `53/udp`, `8000-8100/tcp`; TCP when no protocol is given.
pub(crate) fn parse_service(text: &str) -> Result<ServiceArg, String> {
    let text = text.trim();
    let (ports, proto) = match text.split_once('/') {
        Some((ports, proto)) => (ports, proto),
        None => (text, "tcp"),
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => return Err(format!("{text:?}: protocol {other:?} is not tcp or udp")),
    };
    let port = |p: &str| match p.trim().parse::<u16>() {
        Ok(port) if port >= 1 => Ok(port),
        _ => Err(format!(
            "{text:?} is not a port (1-65535) or port range such as 8000-8100"
        )),
    };
    let (first, last) = match ports.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => (port(ports)?, port(ports)?),
    };
    if first > last {
        return Err(format!(
            "{text:?}: the range's first port is above its last"
        ));
    }
    Ok(ServiceArg {
        ports: PortRange { first, last },
        proto,
    })
}

/// A CIDR or bare address, or `none`.
pub(crate) fn parse_safelist_entry(text: &str) -> Result<SafelistArg, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(SafelistArg::None);
    }
    text.parse()
        .map(SafelistArg::Cidr)
        .map_err(|e| format!("{text:?}: {e}"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 30s, 10m, 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ban_takes_a_humane_duration() {
        let cli = Cli::parse_args_from(["ftagent", "ban", "10.0.0.1", "--for", "3s"]).unwrap();
        match cli.command {
            Some(Command::Ban { duration, .. }) => {
                assert_eq!(duration, Some(Duration::from_secs(3)))
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["ftagent", "ban", "10.0.0.1", "--for", "soon"]).is_err());
        let cli = Cli::parse_args_from(["ftagent", "ban", "--file", "-", "--for", "1h"]).unwrap();
        match cli.command {
            Some(Command::Ban {
                address: None,
                file: Some(file),
                duration,
            }) => assert_eq!(
                (file.to_str(), duration),
                (Some("-"), Some(Duration::from_secs(3600)))
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["ftagent", "ban"]).is_err(),
            "an address or a file"
        );
        assert!(Cli::try_parse_from(["ftagent", "ban", "10.0.0.1", "--file", "x"]).is_err());
        assert!(Cli::try_parse_from(["ftagent", "rules", "--bogus"]).is_err());
    }

    #[test]
    fn status_and_top_flags() {
        let cli = Cli::parse_args_from(["ftagent", "status", "--json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Status { json: true })));
        let cli = Cli::parse_args_from(["ftagent", "top", "--once"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Top { once: true })));
        assert!(Cli::parse_args_from(["ftagent", "status", "extra"]).is_err());
    }

    #[test]
    fn setup_and_install_service_are_top_level_flags() {
        let cli = Cli::parse_args_from([
            "ftagent",
            "-c",
            "/tmp/x.toml",
            "--setup",
            "--yes",
            "--services",
            "22,53/udp,8000-8100/TCP",
            "--safelist",
            "203.0.113.7,2001:db8::/48",
            "--mode",
            "monitor",
            "--force",
        ])
        .unwrap();
        assert!(cli.setup && cli.answers.yes && cli.answers.force && cli.command.is_none());
        let services = cli.answers.services.unwrap();
        assert_eq!(
            services[1],
            ServiceArg {
                ports: PortRange {
                    first: 53,
                    last: 53
                },
                proto: Proto::Udp
            }
        );
        assert_eq!(
            services[2].ports,
            PortRange {
                first: 8000,
                last: 8100
            }
        );
        assert_eq!(cli.answers.safelist.unwrap().len(), 2);
        assert_eq!(cli.answers.mode, Some(ModeArg::Monitor));
        let cli = Cli::parse_args_from(["ftagent", "--install-service", "--enable"]).unwrap();
        assert!(cli.install_service && cli.answers.enable);
        // Commands are unchanged.
        assert!(Cli::parse_args_from(["ftagent", "rules", "dump"]).is_ok());
        assert!(Cli::parse_args_from(["ftagent", "-c", "/x", "run"]).is_ok());
    }

    #[test]
    fn setup_flags_need_their_action() {
        for args in [
            &["ftagent", "-c", "/x"][..],
            &["ftagent", "--setup", "run"],
            &["ftagent", "--setup", "--install-service"],
            &["ftagent", "--yes"],
            &["ftagent", "--services", "80", "run"],
            &["ftagent", "--install-service", "--services", "80"],
            &["ftagent", "--force", "run"],
            &["ftagent", "--setup", "--services", "0"],
            &["ftagent", "--setup", "--services", "70000"],
            &["ftagent", "--setup", "--services", "80/sctp"],
            &["ftagent", "--setup", "--services", "90-80"],
            &["ftagent", "--setup", "--services", ""],
            &["ftagent", "--setup", "--safelist", "10.0.0.1/33"],
            &["ftagent", "--setup", "--mode", "maybe"],
        ] {
            let e = Cli::parse_args_from(args).unwrap_err();
            assert!(e.use_stderr(), "{args:?}");
        }
        assert_eq!(
            Cli::parse_args_from(["ftagent", "--setup", "--safelist", "none"])
                .unwrap()
                .answers
                .safelist,
            Some(vec![SafelistArg::None])
        );
    }
}

//! Command-line arguments: parsing and validation only. Nothing here touches the system; `main`
//! turns the parsed command into actions and decides the exit code.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// ftagent: nftables-native DDoS detection and mitigation sidecar.
///
/// Detects volumetric and connection floods (UDP, SYN, amplification, HTTP, Slowloris,
/// distributed) and drops them in its own nft table, `table inet ftagent`, beside Fail2Ban,
/// which keeps credential attacks. Every ban has a timeout.
#[derive(Debug, Parser)]
#[command(name = "ftagent", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Configuration file [default: /etc/ftagent/ftagent.toml if it exists, else the
    /// embedded defaults]
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
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
    /// Ban an address or prefix (through the running daemon, if there is one)
    Ban {
        /// IPv4/IPv6 address, or prefix such as 203.0.113.0/24
        address: String,
        /// How long, e.g. 30s, 10m, 1h [default: mitigation.ban_duration]
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Lift a ban (through the running daemon, if there is one)
    Unban {
        /// The address or prefix that was banned
        address: String,
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
        let cli = Cli::try_parse_from(["ftagent", "ban", "10.0.0.1", "--for", "3s"]).unwrap();
        match cli.command {
            Command::Ban { duration, .. } => assert_eq!(duration, Some(Duration::from_secs(3))),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["ftagent", "ban", "10.0.0.1", "--for", "soon"]).is_err());
        assert!(Cli::try_parse_from(["ftagent", "rules", "--bogus"]).is_err());
    }

    #[test]
    fn status_and_top_flags() {
        let cli = Cli::try_parse_from(["ftagent", "status", "--json"]).unwrap();
        assert!(matches!(cli.command, Command::Status { json: true }));
        let cli = Cli::try_parse_from(["ftagent", "top", "--once"]).unwrap();
        assert!(matches!(cli.command, Command::Top { once: true }));
        assert!(Cli::try_parse_from(["ftagent", "status", "extra"]).is_err());
    }
}

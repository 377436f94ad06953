//! The configuration `--setup` writes: the answers (services, safelist, mode) and only the
//! keys that differ from the defaults, each explained in a comment, with what was found on
//! the host on top. Pure text; `Config::from_toml` must accept every output.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use crate::cli::ServiceArg;
use crate::config::{Mode, PortRange, Proto};

use super::host::HostReport;
use super::proposal::{name_of, SafeEntry, ServiceProposal};

/// What the operator chose (or accepted).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answers {
    pub(crate) services: Vec<ServiceArg>,
    pub(crate) safelist: Vec<SafeEntry>,
    pub(crate) mode: Mode,
    /// The SSH port (`mitigation.ssh_port`), from the session setup runs in.
    pub(crate) ssh_port: u16,
}

/// The circumstances the comments describe.
pub(crate) struct Context<'a> {
    pub(crate) host: &'a HostReport,
    pub(crate) proposal: &'a ServiceProposal,
    pub(crate) path: &'a Path,
    pub(crate) written: SystemTime,
}

/// The configuration file's text.
pub(crate) fn config_text(answers: &Answers, ctx: &Context) -> String {
    let mut t = String::new();
    header(&mut t, ctx);
    services(&mut t, answers, ctx.proposal);
    safelist(&mut t, &answers.safelist);
    mitigation(&mut t, answers);
    let _ = write!(
        t,
        "\n# More keys, with their defaults, in docs/configuration.md; for instance:\n\
         # [detection]\n\
         # floor_pps = 5000          # packets per second below which nothing is an attack\n\
         # [agent]\n\
         # warmup = \"60s\"            # learning time before the first verdict\n"
    );
    t
}

fn header(t: &mut String, ctx: &Context) {
    let h = ctx.host;
    let _ = writeln!(
        t,
        "# {} — ftagent configuration, written by `ftagent --setup` on {} for {}.",
        ctx.path.display(),
        humantime::format_rfc3339_seconds(ctx.written),
        h.hostname
    );
    let _ = writeln!(
        t,
        "# Keys not written here keep their defaults. After editing: `ftagent config check`, then\n\
         # `systemctl reload ftagent` (or SIGHUP): a file with a mistake is refused and the running\n\
         # configuration kept.\n\
         #\n\
         # Found on this host:\n\
         #   system:    {}, kernel {}\n\
         #   nf_tables: {}\n\
         #   iptables:  {}",
        h.distribution,
        h.kernel,
        h.nft_summary(),
        h.iptables_summary()
    );
    for n in h.neighbours.iter().filter(|n| n.present()) {
        let _ = writeln!(t, "#   {}: {}", n.name, n.summary());
    }
}

fn services(t: &mut String, answers: &Answers, proposal: &ServiceProposal) {
    let _ = writeln!(
        t,
        "\n# The services this host offers. ftagent learns each one's normal traffic and acts on\n\
         # floods against it. proto is \"tcp\" (when not written) or \"udp\"; a range is \"8000-8100\"."
    );
    for s in &answers.services {
        let found = proposal.proposed.iter().find(|p| p.service == *s);
        let what = match (name_of(s, answers.ssh_port), found) {
            (Some(name), Some(p)) => format!("{name}, listening on {}", addresses(&p.listening_on)),
            (Some(name), None) => format!("{name}, not listening now"),
            (None, _) => "added at setup".to_string(),
        };
        let _ = writeln!(t, "\n[[service]] # {what}");
        match s.ports {
            PortRange { first, last } if first == last => {
                let _ = writeln!(t, "port = {first}");
            }
            range => {
                let _ = writeln!(t, "port = \"{range}\"");
            }
        }
        if s.proto == Proto::Udp {
            let _ = writeln!(t, "proto = \"udp\"");
        }
    }
    if !proposal.others.is_empty() {
        let others: Vec<String> = proposal
            .others
            .iter()
            .map(|(port, proto)| format!("{port}/{proto}"))
            .collect();
        let _ = writeln!(
            t,
            "# Also listening beyond loopback, not listed (add a [[service]] if the public uses it):\n# {}",
            others.join(", ")
        );
    }
}

fn addresses(addrs: &[std::net::IpAddr]) -> String {
    addrs
        .iter()
        .map(|a| match a {
            a if a.is_unspecified() && a.is_ipv4() => "all IPv4 addresses".to_string(),
            a if a.is_unspecified() => "all IPv6 addresses".to_string(),
            a => a.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn safelist(t: &mut String, entries: &[SafeEntry]) {
    let _ = writeln!(
        t,
        "\n# Addresses and prefixes whose packets are never dropped, whatever happens. At every\n\
         # start the agent adds the host's own addresses, its default gateways, its resolvers\n\
         # and the peers of established SSH sessions (mitigation.auto_safelist).\n\
         [safelist]"
    );
    if entries.is_empty() {
        let _ = writeln!(t, "cidrs = []");
        return;
    }
    let _ = writeln!(t, "cidrs = [");
    let width = entries
        .iter()
        .map(|e| e.cidr.to_string().len())
        .max()
        .unwrap_or(0)
        + 3;
    for e in entries {
        let quoted = format!("\"{}\",", e.cidr);
        if e.why.is_empty() {
            let _ = writeln!(t, "  {quoted}");
        } else {
            let _ = writeln!(t, "  {quoted:<width$} # {}", e.why);
        }
    }
    let _ = writeln!(t, "]");
}

fn mitigation(t: &mut String, answers: &Answers) {
    let _ = writeln!(
        t,
        "\n[mitigation]\n\
         # \"mitigate\" drops floods (bans with timeouts, limits); \"monitor\" only reports what it\n\
         # would do.\n\
         mode = \"{}\"",
        answers.mode
    );
    if answers.ssh_port != 22 {
        let _ = writeln!(
            t,
            "# The SSH port: its established peers are never dropped.\nssh_port = {}",
            answers.ssh_port
        );
    }
    let _ = writeln!(t, "# ban_duration = \"10m\"       # how long a ban lasts");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Cidr;
    use crate::config::Config;
    use crate::netlink::Features;
    use crate::setup::host::{Backend, Iptables, Neighbour};
    use crate::setup::proposal::{services as propose, Listener};

    fn host() -> HostReport {
        HostReport {
            hostname: "web1".into(),
            distribution: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1.0-25-amd64".into(),
            nft: Ok(Features::LEGACY),
            iptables: Iptables {
                version: Some("iptables v1.8.9 (nf_tables)".into()),
                backend: Backend::NfTables,
                legacy_rules: Some(0),
            },
            neighbours: vec![Neighbour {
                name: "Fail2Ban",
                installed: true,
                running: Some(true),
                note: "it keeps the credential attacks",
            }],
        }
    }

    fn svc(first: u16, last: u16, proto: Proto) -> ServiceArg {
        ServiceArg {
            ports: PortRange { first, last },
            proto,
        }
    }

    fn render(answers: &Answers) -> (String, Config) {
        let listeners: Vec<Listener> = [(Proto::Tcp, 22), (Proto::Tcp, 80), (Proto::Tcp, 111)]
            .iter()
            .map(|&(proto, port)| Listener {
                proto,
                port,
                addr: "0.0.0.0".parse().unwrap(),
            })
            .collect();
        let proposal = propose(&listeners, answers.ssh_port);
        let path = Path::new("/etc/ftagent/ftagent.toml");
        let ctx = Context {
            host: &host(),
            proposal: &proposal,
            path,
            written: SystemTime::UNIX_EPOCH,
        };
        let text = config_text(answers, &ctx);
        let config = Config::from_toml(&text, path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (text, config)
    }

    #[test]
    fn written_configuration_reads_back_as_answered() {
        let answers = Answers {
            services: vec![
                svc(22, 22, Proto::Tcp),
                svc(80, 80, Proto::Tcp),
                svc(53, 53, Proto::Udp),
                svc(8000, 8100, Proto::Tcp),
                svc(2222, 2222, Proto::Tcp),
            ],
            safelist: vec![
                SafeEntry {
                    cidr: "203.0.113.7".parse().unwrap(),
                    why: "your SSH session (SSH_CONNECTION)".into(),
                },
                SafeEntry {
                    cidr: "2001:db8::/48".parse().unwrap(),
                    why: String::new(),
                },
            ],
            mode: Mode::Monitor,
            ssh_port: 2222,
        };
        let (text, config) = render(&answers);
        let got: Vec<ServiceArg> = config
            .services
            .iter()
            .map(|s| ServiceArg {
                ports: s.ports,
                proto: s.proto,
            })
            .collect();
        assert_eq!(got, answers.services);
        let cidrs: Vec<Cidr> = answers.safelist.iter().map(|e| e.cidr).collect();
        assert_eq!(config.safelist, cidrs);
        assert_eq!(config.mitigation.mode, Mode::Monitor);
        assert_eq!(config.mitigation.ssh_port, 2222);
        // Everything else is the default.
        let defaults = Config::default();
        assert_eq!(config.agent, defaults.agent);
        assert_eq!(config.detection, defaults.detection);
        assert_eq!(config.nft, defaults.nft);
        for expected in [
            "[[service]] # SSH, listening on all IPv4 addresses",
            "[[service]] # DNS, not listening now",
            "[[service]] # added at setup",
            "# 111/tcp",
            "\"203.0.113.7\",   # your SSH session",
            "#   Fail2Ban: installed, running",
            "1970-01-01T00:00:00Z",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }

    #[test]
    fn defaults_are_not_written() {
        let answers = Answers {
            services: vec![svc(443, 443, Proto::Tcp)],
            safelist: Vec::new(),
            mode: Mode::Mitigate,
            ssh_port: 22,
        };
        let (text, config) = render(&answers);
        assert!(!text.contains("ssh_port ="), "{text}");
        assert!(text.contains("cidrs = []"));
        assert_eq!(config.mitigation, Config::default().mitigation);
    }
}

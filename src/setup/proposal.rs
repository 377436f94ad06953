//! What `--setup` proposes: the well-known services among the sockets that listen beyond
//! loopback (read over sock_diag), and a safelist of the operator's SSH client, the default
//! gateways and the DNS resolvers. The choices are pure functions of what was read, so they
//! are tested without a host.

use std::net::IpAddr;
use std::path::Path;

use crate::addr::Cidr;
use crate::cli::ServiceArg;
use crate::config::{PortRange, Proto};
use crate::netlink::{diag, host};

/// A service port ftagent knows by name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known {
    pub(crate) port: u16,
    pub(crate) proto: Proto,
    pub(crate) name: &'static str,
}

const fn known(port: u16, proto: Proto, name: &'static str) -> Known {
    Known { port, proto, name }
}

/// The services proposed when something listens on them.
pub(crate) const KNOWN: &[Known] = &[
    known(21, Proto::Tcp, "FTP"),
    known(22, Proto::Tcp, "SSH"),
    known(25, Proto::Tcp, "SMTP"),
    known(53, Proto::Tcp, "DNS"),
    known(53, Proto::Udp, "DNS"),
    known(80, Proto::Tcp, "HTTP"),
    known(110, Proto::Tcp, "POP3"),
    known(143, Proto::Tcp, "IMAP"),
    known(443, Proto::Tcp, "HTTPS"),
    known(443, Proto::Udp, "HTTP/3 (QUIC)"),
    known(465, Proto::Tcp, "SMTPS"),
    known(587, Proto::Tcp, "SMTP submission"),
    known(993, Proto::Tcp, "IMAPS"),
    known(995, Proto::Tcp, "POP3S"),
    known(3306, Proto::Tcp, "MySQL"),
    known(8443, Proto::Tcp, "Plesk panel"),
    known(8447, Proto::Tcp, "Plesk updates"),
];

/// A listening TCP socket or a bound UDP one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Listener {
    pub(crate) proto: Proto,
    pub(crate) port: u16,
    pub(crate) addr: IpAddr,
}

/// The listening sockets of this network namespace; a table that cannot be read is left out
/// and described in the warnings.
pub(crate) fn listeners() -> (Vec<Listener>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (kind, proto) in [
        (diag::Listening::Tcp, Proto::Tcp),
        (diag::Listening::Udp, Proto::Udp),
    ] {
        match diag::listening(kind) {
            Ok(found) => {
                out.extend(
                    found
                        .into_iter()
                        .map(|(addr, port)| Listener { proto, port, addr }),
                )
            }
            Err(e) => warnings.push(format!("listening {proto} sockets left out: {e}")),
        }
    }
    out.sort_unstable();
    (out, warnings)
}

/// The SSH session `--setup` runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SshSession {
    pub(crate) peer: IpAddr,
    /// The server's port: the SSH port, whatever it is.
    pub(crate) server_port: u16,
}

/// From `$SSH_CONNECTION` ("client port server port") or else `$SSH_CLIENT` ("client port
/// server-port").
pub(crate) fn ssh_session(connection: Option<&str>, client: Option<&str>) -> Option<SshSession> {
    let from_connection = connection.and_then(|c| {
        let words: Vec<&str> = c.split_whitespace().collect();
        match words[..] {
            [peer, _, _, port] => Some(SshSession {
                peer: peer.parse().ok()?,
                server_port: port.parse().ok()?,
            }),
            _ => None,
        }
    });
    from_connection.or_else(|| {
        let words: Vec<&str> = client?.split_whitespace().collect();
        match words[..] {
            [peer, _, port] => Some(SshSession {
                peer: peer.parse().ok()?,
                server_port: port.parse().ok()?,
            }),
            _ => None,
        }
    })
}

/// The session from this process's environment.
pub(crate) fn ssh_session_from_env() -> Option<SshSession> {
    let var = |name| std::env::var(name).ok();
    ssh_session(
        var("SSH_CONNECTION").as_deref(),
        var("SSH_CLIENT").as_deref(),
    )
}

/// Loopback, including an IPv4-mapped one (`::ffff:127.0.0.1`).
fn is_loopback(addr: IpAddr) -> bool {
    addr.to_canonical().is_loopback()
}

/// A service proposed, with what it is and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProposedService {
    pub(crate) service: ServiceArg,
    pub(crate) name: &'static str,
    pub(crate) listening_on: Vec<IpAddr>,
}

/// The proposal, and the other public listeners (shown, not proposed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServiceProposal {
    pub(crate) proposed: Vec<ProposedService>,
    pub(crate) others: Vec<(u16, Proto)>,
}

/// The name of a single-port service: `ssh_port` is SSH, else the well-known name.
pub(crate) fn name_of(service: &ServiceArg, ssh_port: u16) -> Option<&'static str> {
    let PortRange { first, last } = service.ports;
    if first != last {
        return None;
    }
    if service.proto == Proto::Tcp && first == ssh_port {
        return Some("SSH");
    }
    KNOWN
        .iter()
        .find(|k| k.port == first && k.proto == service.proto)
        .map(|k| k.name)
}

/// The well-known services (and `ssh_port`) that listen on a non-loopback address, in port
/// order; loopback-only listeners are private and not proposed.
pub(crate) fn services(listeners: &[Listener], ssh_port: u16) -> ServiceProposal {
    let mut proposal = ServiceProposal::default();
    for l in listeners.iter().filter(|l| !is_loopback(l.addr)) {
        let service = ServiceArg {
            ports: PortRange {
                first: l.port,
                last: l.port,
            },
            proto: l.proto,
        };
        if let Some(p) = proposal.proposed.iter_mut().find(|p| p.service == service) {
            if !p.listening_on.contains(&l.addr) {
                p.listening_on.push(l.addr);
            }
            continue;
        }
        match name_of(&service, ssh_port) {
            Some(name) => proposal.proposed.push(ProposedService {
                service,
                name,
                listening_on: vec![l.addr],
            }),
            None if !proposal.others.contains(&(l.port, l.proto)) => {
                proposal.others.push((l.port, l.proto))
            }
            None => {}
        }
    }
    proposal
        .proposed
        .sort_by_key(|p| (p.service.ports, p.service.proto));
    proposal.others.sort_unstable();
    proposal
}

/// One proposed safelist entry and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SafeEntry {
    pub(crate) cidr: Cidr,
    pub(crate) why: String,
}

/// What the safelist is proposed from.
#[derive(Debug, Clone, Default)]
pub(crate) struct SafeSources {
    pub(crate) session: Option<SshSession>,
    /// Peers of established connections to the SSH port.
    pub(crate) ssh_peers: Vec<IpAddr>,
    pub(crate) gateways: Vec<IpAddr>,
    pub(crate) resolvers: Vec<IpAddr>,
}

impl SafeSources {
    /// Read from this host: the SSH peers of `ssh_port`, default gateways, /etc/resolv.conf.
    pub(crate) fn read(session: Option<SshSession>, ssh_port: u16) -> (SafeSources, Vec<String>) {
        let mut warnings = Vec::new();
        let ssh_peers = diag::established_peers(ssh_port).unwrap_or_else(|e| {
            warnings.push(format!("established SSH sessions left out: {e}"));
            Vec::new()
        });
        let gateways = host::default_gateways().unwrap_or_else(|e| {
            warnings.push(format!("default gateways left out: {e}"));
            Vec::new()
        });
        let sources = SafeSources {
            session,
            ssh_peers,
            gateways,
            resolvers: host::resolvers(Path::new("/etc/resolv.conf")),
        };
        (sources, warnings)
    }
}

/// Each address once, with its first reason; loopback and unspecified addresses are left out
/// (the host's own addresses are safelisted at every start anyway).
pub(crate) fn safelist(sources: &SafeSources) -> Vec<SafeEntry> {
    let mut out: Vec<SafeEntry> = Vec::new();
    let session = sources
        .session
        .map(|s| (s.peer, "your SSH session (SSH_CONNECTION)"));
    let tagged = session
        .into_iter()
        .chain(
            sources
                .ssh_peers
                .iter()
                .map(|&a| (a, "an established SSH session")),
        )
        .chain(sources.gateways.iter().map(|&a| (a, "default gateway")))
        .chain(sources.resolvers.iter().map(|&a| (a, "DNS resolver")));
    for (addr, why) in tagged {
        let addr = addr.to_canonical();
        if addr.is_loopback() || addr.is_unspecified() {
            continue;
        }
        let cidr = Cidr::host(addr);
        if !out.iter().any(|e| e.cidr == cidr) {
            out.push(SafeEntry {
                cidr,
                why: why.to_string(),
            });
        }
    }
    out
}

/// The services as the configuration needs them: each once, none overlapping, at least one.
pub(crate) fn check_services(list: &[ServiceArg]) -> Result<Vec<ServiceArg>, String> {
    let mut out: Vec<ServiceArg> = Vec::new();
    for s in list {
        if out.contains(s) {
            continue;
        }
        let overlapping = out.iter().find(|o| {
            o.proto == s.proto && o.ports.first <= s.ports.last && s.ports.first <= o.ports.last
        });
        if let Some(o) = overlapping {
            return Err(format!(
                "{}/{} overlaps {}/{}: each port may be listed once per protocol",
                s.ports, s.proto, o.ports, o.proto
            ));
        }
        out.push(*s);
    }
    if out.is_empty() {
        return Err("at least one service port is needed".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn l(proto: Proto, port: u16, addr: &str) -> Listener {
        Listener {
            proto,
            port,
            addr: ip(addr),
        }
    }

    fn svc(port: u16, proto: Proto) -> ServiceArg {
        ServiceArg {
            ports: PortRange {
                first: port,
                last: port,
            },
            proto,
        }
    }

    #[test]
    fn known_public_listeners_are_proposed() {
        let listeners = [
            l(Proto::Tcp, 22, "0.0.0.0"),
            l(Proto::Tcp, 22, "::"),
            l(Proto::Tcp, 80, "::"),
            l(Proto::Tcp, 443, "203.0.113.5"),
            l(Proto::Tcp, 3306, "127.0.0.1"), // loopback only: private
            l(Proto::Tcp, 8443, "::ffff:127.0.0.1"),
            l(Proto::Udp, 53, "203.0.113.5"),
            l(Proto::Udp, 53, "127.0.0.53"),
            l(Proto::Tcp, 111, "0.0.0.0"), // unknown: shown, not proposed
            l(Proto::Udp, 68, "0.0.0.0"),
            l(Proto::Tcp, 2222, "0.0.0.0"), // the SSH port of this session
        ];
        let p = services(&listeners, 2222);
        let got: Vec<(ServiceArg, &str)> = p.proposed.iter().map(|p| (p.service, p.name)).collect();
        assert_eq!(
            got,
            vec![
                (svc(22, Proto::Tcp), "SSH"),
                (svc(53, Proto::Udp), "DNS"),
                (svc(80, Proto::Tcp), "HTTP"),
                (svc(443, Proto::Tcp), "HTTPS"),
                (svc(2222, Proto::Tcp), "SSH"),
            ]
        );
        assert_eq!(p.proposed[0].listening_on, vec![ip("0.0.0.0"), ip("::")]);
        assert_eq!(p.others, vec![(68, Proto::Udp), (111, Proto::Tcp)]);
        assert_eq!(services(&[], 22), ServiceProposal::default());
    }

    #[test]
    fn ssh_session_from_either_variable() {
        let want = SshSession {
            peer: ip("203.0.113.7"),
            server_port: 2222,
        };
        assert_eq!(
            ssh_session(Some("203.0.113.7 50022 198.51.100.1 2222"), None),
            Some(want)
        );
        assert_eq!(
            ssh_session(None, Some("203.0.113.7 50022 2222")),
            Some(want)
        );
        assert_eq!(
            ssh_session(Some("garbage"), Some("203.0.113.7 50022 2222")),
            Some(want)
        );
        assert_eq!(
            ssh_session(Some("2001:db8::7 1 2001:db8::1 22"), None)
                .unwrap()
                .peer,
            ip("2001:db8::7")
        );
        for bad in ["", "x 1 y 2", "203.0.113.7 1 2 99999"] {
            assert_eq!(ssh_session(Some(bad), None), None, "{bad}");
        }
    }

    #[test]
    fn safelist_once_each_with_the_first_reason() {
        let sources = SafeSources {
            session: Some(SshSession {
                peer: ip("203.0.113.7"),
                server_port: 22,
            }),
            ssh_peers: vec![ip("203.0.113.7"), ip("::ffff:198.51.100.9")],
            gateways: vec![ip("192.0.2.1"), ip("fe80::1")],
            resolvers: vec![
                ip("127.0.0.53"),
                ip("192.0.2.1"),
                ip("0.0.0.0"),
                ip("2001:db8::53"),
            ],
        };
        let got: Vec<(String, String)> = safelist(&sources)
            .into_iter()
            .map(|e| (e.cidr.to_string(), e.why))
            .collect();
        let want: Vec<(String, String)> = [
            ("203.0.113.7", "your SSH session (SSH_CONNECTION)"),
            ("198.51.100.9", "an established SSH session"),
            ("192.0.2.1", "default gateway"),
            ("fe80::1", "default gateway"),
            ("2001:db8::53", "DNS resolver"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn services_checked_like_the_configuration() {
        let range = ServiceArg {
            ports: PortRange {
                first: 8000,
                last: 8100,
            },
            proto: Proto::Tcp,
        };
        assert_eq!(
            check_services(&[
                svc(80, Proto::Tcp),
                svc(80, Proto::Tcp),
                svc(80, Proto::Udp)
            ])
            .unwrap(),
            vec![svc(80, Proto::Tcp), svc(80, Proto::Udp)]
        );
        let e = check_services(&[range, svc(8080, Proto::Tcp)]).unwrap_err();
        assert!(e.contains("8080/tcp overlaps 8000-8100/tcp"), "{e}");
        assert!(check_services(&[range, svc(8080, Proto::Udp)]).is_ok());
        assert!(check_services(&[]).is_err());
    }
}

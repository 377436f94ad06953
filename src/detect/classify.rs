//! Which attack vectors explain the counters that are over their thresholds this tick.
//!
//! Specific counters are read first and *claim* their excess on the generic counters that also
//! count the same packets (l4 totals, a service port's packets, "other"): a SYN flood to port
//! 80 raises `tcp_syn`, `new_tcp_80`, `tcp_80`, `l4_tcp` and `l3_ipv4`, and opens exactly one
//! incident (syn_flood, port 80). A generic counter drives an incident only with what is left.
//!
//! The rules, in order:
//! 1. new-connection surge on a TCP service (`new_tcp_P` over) whose SYNs are matched by ACKs
//!    (ACK rise ≥ ½ SYN rise, SYN rise ≥ ½ new-connection rise): on a web service, http_flood
//!    when the connections carry requests (ACKs in established connections, `tcp_ack_est`,
//!    rise ≥ 3 per new connection), else slowloris (connections opened to be held idle); on
//!    another service, tcp_connection_flood. Its ACKs explain any `tcp_ack` rise;
//! 2. a TCP service's packets over and carried by established connections (`tcp_ack_est`
//!    rise ≥ ½ of the port's rise): http_flood on a web service (a keep-alive flood: wrk),
//!    tcp_connection_flood on another. A web service already in an open http_flood, or in
//!    one that ended less than `HTTP_FLOOD_RESUMES` ago: its packets are that flood's,
//!    established or not (its ban drops them before conntrack sees them; once the ban is
//!    lifted, the connections it stalled resume in a burst, out of the state conntrack had
//!    them in while the server gave up on them). Established ACKs explain as much of
//!    `tcp_ack`, and what no service takes (the host's own downloads) explains TCP totals
//!    and "other";
//! 3. `tcp_syn` over while ACKs have not risen with it (ACK rise < ½ SYN rise): syn_flood;
//! 4. `tcp_rst` over: rst_flood — unless a SYN flood or surge explains it (RST rise ≤ SYN
//!    rise: the SYNs' senders resetting our SYN-ACKs);
//! 5. `tcp_ack` over beyond what established connections and surges explain: ack_flood (ACKs
//!    outside any connection);
//! 6. `tcp_synack` over: synack_reflection (SYN-ACKs to SYNs we never sent);
//! 7. `tcp_odd` over (none of SYN, RST, ACK: null, FIN-only, xmas): tcp_flag_flood;
//! 8. `l4_other` over (GRE, ESP, …): ip_proto_flood, its protocol from the samples;
//! 9. `l4_icmp`/`l4_icmpv6` over: icmp_flood;
//! 10. `amp_P` over: the amplification vector of port P (dns, ntp, ssdp, memcached, cldap,
//!     chargen, snmp), udp_flood for other reflector ports;
//! 11. a UDP service's packets over (unexplained): udp_flood on that port;
//! 12. `fragment` over beyond what UDP/ICMP vectors explain (8 fragments each): fragment_flood;
//! 13. a TCP service's packets over, unexplained by 1–7: ack_flood on that port;
//! 14. `other` over, unexplained: udp_flood or ack_flood, by which l4 total rose more;
//! 15. `l4_udp`/`l4_tcp` over, unexplained: udp_flood/ack_flood;
//! 16. a source holding more than `max_connections_per_source` connections: slowloris on a web
//!     service (unless that service is in an HTTP flood, found by rule 1 or 2 or open, or its
//!     packets are over their threshold: busy
//!     connections, not idle ones), tcp_connection_flood on another.
//!
//! Class counters (syn, ack, rst, udp…) report the sampled destination port that carries most
//! samples, else no port.

use serde::{Deserialize, Serialize};

use super::{Detector, Role, Sample, MIN_SAMPLES};
use crate::config::Proto;
use crate::proto::{IPPROTO_TCP, IPPROTO_UDP};
use crate::sense::counters::class;

/// Attack vectors, named as in the events (snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Vector {
    UdpFlood,
    SynFlood,
    AckFlood,
    RstFlood,
    IcmpFlood,
    FragmentFlood,
    DnsAmplification,
    NtpAmplification,
    SsdpAmplification,
    MemcachedAmplification,
    CldapAmplification,
    ChargenAmplification,
    SnmpAmplification,
    HttpFlood,
    Slowloris,
    TcpConnectionFlood,
    SynackReflection,
    TcpFlagFlood,
    IpProtoFlood,
}

impl Vector {
    pub(crate) const ALL: [Vector; 19] = [
        Vector::UdpFlood,
        Vector::SynFlood,
        Vector::AckFlood,
        Vector::RstFlood,
        Vector::IcmpFlood,
        Vector::FragmentFlood,
        Vector::DnsAmplification,
        Vector::NtpAmplification,
        Vector::SsdpAmplification,
        Vector::MemcachedAmplification,
        Vector::CldapAmplification,
        Vector::ChargenAmplification,
        Vector::SnmpAmplification,
        Vector::HttpFlood,
        Vector::Slowloris,
        Vector::TcpConnectionFlood,
        Vector::SynackReflection,
        Vector::TcpFlagFlood,
        Vector::IpProtoFlood,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Vector::UdpFlood => "udp_flood",
            Vector::SynFlood => "syn_flood",
            Vector::AckFlood => "ack_flood",
            Vector::RstFlood => "rst_flood",
            Vector::IcmpFlood => "icmp_flood",
            Vector::FragmentFlood => "fragment_flood",
            Vector::DnsAmplification => "dns_amplification",
            Vector::NtpAmplification => "ntp_amplification",
            Vector::SsdpAmplification => "ssdp_amplification",
            Vector::MemcachedAmplification => "memcached_amplification",
            Vector::CldapAmplification => "cldap_amplification",
            Vector::ChargenAmplification => "chargen_amplification",
            Vector::SnmpAmplification => "snmp_amplification",
            Vector::HttpFlood => "http_flood",
            Vector::Slowloris => "slowloris",
            Vector::TcpConnectionFlood => "tcp_connection_flood",
            Vector::SynackReflection => "synack_reflection",
            Vector::TcpFlagFlood => "tcp_flag_flood",
            Vector::IpProtoFlood => "ip_proto_flood",
        }
    }

    /// The vector of UDP floods from reflector source port `port`.
    pub(crate) fn amplification(port: u16) -> Vector {
        match port {
            53 => Vector::DnsAmplification,
            123 => Vector::NtpAmplification,
            1900 => Vector::SsdpAmplification,
            11211 => Vector::MemcachedAmplification,
            389 => Vector::CldapAmplification,
            19 => Vector::ChargenAmplification,
            161 => Vector::SnmpAmplification,
            _ => Vector::UdpFlood,
        }
    }

    /// The transport the vector is made of; None for fragments (any protocol) and other IP
    /// protocols (the event's `ip_proto` says which).
    pub(crate) fn proto(self) -> Option<&'static str> {
        match self {
            Vector::SynFlood
            | Vector::AckFlood
            | Vector::RstFlood
            | Vector::HttpFlood
            | Vector::Slowloris
            | Vector::TcpConnectionFlood
            | Vector::SynackReflection
            | Vector::TcpFlagFlood => Some("tcp"),
            Vector::IcmpFlood => Some("icmp"),
            Vector::FragmentFlood | Vector::IpProtoFlood => None,
            _ => Some("udp"),
        }
    }

    fn transport(self) -> Option<Proto> {
        match self.proto() {
            Some("tcp") => Some(Proto::Tcp),
            Some("udp") => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Vector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an incident is aimed: part of its identity (one incident per vector and target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// No single destination port.
    Any,
    /// A port that is not a configured service.
    Port(u16),
    /// A configured service (index into `CounterLayout::services`).
    Service(usize),
}

/// One vector explaining one key this tick.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub(crate) vector: Vector,
    pub(crate) target: Target,
    pub(crate) driver: usize,
}

/// Fragments one UDP/ICMP packet counted by a specific vector may explain (a large datagram
/// in fragments).
const FRAGMENTS_PER_PACKET: f64 = 8.0;
/// Rule 1 and 3: ACK rise needed per SYN rise for SYNs to be connections.
const ACKS_PER_SYN: f64 = 0.5;
/// Rule 1: SYN rise needed per new-connection rise (each connection starts with a SYN).
const SYNS_PER_CONNECTION: f64 = 0.5;
/// Rule 1: established ACKs per new connection that make a surge an HTTP flood. A request and
/// its answer take the handshake's last ACK, the request and the ACKs of the answer (4 or
/// more); a Slowloris connection sends the handshake's ACK and a first partial request (2).
const REQUEST_ACKS_PER_CONNECTION: f64 = 3.0;
/// Rule 2: established ACK rise per rise of a port's packets for the port's flood to be one
/// of established connections.
const ESTABLISHED_SHARE: f64 = 0.5;
/// Rule 2: how long after an http_flood on a web service ends its port's packets are still
/// taken for it (issue 16: wrk's stalled connections, unbanned at the end, came back as one
/// 10 ms burst of ACKs that opened an ack_flood).
const HTTP_FLOOD_RESUMES: f64 = 10.0;
/// Rule 4: RSTs per SYN that a SYN flood or connection surge explains — the senders of the
/// SYNs (real hosts, or live addresses spoofed) reset our SYN-ACKs.
const RSTS_PER_SYN: f64 = 1.0;

impl Detector {
    /// Fills `self.candidates` from this tick's keys (after `judge`).
    pub(super) fn classify(&mut self, sample: &Sample) {
        self.candidates.clear();
        let tcp_port = self.class_port(sample, IPPROTO_TCP);
        let udp_port = self.class_port(sample, IPPROTO_UDP);
        let tcp_target = self.target_of(Proto::Tcp, tcp_port);
        let udp_target = self.target_of(Proto::Udp, udp_port);
        let (syn, ack, rst) = (
            self.fixed(class::TCP_SYN),
            self.fixed(class::TCP_ACK),
            self.fixed(class::TCP_RST),
        );
        let syn_rise = self.excess(syn);
        let ack_rise = self.excess(ack);
        let syn_shaped = ack_rise < ACKS_PER_SYN * syn_rise;

        let established = self.fixed(class::TCP_ACK_EST);
        let mut established_left = self.excess(established);
        // 1. New-connection surges. Services whose connections are busy in an HTTP flood (rules
        // 1 and 2; a bit per service): their held connections are no Slowloris (rule 16).
        let mut busy = 0u128;
        let mut surge = false;
        for s in 0..self.services.len() {
            let svc = &self.services[s];
            if svc.proto != Proto::Tcp || !self.hot(svc.new) {
                continue;
            }
            let (new, packets, web) = (svc.new, svc.packets, svc.web);
            let connections = self.excess(new);
            let handshakes = !syn_shaped && syn_rise >= SYNS_PER_CONNECTION * connections;
            if self.owned(new) || handshakes {
                // Requests: enough ACKs in established connections per new connection, or the
                // port's packets over their threshold (idle Slowloris connections carry almost
                // nothing; wrk's opening tick may cut its requests off from its handshakes).
                let requests = established_left >= REQUEST_ACKS_PER_CONNECTION * connections
                    || self.keys[packets].over;
                let vector = match (web, requests) {
                    (true, true) => Vector::HttpFlood,
                    (true, false) => Vector::Slowloris,
                    (false, _) => Vector::TcpConnectionFlood,
                };
                self.candidate(vector, Target::Service(s), new);
                if vector == Vector::HttpFlood && s < 128 {
                    busy |= 1 << s;
                }
                let rise = self.excess(packets);
                self.claim(Proto::Tcp, Target::Service(s), rise, true);
                established_left = (established_left - rise).max(0.0);
                surge = true;
            }
        }
        // 2. Floods over established connections (keep-alive HTTP floods).
        for s in 0..self.services.len() {
            let svc = &self.services[s];
            if svc.proto != Proto::Tcp || !self.unexplained(svc.packets) {
                continue;
            }
            let (packets, web) = (svc.packets, svc.web);
            let rise = self.excess(packets) - self.keys[packets].claimed;
            let flooded = web && (self.http_flood_open(s) || self.http_flood_resumes(s));
            if !self.owned(packets) && !flooded && established_left < ESTABLISHED_SHARE * rise {
                continue;
            }
            let vector = if web {
                Vector::HttpFlood
            } else {
                Vector::TcpConnectionFlood
            };
            self.candidate(vector, Target::Service(s), packets);
            self.claim(Proto::Tcp, Target::Service(s), rise, true);
            self.keys[ack].claimed += rise;
            established_left = (established_left - rise).max(0.0);
            if web && s < 128 {
                busy |= 1 << s;
            }
        }
        // What no service took: the host's own connections (downloads), no attack.
        self.keys[ack].claimed += established_left;
        self.claim_other(Proto::Tcp, established_left);
        // 3. SYN flood.
        let mut syn_flood = false;
        if self.hot(syn) && (self.owned(syn) || syn_shaped) {
            self.candidate(Vector::SynFlood, tcp_target, syn);
            self.claim(Proto::Tcp, tcp_target, syn_rise, true);
            syn_flood = true;
        }
        // 4. RST flood, unless they are the answers to our SYN-ACKs.
        let rst_rise = self.excess(rst);
        let backscatter = (syn_flood || surge) && rst_rise <= RSTS_PER_SYN * syn_rise;
        if self.hot(rst) && (self.owned(rst) || !backscatter) {
            self.candidate(Vector::RstFlood, tcp_target, rst);
        }
        if self.hot(rst) {
            self.claim(Proto::Tcp, tcp_target, rst_rise, true);
        }
        // 5. ACK flood: ACKs outside any connection, unless a connection surge explains them.
        if self.hot(ack) && (self.owned(ack) || (!surge && self.unexplained(ack))) {
            let rise = (ack_rise - self.keys[ack].claimed).max(0.0);
            self.candidate(Vector::AckFlood, tcp_target, ack);
            self.claim(Proto::Tcp, tcp_target, rise, true);
        }
        // 6. SYN-ACK reflection; 7. odd TCP flags.
        for (class, vector, target) in [
            (class::TCP_SYNACK, Vector::SynackReflection, Target::Any),
            (class::TCP_ODD, Vector::TcpFlagFlood, tcp_target),
        ] {
            let k = self.fixed(class);
            if self.hot(k) {
                self.candidate(vector, target, k);
                let rise = self.excess(k);
                self.claim(Proto::Tcp, target, rise, true);
            }
        }
        // 8. Other IP protocols.
        let l4_other = self.fixed(class::L4_OTHER);
        if self.hot(l4_other) {
            self.candidate(Vector::IpProtoFlood, Target::Any, l4_other);
        }
        // 9. ICMP.
        let fragment = self.fixed(class::FRAGMENT);
        for k in [self.fixed(class::ICMP), self.fixed(class::ICMPV6)] {
            if self.hot(k) {
                self.candidate(Vector::IcmpFlood, Target::Any, k);
                self.keys[fragment].claimed += FRAGMENTS_PER_PACKET * self.excess(k);
            }
        }
        // 10. Amplification (reflector source ports; not counted in "other").
        for a in 0..self.amplification.len() {
            let (k, vector) = self.amplification[a];
            if self.hot(k) {
                self.candidate(vector, udp_target, k);
                let rise = self.excess(k);
                self.claim(Proto::Udp, udp_target, rise, false);
                self.keys[fragment].claimed += FRAGMENTS_PER_PACKET * rise;
            }
        }
        // 11. UDP service ports.
        for s in 0..self.services.len() {
            let svc = &self.services[s];
            if svc.proto != Proto::Udp || !self.unexplained(svc.packets) {
                continue;
            }
            let packets = svc.packets;
            self.candidate(Vector::UdpFlood, Target::Service(s), packets);
            let rise = self.excess(packets);
            let udp = self.fixed(class::UDP);
            self.keys[udp].claimed += rise;
            self.keys[fragment].claimed += FRAGMENTS_PER_PACKET * rise;
        }
        // 12. Fragments.
        if self.unexplained(fragment) {
            self.candidate(Vector::FragmentFlood, Target::Any, fragment);
            let rise = self.excess(fragment);
            for c in [class::TCP, class::UDP, class::OTHER] {
                let k = self.fixed(c);
                self.keys[k].claimed += rise;
            }
        }
        // 13. TCP service ports: TCP floods no flag counter explains.
        for s in 0..self.services.len() {
            let svc = &self.services[s];
            if svc.proto != Proto::Tcp || !self.unexplained(svc.packets) {
                continue;
            }
            let packets = svc.packets;
            self.candidate(Vector::AckFlood, Target::Service(s), packets);
            let tcp = self.fixed(class::TCP);
            self.keys[tcp].claimed += self.excess(packets);
        }
        // 14. "other": by which transport total rose more.
        let (tcp, udp, other) = (
            self.fixed(class::TCP),
            self.fixed(class::UDP),
            self.fixed(class::OTHER),
        );
        if self.unexplained(other) {
            let rise = self.excess(other);
            let udp_rise = self.excess(udp) - self.keys[udp].claimed;
            let tcp_rise = self.excess(tcp) - self.keys[tcp].claimed;
            if udp_rise >= tcp_rise {
                self.candidate(Vector::UdpFlood, udp_target, other);
                self.keys[udp].claimed += rise;
            } else {
                self.candidate(Vector::AckFlood, tcp_target, other);
                self.keys[tcp].claimed += rise;
            }
        }
        // 15. Transport totals.
        if self.unexplained(udp) {
            self.candidate(Vector::UdpFlood, udp_target, udp);
        }
        if self.unexplained(tcp) {
            self.candidate(Vector::AckFlood, tcp_target, tcp);
        }
        // 16. Connections held per source (busy in an HTTP flood: not Slowloris).
        for s in 0..self.services.len() {
            let svc = &self.services[s];
            let Some(conn) = svc.conn else { continue };
            // A Slowloris's connections are idle: held connections on a port whose packets are
            // over their threshold carry a flood (wrk's keep-alive connections, seen by
            // conntrack before the flood's incident opens), not a Slowloris.
            let in_http_flood = (s < 128 && busy & (1 << s) != 0)
                || self.http_flood_open(s)
                || self.keys[svc.packets].over;
            if self.hot(conn) && !in_http_flood {
                let vector = if svc.web {
                    Vector::Slowloris
                } else {
                    Vector::TcpConnectionFlood
                };
                self.candidate(vector, Target::Service(s), conn);
            }
        }
    }

    /// Whether an http_flood incident on service `s` is open.
    fn http_flood_open(&self, s: usize) -> bool {
        self.incidents
            .iter()
            .any(|i| i.vector == Vector::HttpFlood && i.target == Target::Service(s))
    }

    /// An http_flood on service `s` ended less than `HTTP_FLOOD_RESUMES` ago.
    fn http_flood_resumes(&self, s: usize) -> bool {
        let now = self.last.unwrap_or(0.0);
        now - self.services[s].http_flood_ended < HTTP_FLOOD_RESUMES
    }

    fn candidate(&mut self, vector: Vector, target: Target, driver: usize) {
        self.candidates.push(super::classify::Candidate {
            vector,
            target,
            driver,
        });
    }

    /// Over threshold, or driving an open incident and above its exit threshold.
    pub(super) fn hot(&self, k: usize) -> bool {
        let key = &self.keys[k];
        key.over || (key.owner.is_some() && key.pps > key.exit)
    }

    fn owned(&self, k: usize) -> bool {
        self.keys[k].owner.is_some()
    }

    /// Hot with what more specific vectors left of it.
    fn unexplained(&self, k: usize) -> bool {
        let key = &self.keys[k];
        let limit = if key.owner.is_some() {
            key.exit
        } else {
            key.threshold
        };
        self.hot(k) && key.pps - key.claimed > limit
    }

    /// How far a key is above its baseline mean.
    pub(super) fn excess(&self, k: usize) -> f64 {
        let key = &self.keys[k];
        (key.pps - key.base.mean()).max(0.0)
    }

    /// Marks `amount` of traffic of `proto` toward `target` as explained on the generic keys
    /// that count it: the l4 total, the service's packets, "other" (if `other`; traffic from
    /// reflector ports is not counted there).
    fn claim(&mut self, proto: Proto, target: Target, amount: f64, other: bool) {
        let l4 = self.fixed(match proto {
            Proto::Tcp => class::TCP,
            Proto::Udp => class::UDP,
        });
        self.keys[l4].claimed += amount;
        let other_key = self.fixed(class::OTHER);
        match target {
            Target::Service(s) => {
                if let Some(svc) = self.services.get(s) {
                    let packets = svc.packets;
                    self.keys[packets].claimed += amount;
                }
            }
            Target::Port(_) => {
                if other {
                    self.keys[other_key].claimed += amount;
                }
            }
            Target::Any => {
                for s in 0..self.services.len() {
                    if self.services[s].proto == proto {
                        let packets = self.services[s].packets;
                        self.keys[packets].claimed += amount;
                    }
                }
                if other {
                    self.keys[other_key].claimed += amount;
                }
            }
        }
    }

    /// Marks `amount` of `proto` traffic to no service as explained: the l4 total and "other".
    fn claim_other(&mut self, proto: Proto, amount: f64) {
        let l4 = self.fixed(match proto {
            Proto::Tcp => class::TCP,
            Proto::Udp => class::UDP,
        });
        self.keys[l4].claimed += amount;
        let other = self.fixed(class::OTHER);
        self.keys[other].claimed += amount;
    }

    /// The sampled destination port of `proto` carrying most samples this tick, if one does;
    /// with too few samples, the last answer.
    fn class_port(&mut self, sample: &Sample, proto: u8) -> Option<u16> {
        let slot = usize::from(proto == IPPROTO_UDP);
        if sample.samples < MIN_SAMPLES {
            return self.class_ports[slot];
        }
        let port = sample
            .top_dst_ports
            .iter()
            .find(|((p, _), _)| *p == proto)
            .filter(|(_, count)| count.saturating_mul(2) > sample.samples)
            .map(|((_, port), _)| *port);
        self.class_ports[slot] = port;
        port
    }

    /// The target for a destination port of `proto`.
    pub(super) fn target_of(&self, proto: Proto, port: Option<u16>) -> Target {
        let Some(port) = port else {
            return Target::Any;
        };
        self.services
            .iter()
            .position(|s| s.proto == proto && (s.first..=s.last).contains(&port))
            .map_or(Target::Port(port), Target::Service)
    }

    /// Every key an incident of `vector` toward `target` driven by `driver` involves: they
    /// learn nothing while it is open, so the attack never becomes their normal.
    pub(super) fn involved(&self, vector: Vector, target: Target, driver: usize) -> Vec<usize> {
        let mut keys = Vec::with_capacity(32);
        keys.push(driver);
        let ports = |keys: &mut Vec<usize>, proto: Proto| match target {
            Target::Service(s) => {
                if let Some(svc) = self.services.get(s) {
                    keys.extend([svc.packets, svc.new]);
                }
            }
            Target::Port(_) => keys.push(class::OTHER),
            Target::Any => {
                for svc in self.services.iter().filter(|s| s.proto == proto) {
                    keys.extend([svc.packets, svc.new]);
                }
                keys.push(class::OTHER);
            }
        };
        if matches!(self.keys[driver].role, Role::Connections(_)) {
            ports(&mut keys, Proto::Tcp);
            keys.retain(|&k| k != class::OTHER);
            return keys;
        }
        keys.extend([class::IPV4, class::IPV6]);
        match (vector, vector.transport()) {
            (Vector::FragmentFlood, _) => keys.extend([
                class::FRAGMENT,
                class::TCP,
                class::UDP,
                class::ICMP,
                class::ICMPV6,
                class::OTHER,
            ]),
            (Vector::IcmpFlood, _) => keys.extend([class::ICMP, class::ICMPV6, class::FRAGMENT]),
            (Vector::IpProtoFlood, _) => keys.extend([class::L4_OTHER, class::FRAGMENT]),
            (_, Some(Proto::Tcp)) => {
                keys.extend([
                    class::TCP,
                    class::TCP_SYN,
                    class::TCP_ACK,
                    class::TCP_RST,
                    class::TCP_ACK_EST,
                    class::TCP_SYNACK,
                    class::TCP_ODD,
                ]);
                ports(&mut keys, Proto::Tcp);
            }
            (_, _) => {
                keys.extend([class::UDP, class::FRAGMENT]);
                ports(&mut keys, Proto::Udp);
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

//! The `gobgp` command-line client of gobgpd: the arguments that announce, withdraw and list
//! our routes, and the reading of its JSON RIB listings. Every command runs with a timeout.
//! Our routes carry `bgp.tag_community`; routes without it, or learned from a peer, are never
//! listed as ours and so never touched.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::BgpError;
use crate::addr::Cidr;
use crate::config::{community_text, Bgp, BLACKHOLE};
use crate::escalate::{prefix_text, Action, FlowRule, Route};

/// The address families we announce in, as gobgp names them.
const FAMILIES: [&str; 4] = ["ipv4", "ipv6", "ipv4-flowspec", "ipv6-flowspec"];

/// FlowSpec component types (RFC 8955 §4.2.2).
const DESTINATION: u64 = 1;
const SOURCE: u64 = 2;
const PROTOCOL: u64 = 3;
const DESTINATION_PORT: u64 = 5;
const SOURCE_PORT: u64 = 6;
const FRAGMENT: u64 = 12;
/// Numeric operator bits (RFC 8955 §4.2.1.1).
const OP_EQ: u64 = 0x01;
const OP_GT: u64 = 0x02;
const OP_LT: u64 = 0x04;
const OP_AND: u64 = 0x40;
/// The `is-fragment` bit of the fragment component.
const IS_FRAGMENT: u64 = 0x02;
/// BGP path attribute types: COMMUNITIES, EXTENDED COMMUNITIES.
const ATTR_COMMUNITIES: u64 = 8;
const ATTR_EXTENDED: u64 = 16;
/// Extended community subtype of FlowSpec traffic-rate.
const TRAFFIC_RATE: u64 = 6;

/// What the attributes of our routes are made of (from `[bgp]`).
#[derive(Debug, Clone)]
pub(crate) struct Gobgp {
    program: PathBuf,
    host: String,
    port: String,
    timeout: Duration,
    next_hop4: Ipv4Addr,
    next_hop6: Ipv6Addr,
    communities: Vec<u32>,
    tag: u32,
}

impl Gobgp {
    pub(crate) fn new(bgp: &Bgp) -> Gobgp {
        Gobgp {
            program: bgp.gobgp.clone(),
            host: bgp.api.ip().to_string(),
            port: bgp.api.port().to_string(),
            timeout: bgp.timeout,
            next_hop4: bgp.next_hop4,
            next_hop6: bgp.next_hop6,
            communities: bgp.communities.clone(),
            tag: bgp.tag_community,
        }
    }

    /// Our routes the daemon holds now, in every family.
    pub(crate) fn list(&self) -> Result<Vec<Route>, BgpError> {
        let mut routes = Vec::new();
        for family in FAMILIES {
            let args = ["global", "rib", "-a", family, "-j"].map(String::from);
            let json = self.run(&args)?;
            let found = parse_rib(&json, self.tag)
                .map_err(|message| BgpError::Listing { family, message })?;
            routes.extend(found);
        }
        Ok(routes)
    }

    pub(crate) fn announce(&self, route: &Route) -> Result<(), BgpError> {
        self.run(&self.announce_args(route)).map(drop)
    }

    pub(crate) fn withdraw(&self, route: &Route) -> Result<(), BgpError> {
        self.run(&withdraw_args(route)).map(drop)
    }

    /// `gobgp global rib -a FAMILY add …` for `route`, with its attributes.
    pub(crate) fn announce_args(&self, route: &Route) -> Vec<String> {
        let mut args = family_args(route, "add");
        match route {
            Route::Blackhole(prefix) => {
                args.push(prefix_text(*prefix));
                let next_hop = if prefix.is_ipv4() {
                    IpAddr::V4(self.next_hop4)
                } else {
                    IpAddr::V6(self.next_hop6)
                };
                args.extend(["nexthop".to_string(), next_hop.to_string()]);
                let mut communities = vec![BLACKHOLE];
                communities.extend(&self.communities);
                communities.push(self.tag);
                args.extend(["community".to_string(), join_communities(&communities)]);
            }
            Route::FlowSpec(rule) => {
                flow_match(rule, &mut args);
                args.push("then".to_string());
                match rule.action {
                    Action::Discard => args.push("discard".to_string()),
                    Action::RateLimit(bytes) => {
                        args.extend(["rate-limit".to_string(), bytes.to_string()])
                    }
                }
                args.extend(["community".to_string(), community_text(self.tag)]);
            }
        }
        args
    }

    /// Runs `gobgp -u HOST -p PORT ARGS…`, killing it after the timeout; its stdout.
    fn run(&self, args: &[String]) -> Result<String, BgpError> {
        let command = || format!("{} {}", self.program.display(), args.join(" "));
        let mut child = Command::new(&self.program)
            .args(["-u", &self.host, "-p", &self.port])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| BgpError::Spawn {
                command: command(),
                source,
            })?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let pump = |child: &mut Child, out: &mut Vec<u8>, err: &mut Vec<u8>| {
            if let Some(pipe) = child.stdout.as_mut() {
                drain(pipe, out);
            }
            if let Some(pipe) = child.stderr.as_mut() {
                drain(pipe, err);
            }
        };
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            pump(&mut child, &mut out, &mut err);
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BgpError::Timeout {
                        command: command(),
                        timeout: self.timeout,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(source) => {
                    return Err(BgpError::Spawn {
                        command: command(),
                        source,
                    })
                }
            }
        };
        pump(&mut child, &mut out, &mut err);
        if !status.success() {
            let said = String::from_utf8_lossy(if err.is_empty() { &out } else { &err });
            return Err(BgpError::Failed {
                command: command(),
                status: status.to_string(),
                stderr: said.trim().lines().next().unwrap_or("").to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Reads what the pipe holds now into `buf` (the pipe is switched to non-blocking).
fn drain(pipe: &mut (impl Read + AsFd), buf: &mut Vec<u8>) {
    crate::sys::set_nonblocking(&*pipe);
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return, // WouldBlock: nothing more for now
        }
    }
}

/// `global rib -a FAMILY VERB`.
fn family_args(route: &Route, verb: &str) -> Vec<String> {
    let family = match (route, route.is_ipv4()) {
        (Route::Blackhole(_), true) => "ipv4",
        (Route::Blackhole(_), false) => "ipv6",
        (Route::FlowSpec(_), true) => "ipv4-flowspec",
        (Route::FlowSpec(_), false) => "ipv6-flowspec",
    };
    ["global", "rib", "-a", family, verb]
        .map(String::from)
        .to_vec()
}

/// `gobgp global rib -a FAMILY del …` for `route` (a route is known by its prefix or match).
pub(crate) fn withdraw_args(route: &Route) -> Vec<String> {
    let mut args = family_args(route, "del");
    match route {
        Route::Blackhole(prefix) => args.push(prefix_text(*prefix)),
        Route::FlowSpec(rule) => flow_match(rule, &mut args),
    }
    args
}

/// `match destination … [source …] [protocol N] [destination-port …] [source-port …]
/// [fragment is-fragment]` (protocols by number: gobgp's names differ by family).
fn flow_match(rule: &FlowRule, args: &mut Vec<String>) {
    args.extend([
        "match".to_string(),
        "destination".to_string(),
        prefix_text(rule.destination),
    ]);
    if let Some(source) = rule.source {
        args.extend(["source".to_string(), prefix_text(source)]);
    }
    if let Some(proto) = rule.proto {
        args.extend(["protocol".to_string(), proto.to_string()]);
    }
    for (name, ports) in [
        ("destination-port", rule.dst_ports),
        ("source-port", rule.src_ports),
    ] {
        if let Some((first, last)) = ports {
            let value = if first == last {
                format!("=={first}")
            } else {
                format!(">={first}&<={last}")
            };
            args.extend([name.to_string(), value]);
        }
    }
    if rule.fragments {
        args.extend(["fragment".to_string(), "is-fragment".to_string()]);
    }
}

fn join_communities(communities: &[u32]) -> String {
    communities
        .iter()
        .map(|&c| community_text(c))
        .collect::<Vec<_>>()
        .join(",")
}

/// Our routes in one `gobgp global rib -a FAMILY -j` listing: originated here (no
/// `neighbor-ip`) and tagged with `tag`. A tagged route we cannot read back as one of ours is
/// left alone, with a warning.
pub(crate) fn parse_rib(json: &str, tag: u32) -> Result<Vec<Route>, String> {
    let rib: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let Some(rib) = rib.as_object() else {
        return if rib.is_null() {
            Ok(Vec::new())
        } else {
            Err("not a JSON object".to_string())
        };
    };
    let mut routes = Vec::new();
    for (key, paths) in rib {
        for path in paths.as_array().into_iter().flatten() {
            if path.get("neighbor-ip").is_some() {
                continue; // learned from a peer
            }
            let attrs = path["attrs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let communities = attrs
                .iter()
                .find(|a| a["type"].as_u64() == Some(ATTR_COMMUNITIES))
                .and_then(|a| a["communities"].as_array());
            let tagged =
                communities.is_some_and(|cs| cs.iter().any(|c| c.as_u64() == Some(u64::from(tag))));
            if !tagged {
                continue;
            }
            match read_route(&path["nlri"], attrs) {
                Some(route) => routes.push(route),
                None => log::warn!("gobgpd holds {key} with our tag community, in a form ftagent never announces: left alone"),
            }
        }
    }
    Ok(routes)
}

/// One of our routes from a path's NLRI and attributes.
fn read_route(nlri: &Value, attrs: &[Value]) -> Option<Route> {
    if let Some(prefix) = nlri["prefix"].as_str() {
        let cidr: Cidr = prefix.parse().ok()?;
        return cidr.is_host().then_some(Route::Blackhole(cidr));
    }
    let mut rule = FlowRule {
        destination: Cidr::host(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        source: None,
        proto: None,
        dst_ports: None,
        src_ports: None,
        fragments: false,
        action: Action::Discard,
    };
    let mut has_destination = false;
    for component in nlri["value"].as_array()? {
        let value = &component["value"];
        match component["type"].as_u64()? {
            DESTINATION => {
                rule.destination = value["prefix"].as_str()?.parse().ok()?;
                has_destination = true;
            }
            SOURCE => rule.source = Some(value["prefix"].as_str()?.parse().ok()?),
            PROTOCOL => rule.proto = Some(u8::try_from(single(value)?).ok()?),
            DESTINATION_PORT => rule.dst_ports = Some(port_range(value)?),
            SOURCE_PORT => rule.src_ports = Some(port_range(value)?),
            FRAGMENT => rule.fragments = single_bits(value)? == IS_FRAGMENT,
            _ => return None,
        }
    }
    let rate = attrs
        .iter()
        .filter(|a| a["type"].as_u64() == Some(ATTR_EXTENDED))
        .flat_map(|a| a["value"].as_array().into_iter().flatten())
        .find(|e| e["subtype"].as_u64() == Some(TRAFFIC_RATE))?["rate"]
        .as_f64()?;
    rule.action = if rate <= 0.0 {
        Action::Discard
    } else {
        Action::RateLimit(rate.round() as u64)
    };
    has_destination.then_some(Route::FlowSpec(rule))
}

/// `[{op: ==, value}]`: the value.
fn single(ops: &Value) -> Option<u64> {
    match ops.as_array()?.as_slice() {
        [only] if (only["op"].as_u64()? & (OP_EQ | OP_GT | OP_LT)) == OP_EQ => {
            only["value"].as_u64()
        }
        _ => None,
    }
}

/// `[{op: match, value: bits}]`: the bits.
fn single_bits(ops: &Value) -> Option<u64> {
    match ops.as_array()?.as_slice() {
        [only] => only["value"].as_u64(),
        _ => None,
    }
}

/// `==P` or `>=A&<=B`.
fn port_range(ops: &Value) -> Option<(u16, u16)> {
    let port = |v: &Value| u16::try_from(v["value"].as_u64()?).ok();
    match ops.as_array()?.as_slice() {
        [_] => {
            let p = u16::try_from(single(ops)?).ok()?;
            Some((p, p))
        }
        [low, high] => {
            let (lo, hi) = (low["op"].as_u64()?, high["op"].as_u64()?);
            let compare = OP_EQ | OP_GT | OP_LT;
            let ge = (lo & compare) == (OP_EQ | OP_GT);
            let le = (hi & compare) == (OP_EQ | OP_LT) && (hi & OP_AND) != 0;
            (ge && le).then_some((port(low)?, port(high)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::community;

    /// `gobgp global rib -a FAMILY -j` of gobgp 3.10 (Debian 12) holding routes of ours, one
    /// untagged blackhole and a tagged rule with a component we never announce (tcp-flags).
    const RIBS: &str = include_str!("testdata/gobgp-3.10-ribs.txt");
    const TAG: u32 = community(65534, 6660);

    fn rib(family: &str) -> &'static str {
        RIBS.split("== ")
            .find_map(|part| {
                part.strip_prefix(family)
                    .filter(|rest| rest.starts_with('\n'))
            })
            .unwrap()
            .trim()
    }

    fn client() -> Gobgp {
        Gobgp::new(&Bgp {
            tag_community: TAG,
            ..Bgp::default()
        })
    }

    #[test]
    fn reads_our_routes_and_only_ours() {
        let v4 = parse_rib(rib("ipv4"), TAG).unwrap();
        assert_eq!(v4, [Route::Blackhole("10.250.0.2/32".parse().unwrap())]);
        let v6 = parse_rib(rib("ipv6"), TAG).unwrap();
        assert_eq!(v6, [Route::Blackhole("fd00:250::2/128".parse().unwrap())]);
        let mut flows = parse_rib(rib("ipv4-flowspec"), TAG).unwrap();
        flows.sort();
        let flows: Vec<String> = flows.iter().map(Route::to_string).collect();
        assert_eq!(
            flows,
            [
                "flowspec destination 10.250.0.2/32 fragment discard",
                "flowspec destination 10.250.0.2/32 protocol udp destination-port 8000-8100 discard",
                "flowspec destination 10.250.0.2/32 source 10.250.0.1/32 protocol udp source-port 53 rate-limit 1250000 bytes/s",
            ]
        );
        let v6flows: Vec<String> = parse_rib(rib("ipv6-flowspec"), TAG)
            .unwrap()
            .iter()
            .map(Route::to_string)
            .collect();
        assert_eq!(
            v6flows,
            ["flowspec destination fd00:250::2/128 protocol icmpv6 discard"]
        );
        // Another tag: none of them is ours.
        assert!(parse_rib(rib("ipv4"), community(65534, 1))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn routes_learned_from_a_peer_are_never_ours() {
        let received = r#"{"10.250.0.2/32":[{"nlri":{"prefix":"10.250.0.2/32"},"age":1795629004,"best":true,"attrs":[{"type":1,"value":2},{"type":8,"communities":[4294902426,4294842884]},{"type":3,"nexthop":"192.0.2.1"}],"stale":false,"source-id":"10.250.0.2","neighbor-ip":"10.250.0.2"}]}"#;
        assert!(parse_rib(received, TAG).unwrap().is_empty());
    }

    #[test]
    fn empty_and_broken_listings() {
        assert!(parse_rib("{}", TAG).unwrap().is_empty());
        assert!(parse_rib("null", TAG).unwrap().is_empty());
        assert!(parse_rib("{\"error\":", TAG)
            .unwrap_err()
            .contains("not JSON"));
        assert!(parse_rib("[1]", TAG).is_err());
    }

    #[test]
    fn commands_are_the_ones_that_made_the_listing() {
        let c = client();
        let line = |args: Vec<String>| args.join(" ");
        let mut routes = parse_rib(rib("ipv4-flowspec"), TAG).unwrap();
        routes.sort();
        routes.reverse(); // source-port, destination-port range, fragments
        assert_eq!(
            line(c.announce_args(&routes[0])),
            "global rib -a ipv4-flowspec add match destination 10.250.0.2/32 source 10.250.0.1/32 protocol 17 source-port ==53 then rate-limit 1250000 community 65534:6660"
        );
        assert_eq!(
            line(c.announce_args(&routes[1])),
            "global rib -a ipv4-flowspec add match destination 10.250.0.2/32 protocol 17 destination-port >=8000&<=8100 then discard community 65534:6660"
        );
        assert_eq!(
            line(withdraw_args(&routes[2])),
            "global rib -a ipv4-flowspec del match destination 10.250.0.2/32 fragment is-fragment"
        );
        let v6 = parse_rib(rib("ipv6"), TAG).unwrap();
        assert_eq!(
            line(c.announce_args(&v6[0])),
            "global rib -a ipv6 add fd00:250::2/128 nexthop 100::1 community 65535:666,65535:65281,65534:6660"
        );
        assert_eq!(
            line(withdraw_args(&v6[0])),
            "global rib -a ipv6 del fd00:250::2/128"
        );
    }

    #[test]
    fn a_missing_client_or_a_dead_daemon_is_an_error_not_a_hang() {
        let mut bgp = Bgp {
            gobgp: "/nonexistent/gobgp".into(),
            ..Bgp::default()
        };
        let err = Gobgp::new(&bgp).list().unwrap_err();
        assert!(matches!(err, BgpError::Spawn { .. }), "{err}");
        // A command that outlives the timeout is killed.
        let script =
            std::env::temp_dir().join(format!("ftagent-slow-gobgp-{}", std::process::id()));
        std::fs::write(&script, "#!/bin/sh\nexec sleep 5\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        bgp.gobgp = script.clone();
        bgp.timeout = Duration::from_millis(200);
        let started = Instant::now();
        let err = Gobgp::new(&bgp).list().unwrap_err();
        let _ = std::fs::remove_file(&script);
        assert!(matches!(err, BgpError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

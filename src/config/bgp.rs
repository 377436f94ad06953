//! `[bgp]`: escalation of an incident to the upstream routers through a BGP daemon beside
//! ftagent (gobgpd) — RTBH and FlowSpec announcements, when and how many. Checked like every
//! other section: `file:line:column: bgp.key: message`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::check::Checker;
use crate::addr::Cidr;

/// `[bgp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bgp {
    pub(crate) enabled: bool,
    /// The `gobgp` command-line client.
    pub(crate) gobgp: PathBuf,
    /// gobgpd's gRPC API.
    pub(crate) api: SocketAddr,
    /// Next hop of IPv4 / IPv6 blackhole routes.
    pub(crate) next_hop4: Ipv4Addr,
    pub(crate) next_hop6: Ipv6Addr,
    /// Communities added to blackhole routes besides BLACKHOLE (65535:666).
    pub(crate) communities: Vec<u32>,
    /// The community that marks our routes in the daemon: nothing without it is ever touched.
    pub(crate) tag_community: u32,
    pub(crate) max_announcements: u32,
    /// Escalate an incident whose rate reaches this (0: not a criterion).
    pub(crate) escalate_pps: u64,
    pub(crate) escalate_bps: u64,
    /// Escalate an incident still over its threshold this long after it began (0s: not a
    /// criterion).
    pub(crate) escalate_after: Duration,
    pub(crate) rtbh: bool,
    pub(crate) flowspec: bool,
    pub(crate) action: FlowAction,
    /// The rate of `action = "rate-limit"`, bits per second.
    pub(crate) rate_limit_bps: u64,
    /// In a concentrated attack, FlowSpec rules for up to this many sources (0: by
    /// destination only).
    pub(crate) flowspec_sources: u32,
    /// An announcement stays at least this long, even if its incident ended earlier.
    pub(crate) min_duration: Duration,
    /// Destinations that may be announced; empty: the host's own addresses.
    pub(crate) destinations: Vec<Cidr>,
    /// Longest wait for one `gobgp` command.
    pub(crate) timeout: Duration,
}

/// What a FlowSpec rule asks the upstream to do with matching traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FlowAction {
    Discard,
    RateLimit,
}

/// The BLACKHOLE community (RFC 7999).
pub(crate) const BLACKHOLE: u32 = community(65535, 666);
/// NO_EXPORT (RFC 1997).
pub(crate) const NO_EXPORT: u32 = community(65535, 65281);

/// `asn:value` as one 32-bit community.
pub(crate) const fn community(asn: u16, value: u16) -> u32 {
    (asn as u32) << 16 | value as u32
}

/// `asn:value` text of a community.
pub(crate) fn community_text(c: u32) -> String {
    format!("{}:{}", c >> 16, c & 0xffff)
}

impl Default for Bgp {
    /// The descriptors' defaults (see `keys.rs`).
    fn default() -> Bgp {
        super::Config::default().bgp
    }
}

impl Checker {
    /// An enabled `[bgp]` needs a criterion, something to announce and a tag of its own.
    pub(super) fn bgp_criteria(&mut self, table: &DeTable<'_>, bgp: &Bgp) {
        let tag_clash = bgp.communities.contains(&bgp.tag_community)
            || [BLACKHOLE, NO_EXPORT].contains(&bgp.tag_community);
        let (criteria, any_route) = (
            bgp.escalate_pps > 0 || bgp.escalate_bps > 0 || !bgp.escalate_after.is_zero(),
            bgp.rtbh || bgp.flowspec,
        );
        let problem = if !bgp.enabled {
            None
        } else if !criteria {
            Some("no escalation criterion: set escalate_pps, escalate_bps or escalate_after")
        } else if !any_route {
            Some("nothing to announce: rtbh and flowspec are both false")
        } else if tag_clash {
            Some("tag_community must be a community of its own, not a well-known one nor one of `communities`")
        } else {
            None
        };
        let enabled = table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == "enabled");
        if let (Some(problem), Some((_, value))) = (problem, enabled) {
            self.report(value.span(), "bgp.enabled", problem.to_string());
        }
    }

    /// A string parsed as `T` (addresses).
    pub(super) fn parsed<T: std::str::FromStr>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        expected: &str,
    ) -> Option<T> {
        let text = self.string(value, path, &format!("{expected} in a string"))?;
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.report(value.span(), path, format!("{text:?} is not {expected}"));
        }
        parsed
    }

    pub(super) fn community(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<u32> {
        let text = self.string(value, path, "a community string such as \"65535:65281\"")?;
        let parsed = text.split_once(':').and_then(|(asn, v)| {
            let number = |s: &str| {
                (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<u16>().ok())
                    .flatten()
            };
            Some(community(number(asn)?, number(v)?))
        });
        if parsed.is_none() {
            self.report(
                value.span(),
                path,
                format!("{text:?} is not a community: expected ASN:VALUE, each 0 to 65535"),
            );
        }
        parsed
    }

    pub(super) fn communities(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<Vec<u32>> {
        let array = self.array(
            value,
            path,
            "a list of communities such as [\"65535:65281\"]",
            "",
        )?;
        let mut all = Vec::with_capacity(array.len());
        let mut good = true;
        for (index, item) in array.iter().enumerate() {
            match self.community(item, &format!("{path}[{}]", index + 1)) {
                Some(c) if !all.contains(&c) && c != BLACKHOLE => all.push(c),
                Some(_) => {}
                None => good = false,
            }
        }
        good.then_some(all)
    }

    pub(super) fn flow_action(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<FlowAction> {
        match self.string(value, path, "\"discard\" or \"rate-limit\"")? {
            "discard" => Some(FlowAction::Discard),
            "rate-limit" => Some(FlowAction::RateLimit),
            other => {
                self.report(
                    value.span(),
                    path,
                    format!(
                        "{other:?} is not a FlowSpec action: use \"discard\" or \"rate-limit\""
                    ),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("/etc/ftagent/ftagent.toml")).map_err(|e| e.to_string())
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn every_key() {
        let c = parse(
            r#"
[bgp]
enabled = true
gobgp = "/opt/gobgp/bin/gobgp"
api = "[::1]:50052"
next_hop4 = "198.51.100.66"
next_hop6 = "2001:db8::66"
communities = ["65535:65281", "64500:666", "64500:666"]
tag_community = "64500:1"
max_announcements = 20
escalate_pps = 500000
escalate_bps = 2_000_000_000
escalate_after = "30s"
rtbh = false
flowspec = true
action = "rate-limit"
rate_limit_bps = 80000000
flowspec_sources = 2
min_duration = "10m"
destinations = ["203.0.113.0/24", "2001:db8:5::/48"]
timeout = "2s"
"#,
        )
        .unwrap()
        .bgp;
        assert!(c.enabled);
        assert_eq!(c.gobgp, PathBuf::from("/opt/gobgp/bin/gobgp"));
        assert_eq!(c.api.to_string(), "[::1]:50052");
        assert_eq!(c.next_hop4.to_string(), "198.51.100.66");
        assert_eq!(c.next_hop6.to_string(), "2001:db8::66");
        assert_eq!(c.communities, [NO_EXPORT, community(64500, 666)]);
        assert_eq!(community_text(c.tag_community), "64500:1");
        assert_eq!(
            (c.max_announcements, c.escalate_pps, c.escalate_bps),
            (20, 500_000, 2_000_000_000)
        );
        assert_eq!(c.escalate_after, Duration::from_secs(30));
        assert!(!c.rtbh && c.flowspec);
        assert_eq!(
            (c.action, c.rate_limit_bps, c.flowspec_sources),
            (FlowAction::RateLimit, 80_000_000, 2)
        );
        assert_eq!(
            (c.min_duration, c.timeout),
            (Duration::from_secs(600), Duration::from_secs(2))
        );
        assert_eq!(c.destinations.len(), 2);
    }

    #[test]
    fn mistakes_name_their_place() {
        let cases = [
            (
                "[bgp]\ntag_community = \"65536:1\"\n",
                "2:17: bgp.tag_community: \"65536:1\" is not a community",
            ),
            (
                "[bgp]\ncommunities = [\"1:2\", \"x\"]\n",
                "2:23: bgp.communities[2]: \"x\" is not a community",
            ),
            (
                "[bgp]\napi = \"localhost\"\n",
                "2:7: bgp.api: \"localhost\" is not an address:port",
            ),
            (
                "[bgp]\nnext_hop4 = \"::1\"\n",
                "2:13: bgp.next_hop4: \"::1\" is not an IPv4 address",
            ),
            (
                "[bgp]\naction = \"drop\"\n",
                "2:10: bgp.action: \"drop\" is not a FlowSpec action",
            ),
            (
                "[bgp]\nmax_announcements = 0\n",
                "2:21: bgp.max_announcements: 0 is out of range",
            ),
            (
                "[bgp]\nescalate_pps = -1\n",
                "2:16: bgp.escalate_pps: -1 is out of range",
            ),
            (
                "[bgp]\ngobgp = \"gobgp\"\n",
                "2:9: bgp.gobgp: \"gobgp\" is not an absolute path",
            ),
            (
                "[bgp]\nflowspec = \"yes\"\n",
                "2:12: bgp.flowspec: expected true or false",
            ),
            (
                "[bgp]\nescalate_pss = 1\n",
                "2:1: bgp.escalate_pss: unknown key (did you mean \"escalate_pps\"?)",
            ),
            (
                "[bgp]\nescalate_after = \"0s\"\nenabled = true\n",
                "3:11: bgp.enabled: no escalation criterion",
            ),
            (
                "[bgp]\nenabled = true\nrtbh = false\nflowspec = false\n",
                "2:11: bgp.enabled: nothing to announce",
            ),
            (
                "[bgp]\nenabled = true\ntag_community = \"65535:65281\"\n",
                "2:11: bgp.enabled: tag_community must be a community of its own",
            ),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(
                got.starts_with(&format!("/etc/ftagent/ftagent.toml:{want}")),
                "{text:?}: {got}"
            );
        }
        // Disabled, the section may be incomplete.
        assert!(parse("[bgp]\nescalate_after = \"0s\"\n").is_ok());
    }
}

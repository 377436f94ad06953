//! What `ftagent status` and `ftagent top` show: the daemon's state as plain data (sent as JSON
//! over the control socket), completed by the caller with its own listing of our sets (fill
//! levels, the kernel's time left for each measure: a listing of big sets takes the kernel a
//! while, and the daemon's loop is not the place to wait for it), and its renderings for a
//! terminal — the full report and the one-screen live view. Pure: no I/O here.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ruleset::{Key, SetState};

/// Entries each list of a status reply holds at most; the rest are counted in its `*_more`.
pub(crate) const MAX_LISTED: usize = 50;

/// A running daemon's state at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub(crate) version: String,
    pub(crate) pid: u32,
    pub(crate) uptime_s: u64,
    /// `"owner+persist"` or `"unowned"` (the older-kernel mode).
    pub(crate) kernel_mode: String,
    /// Ban timeouts are refreshed in place (else by delete + add).
    pub(crate) timeout_refresh: bool,
    /// `mitigation.mode`: `"mitigate"` or `"monitor"`.
    pub(crate) mode: String,
    /// The configuration file in use; None: the embedded defaults.
    pub(crate) config: Option<String>,
    /// The last SIGHUP, if there was one.
    pub(crate) reload: Option<Reload>,
    pub(crate) warmed_up: bool,
    /// Seconds of traffic learned, and the warm-up needed.
    pub(crate) learned_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) samples: Samples,
    /// Connection-table entries at the last read.
    pub(crate) conntrack_entries: u64,
    /// How late the latest ticks started against their schedule (None before the first).
    #[serde(default)]
    pub(crate) tick_lateness: Option<TickLateness>,
    /// Per detection key: its current rate against its baseline and threshold.
    pub(crate) keys: Vec<KeyRate>,
    pub(crate) incidents: Vec<IncidentStatus>,
    /// What open incidents keep in force, with the kernel's time left.
    pub(crate) mitigations: Vec<Mitigation>,
    pub(crate) mitigations_more: usize,
    pub(crate) operator_bans: Vec<OperatorBan>,
    pub(crate) operator_bans_more: usize,
    /// Elements in each of our address and measure sets against its size (from the
    /// caller's listing).
    pub(crate) sets: Vec<SetFill>,
    /// Why the sets could not be listed (then `sets` is empty and no time left is known).
    pub(crate) sets_error: Option<String>,
}

/// The outcome of the last reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Reload {
    /// RFC 3339 UTC.
    pub(crate) at: String,
    pub(crate) ok: bool,
    /// Why it failed: the running configuration was kept.
    pub(crate) error: Option<String>,
    /// How it reached the kernel: `"diff"` (elements changed in one batch), `"replace"` (the
    /// table replaced atomically, bans and measures kept) or `"none"` (nothing to change).
    pub(crate) applied: Option<String>,
    /// Changed keys that take effect only at the next start.
    pub(crate) restart_only: Vec<String>,
}

/// How late the latest ticks started against the tick timer's schedule, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct TickLateness {
    /// Ticks these figures are taken over.
    pub(crate) ticks: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

/// NFLOG delivery since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Samples {
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) enobufs: u64,
    pub(crate) malformed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyRate {
    pub(crate) name: String,
    pub(crate) pps: f64,
    pub(crate) baseline_pps: f64,
    pub(crate) threshold_pps: f64,
    /// Over its threshold this tick.
    pub(crate) over: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IncidentStatus {
    pub(crate) id: String,
    pub(crate) vector: String,
    pub(crate) counter: String,
    pub(crate) proto: Option<String>,
    pub(crate) port: Option<u16>,
    /// RFC 3339 UTC: its first tick over threshold.
    pub(crate) since: String,
    pub(crate) duration_s: f64,
    pub(crate) pps: f64,
    pub(crate) peak_pps: f64,
    pub(crate) baseline_pps: f64,
    pub(crate) threshold_pps: f64,
    pub(crate) concentrated: bool,
    pub(crate) distinct_sources: f64,
    /// Top sources with their share of the samples.
    pub(crate) sources: Vec<(String, f64)>,
    /// The local addresses (or prefixes) it hits, with their share of its samples.
    #[serde(default)]
    pub(crate) targets: Vec<(String, f64)>,
}

/// One measure in force: a ban or an aggregate measure of an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Mitigation {
    pub(crate) incident: String,
    pub(crate) vector: String,
    /// `ban`, `limit_port`, `syn_cookies`… (as in the mitigation events).
    pub(crate) action: String,
    /// The address or prefix banned, or the measure's target (`udp/27015`, `icmp`…).
    pub(crate) target: String,
    /// Its element in the kernel: the set and the key as [`key_text`] writes it (None for
    /// SYN cookies, a sysctl).
    pub(crate) set: Option<String>,
    pub(crate) element: Option<String>,
    /// Time left in the kernel, seconds; None: not in the kernel (monitor mode, a sysctl, or
    /// it ran out and the next update puts it back).
    pub(crate) remaining_s: Option<f64>,
}

/// A set element's key as status names it: an address, prefix or range, a port or port range,
/// a protocol number.
pub(crate) fn key_text(key: &Key) -> String {
    match key {
        Key::Addr(a) => a.to_string(),
        Key::Ports(a, b) if a == b => a.to_string(),
        Key::Ports(a, b) => format!("{a}-{b}"),
        Key::Byte(b) => b.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OperatorBan {
    pub(crate) cidr: String,
    pub(crate) remaining_s: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SetFill {
    pub(crate) name: String,
    pub(crate) elements: usize,
    /// The set's `size`; None where unbounded.
    pub(crate) size: Option<u32>,
}

fn duration(seconds: f64) -> String {
    let whole = Duration::from_secs(seconds.max(0.0).round() as u64);
    humantime::format_duration(whole).to_string()
}

fn rate(pps: f64) -> String {
    if pps >= 100.0 || pps == 0.0 {
        format!("{pps:.0}")
    } else {
        format!("{pps:.1}")
    }
}

fn remaining(r: Option<f64>) -> String {
    match r {
        Some(s) => format!("{} left", duration(s)),
        None => "not in the kernel".to_string(),
    }
}

fn more(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("  +{n} more\n")
    }
}

impl Status {
    /// Completes the daemon's reply with a listing of our sets: their fill levels, and the
    /// time each mitigation has left in the kernel.
    pub fn add_listing(&mut self, listing: Result<Vec<SetState>, String>) {
        let sets = match listing {
            Ok(sets) => sets,
            Err(e) => {
                self.sets_error = Some(e);
                return;
            }
        };
        for m in &mut self.mitigations {
            let (Some(set), Some(element)) = (&m.set, &m.element) else {
                continue;
            };
            m.remaining_s = sets
                .iter()
                .find(|s| &s.name == set)
                .and_then(|s| s.elements.iter().find(|e| key_text(&e.key) == *element))
                .and_then(|e| e.expires)
                .map(|x| x.as_secs_f64());
        }
        self.sets = sets
            .iter()
            .filter(|s| !s.counter_map)
            .map(|s| SetFill {
                name: s.name.clone(),
                elements: s.elements.len(),
                size: s.size,
            })
            .collect();
    }

    /// The header lines shared by both views.
    fn header(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "ftagent {}, pid {}, up {}; {} mode; table {}, timeouts refreshed {}",
            self.version,
            self.pid,
            duration(self.uptime_s as f64),
            self.mode,
            if self.kernel_mode == "owner+persist" {
                "owned (owner+persist)"
            } else {
                "unowned (older-kernel mode)"
            },
            if self.timeout_refresh {
                "in place"
            } else {
                "by delete+add"
            },
        );
        let _ = writeln!(
            out,
            "config: {}",
            self.config.as_deref().unwrap_or("embedded defaults")
        );
        if let Some(r) = &self.reload {
            match (&r.error, &r.applied) {
                (Some(e), _) => {
                    let _ = writeln!(
                        out,
                        "last reload {}: FAILED, running configuration kept: {e}",
                        r.at
                    );
                }
                (None, applied) => {
                    let _ = writeln!(
                        out,
                        "last reload {}: ok ({})",
                        r.at,
                        applied.as_deref().unwrap_or("none")
                    );
                }
            }
            if !r.restart_only.is_empty() {
                let _ = writeln!(
                    out,
                    "  changed, take effect at the next start: {}",
                    r.restart_only.join(", ")
                );
            }
        }
        let learning = if self.warmed_up {
            "warmed up".to_string()
        } else {
            format!(
                "warming up ({} of {})",
                duration(self.learned_s),
                duration(self.warmup_s)
            )
        };
        let s = &self.samples;
        let _ = writeln!(
            out,
            "{learning}; samples {} received, {} lost, {} overruns, {} malformed; conntrack {} entries",
            s.received, s.lost, s.enobufs, s.malformed, self.conntrack_entries
        );
        if let Some(t) = &self.tick_lateness {
            let _ = writeln!(
                out,
                "tick lateness over the last {} ticks: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                t.ticks, t.p50_ms, t.p99_ms, t.max_ms
            );
        }
    }

    fn incidents(&self, out: &mut String, limit: usize) {
        let _ = writeln!(out, "incidents: {}", self.incidents.len());
        for i in self.incidents.iter().take(limit) {
            let target = match (&i.proto, i.port) {
                (Some(p), Some(port)) => format!("{p}/{port}"),
                (Some(p), None) => p.clone(),
                (None, _) => "-".to_string(),
            };
            let sources: Vec<String> = i
                .sources
                .iter()
                .map(|(a, share)| format!("{a} {:.0}%", share * 100.0))
                .collect();
            let hit: Vec<String> = i
                .targets
                .iter()
                .map(|(a, share)| format!("{a} {:.0}%", share * 100.0))
                .collect();
            let hit = if hit.is_empty() {
                String::new()
            } else {
                format!(" → {}", hit.join(", "))
            };
            let _ = writeln!(
                out,
                "  {} {} {target}{hit} since {} ({}): {} pps (peak {}), baseline {}, threshold {}; {}",
                i.id,
                i.vector,
                i.since,
                duration(i.duration_s),
                rate(i.pps),
                rate(i.peak_pps),
                rate(i.baseline_pps),
                rate(i.threshold_pps),
                if sources.is_empty() {
                    format!("distributed, ~{:.0} sources", i.distinct_sources)
                } else {
                    sources.join(", ")
                }
            );
        }
        let _ = write!(out, "{}", more(self.incidents.len().saturating_sub(limit)));
    }

    fn mitigations(&self, out: &mut String, limit: usize) {
        let total = self.mitigations.len() + self.mitigations_more;
        let _ = writeln!(out, "mitigations in force: {total}");
        for m in self.mitigations.iter().take(limit) {
            let _ = writeln!(
                out,
                "  {} {} {} {}: {}",
                m.incident,
                m.vector,
                m.action,
                m.target,
                remaining(m.remaining_s)
            );
        }
        let _ = write!(out, "{}", more(total - limit.min(self.mitigations.len())));
        let total = self.operator_bans.len() + self.operator_bans_more;
        if total > 0 {
            let _ = writeln!(out, "operator bans: {total}");
            for b in self.operator_bans.iter().take(limit) {
                let _ = writeln!(out, "  {}: {}", b.cidr, remaining(Some(b.remaining_s)));
            }
            let _ = write!(out, "{}", more(total - limit.min(self.operator_bans.len())));
        }
    }

    fn sets(&self, out: &mut String) {
        if let Some(e) = &self.sets_error {
            let _ = writeln!(out, "sets: cannot list them: {e}");
            return;
        }
        // The ban sets always; the others (safelist, measures, meters) when they hold anything.
        let fills: Vec<String> = self
            .sets
            .iter()
            .filter(|s| s.elements > 0 || s.name.starts_with("ban"))
            .map(|s| match s.size {
                Some(size) => format!("{} {}/{size}", s.name, s.elements),
                None => format!("{} {}", s.name, s.elements),
            })
            .collect();
        let _ = writeln!(out, "sets: {}", fills.join(", "));
    }

    /// The full report of `ftagent status`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        out.push('\n');
        self.incidents(&mut out, usize::MAX);
        self.mitigations(&mut out, usize::MAX);
        self.sets(&mut out);
        out.push('\n');
        let _ = writeln!(
            out,
            "{:<24} {:>12} {:>12} {:>12}",
            "key", "pps", "baseline", "threshold"
        );
        for k in &self.keys {
            let _ = writeln!(
                out,
                "{:<24} {:>12} {:>12} {:>12}{}",
                k.name,
                rate(k.pps),
                rate(k.baseline_pps),
                rate(k.threshold_pps),
                if k.over { "  OVER" } else { "" }
            );
        }
        out
    }

    /// One screen of `ftagent top`, at most `rows` lines: the header, incidents and
    /// mitigations (a few), then the keys most loaded against their threshold.
    pub fn render_top(&self, rows: usize) -> String {
        let mut out = String::new();
        self.header(&mut out);
        self.incidents(&mut out, 5);
        self.mitigations(&mut out, 5);
        self.sets(&mut out);
        let _ = writeln!(
            out,
            "{:<24} {:>12} {:>12} {:>12} {:>6}",
            "key", "pps", "baseline", "threshold", "load"
        );
        let used = out.lines().count();
        let mut keys: Vec<&KeyRate> = self.keys.iter().collect();
        let load = |k: &KeyRate| {
            if k.threshold_pps > 0.0 {
                k.pps / k.threshold_pps
            } else {
                0.0
            }
        };
        keys.sort_by(|a, b| load(b).total_cmp(&load(a)));
        for k in keys.iter().take(rows.saturating_sub(used).max(1)) {
            let _ = writeln!(
                out,
                "{:<24} {:>12} {:>12} {:>12} {:>5.0}%",
                k.name,
                rate(k.pps),
                rate(k.baseline_pps),
                rate(k.threshold_pps),
                load(k) * 100.0
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 42,
            uptime_s: 3725,
            kernel_mode: "unowned".into(),
            timeout_refresh: false,
            mode: "mitigate".into(),
            config: Some("/etc/ftagent/ftagent.toml".into()),
            reload: Some(Reload {
                at: "2026-11-25T15:04:52.123Z".into(),
                ok: false,
                error: Some("/etc/ftagent/ftagent.toml:3:1: agent.tik: unknown key".into()),
                applied: None,
                restart_only: vec![],
            }),
            warmed_up: true,
            learned_s: 60.0,
            warmup_s: 60.0,
            samples: Samples {
                received: 1000,
                lost: 2,
                enobufs: 0,
                malformed: 0,
            },
            conntrack_entries: 12,
            tick_lateness: Some(TickLateness {
                ticks: 600,
                p50_ms: 0.084,
                p99_ms: 0.75,
                max_ms: 12.5,
            }),
            keys: (0..40)
                .map(|i| KeyRate {
                    name: format!("key{i}"),
                    pps: f64::from(i) * 10.0,
                    baseline_pps: 5.0,
                    threshold_pps: 100.0,
                    over: i > 10,
                })
                .collect(),
            incidents: vec![IncidentStatus {
                id: "1795619091823-4".into(),
                vector: "udp_flood".into(),
                counter: "udp_27015".into(),
                proto: Some("udp".into()),
                port: Some(27015),
                since: "2026-11-25T15:04:52.123Z".into(),
                duration_s: 12.0,
                pps: 49876.0,
                peak_pps: 50123.0,
                baseline_pps: 1.5,
                threshold_pps: 5000.0,
                concentrated: true,
                distinct_sources: 1.0,
                sources: vec![("10.250.0.1".into(), 0.98)],
                targets: vec![("10.250.1.0/28".into(), 1.0)],
            }],
            mitigations: vec![Mitigation {
                incident: "1795619091823-4".into(),
                vector: "udp_flood".into(),
                action: "ban".into(),
                target: "10.250.0.1".into(),
                set: Some("ban4".into()),
                element: Some("10.250.0.1".into()),
                remaining_s: Some(588.2),
            }],
            mitigations_more: 3,
            operator_bans: vec![],
            operator_bans_more: 0,
            sets: vec![SetFill {
                name: "ban4".into(),
                elements: 4,
                size: Some(65536),
            }],
            sets_error: None,
        }
    }

    #[test]
    fn report_names_everything() {
        let text = status().render();
        for want in [
            "up 1h 2m 5s",
            "unowned (older-kernel mode)",
            "FAILED, running configuration kept: /etc/ftagent/ftagent.toml:3:1",
            "1795619091823-4 udp_flood udp/27015 → 10.250.1.0/28 100%",
            "10.250.0.1 98%",
            "ban 10.250.0.1: 9m 48s left",
            "+3 more",
            "mitigations in force: 4",
            "ban4 4/65536",
            "key39",
            "tick lateness over the last 600 ticks: p50 0.08 ms, p99 0.75 ms, max 12.50 ms",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
    }

    #[test]
    fn top_fits_the_screen_heaviest_first() {
        let text = status().render_top(20);
        assert!(text.lines().count() <= 20, "{text}");
        let first_key = text.lines().skip_while(|l| !l.starts_with("key ")).nth(1);
        assert!(first_key.unwrap().starts_with("key39 "), "{text}");
    }

    #[test]
    fn a_listing_gives_fill_levels_and_time_left() {
        use crate::ruleset::{ElementKey, ElementState, KeyType};
        let mut s = status();
        let set = |name: &str, key, elements: Vec<ElementState>| SetState {
            name: name.into(),
            key: Some(key),
            interval: false,
            timeout: true,
            size: Some(65536),
            counter_map: false,
            dynamic: false,
            default_timeout: None,
            elements,
        };
        let banned = ElementState {
            key: Key::Addr(ElementKey::Cidr("10.250.0.1".parse().unwrap())),
            timeout: Some(Duration::from_secs(600)),
            expires: Some(Duration::from_secs(321)),
            counter: None,
        };
        s.add_listing(Ok(vec![
            set("ban4", KeyType::Ipv4Addr, vec![banned]),
            set("ban6", KeyType::Ipv6Addr, vec![]),
        ]));
        assert_eq!(s.mitigations[0].remaining_s, Some(321.0));
        assert_eq!(s.sets.len(), 2);
        assert_eq!(s.sets[0].elements, 1);
        s.add_listing(Err("EPERM".into()));
        assert_eq!(s.sets_error.as_deref(), Some("EPERM"));
        assert!(s.render().contains("sets: cannot list them: EPERM"));
    }

    #[test]
    fn round_trips_as_json() {
        let s = status();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), s);
    }
}

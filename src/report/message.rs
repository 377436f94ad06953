//! The bodies webhooks POST: the event's JSON line as is (`generic`), or a message for people
//! — Slack's `{"text", "blocks"}` and Discord's `{"content", "embeds"}` — summarising it.
//! Pure: runs on the webhook threads, never in the event loop.

use serde_json::{json, Value};

use crate::config::WebhookFormat;

/// The request body for `line` (one event as printed on stdout) from host `host`.
pub(crate) fn body(format: WebhookFormat, line: &str, host: &str) -> Vec<u8> {
    let event: Value = match (format, serde_json::from_str(line)) {
        (WebhookFormat::Generic, _) | (_, Err(_)) => return line.as_bytes().to_vec(),
        (_, Ok(event)) => event,
    };
    let summary = Summary::of(&event, host);
    let body = match format {
        WebhookFormat::Slack => summary.slack(),
        _ => summary.discord(),
    };
    body.to_string().into_bytes()
}

/// What a person needs to know about one event.
#[derive(Debug, PartialEq)]
struct Summary {
    /// One line: host, what happened, where.
    title: String,
    fields: Vec<(&'static str, String)>,
    /// Discord's embed colour.
    color: u32,
    ts: Option<String>,
    incident: String,
}

const RED: u32 = 0xd7_2a_2a;
const GREEN: u32 = 0x2e_a0_43;
const ORANGE: u32 = 0xe0_8a_00;
const BLUE: u32 = 0x3b_82_f6;

impl Summary {
    fn of(e: &Value, host: &str) -> Summary {
        let text = |key: &str| e[key].as_str().unwrap_or("").to_string();
        let vector = text("vector");
        let target = target(e);
        let mut fields = Vec::new();
        let (title, color) = match e["event"].as_str().unwrap_or("") {
            "attack_start" => {
                fields.push(("rate", rate(e)));
                fields.push((
                    "threshold",
                    format!(
                        "{} (baseline {})",
                        pps(&e["threshold_pps"]),
                        pps(&e["baseline_pps"])
                    ),
                ));
                fields.push(("sources", sources(e)));
                if let Some(targets) = targets(e) {
                    fields.push(("targets", targets));
                }
                if e["warmed_up"] == false {
                    fields.push((
                        "learning",
                        "baselines not learned yet: opened over an absolute ceiling".to_string(),
                    ));
                }
                (format!("🚨 {host}: {vector} on {target}"), RED)
            }
            "attack_end" => {
                if let Some(d) = e["duration_s"].as_f64() {
                    fields.push(("lasted", format!("{d:.1} s")));
                }
                fields.push(("peak", pps(&e["peak_pps"])));
                (format!("✅ {host}: {vector} on {target} ended"), GREEN)
            }
            "mitigation_applied" | "mitigation_removed" => {
                let applied = e["event"] == "mitigation_applied";
                let monitor = e["mode"] == "monitor";
                let what = measure(e);
                let title = match (applied, monitor) {
                    (true, false) => format!("🛡️ {host}: {what} ({vector})"),
                    (true, true) => format!("👁️ {host}: would {what} ({vector}, monitor mode)"),
                    (false, _) => format!("↩️ {host}: lifted {what} ({vector})"),
                };
                if let Some(t) = e["timeout_s"].as_u64() {
                    fields.push(("timeout", format!("{t} s")));
                }
                (title, if applied { ORANGE } else { BLUE })
            }
            other => (format!("{host}: {other}"), BLUE),
        };
        if let Some(pcap) = e["pcap"].as_str() {
            fields.push(("capture", pcap.to_string()));
        }
        Summary {
            title,
            fields,
            color,
            ts: e["ts"].as_str().map(str::to_string),
            incident: text("incident"),
        }
    }

    /// Slack's incoming-webhook message: a plain `text` (notifications, other clients) and
    /// the same as blocks.
    fn slack(&self) -> Value {
        let details: Vec<String> = self
            .fields
            .iter()
            .map(|(name, value)| format!("*{name}*: {}", slack_escape(value)))
            .collect();
        let context = format!(
            "incident {} · {}",
            slack_escape(&self.incident),
            self.ts.as_deref().unwrap_or("")
        );
        json!({
            "text": format!("{} — {}", self.title, details.join(", ").replace('*', "")),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text":
                    format!("*{}*\n{}", slack_escape(&self.title), details.join("\n"))}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            ],
        })
    }

    /// Discord's webhook message: the title as `content`, details in an embed; no mentions.
    fn discord(&self) -> Value {
        let fields: Vec<Value> = self
            .fields
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value, "inline": true}))
            .collect();
        let mut embed = json!({
            "title": self.title,
            "color": self.color,
            "fields": fields,
            "footer": {"text": format!("incident {}", self.incident)},
        });
        if let Some(ts) = &self.ts {
            embed["timestamp"] = json!(ts);
        }
        json!({
            "content": self.title,
            "embeds": [embed],
            "allowed_mentions": {"parse": []},
        })
    }
}

/// "udp/27015", "tcp/8000-8100", "icmp", "fragments".
fn target(e: &Value) -> String {
    let proto = e["proto"].as_str();
    let port = e["port"]
        .as_u64()
        .map(|p| p.to_string())
        .or_else(|| e["port_range"].as_str().map(str::to_string));
    match (proto, port) {
        (Some(proto), Some(port)) => format!("{proto}/{port}"),
        (Some(proto), None) => format!("{proto} (any port)"),
        (None, _) => "fragments".to_string(),
    }
}

/// Addresses named in a message; the rest are counted (Discord refuses titles over 256
/// characters).
const MAX_ADDRESSES: usize = 5;

/// What a mitigation event did: "ban 10.250.0.1", "limit_port udp/27015 to 10000 pps".
fn measure(e: &Value) -> String {
    let action = e["action"].as_str().unwrap_or("measure");
    let addresses: Vec<&str> = e["addresses"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut what = action.to_string();
    if !addresses.is_empty() {
        what.push(' ');
        what.push_str(&addresses[..addresses.len().min(MAX_ADDRESSES)].join(", "));
    }
    if addresses.len() > MAX_ADDRESSES {
        what.push_str(&format!(" and {} more", addresses.len() - MAX_ADDRESSES));
    }
    if let Some(port) = e["port"].as_u64() {
        what.push_str(&format!(
            " {}/{port}",
            e["proto"].as_str().unwrap_or("port")
        ));
    } else if let Some(proto) = e["proto"].as_str() {
        what.push_str(&format!(" {proto}"));
    }
    if let Some(rate) = e["rate_pps"].as_u64() {
        what.push_str(&format!(" to {rate} pps"));
    }
    what
}

/// "81.2 kpps, 39.0 Mbit/s".
fn rate(e: &Value) -> String {
    let bits = e["bps"].as_f64().unwrap_or(0.0) * 8.0;
    format!("{}, {}", pps(&e["pps"]), scaled(bits, "bit/s"))
}

fn pps(v: &Value) -> String {
    scaled(v.as_f64().unwrap_or(0.0), "pps")
}

/// 950 pps, 81.2 kpps, 1.3 Mpps, …
fn scaled(x: f64, unit: &str) -> String {
    const PREFIXES: [(f64, &str); 3] = [(1e9, "G"), (1e6, "M"), (1e3, "k")];
    match PREFIXES.iter().find(|(scale, _)| x >= *scale) {
        Some((scale, prefix)) => format!("{:.1} {prefix}{unit}", x / scale),
        None => format!("{x:.0} {unit}"),
    }
}

/// "10.250.0.1 (98 %), 10.250.0.3 (1 %)" or "distributed, ~51873 sources".
fn sources(e: &Value) -> String {
    let top: Vec<String> = e["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{} ({:.0} %)",
                        s["addr"].as_str().unwrap_or("?"),
                        s["share"].as_f64().unwrap_or(0.0) * 100.0
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if top.is_empty() {
        format!(
            "distributed, ~{} sources",
            e["distinct_sources"].as_f64().unwrap_or(0.0)
        )
    } else {
        top.join(", ")
    }
}

/// The local addresses (or the prefix) the flood hit, with their shares; None when the event
/// names none.
fn targets(e: &Value) -> Option<String> {
    let shares = e["targets"].as_array()?;
    let named: Vec<String> = shares
        .iter()
        .take(MAX_ADDRESSES)
        .filter_map(|t| {
            let what = t["addr"].as_str().or_else(|| t["prefix"].as_str())?;
            Some(format!(
                "{what} ({:.0} %)",
                t["share"].as_f64().unwrap_or(0.0) * 100.0
            ))
        })
        .collect();
    if named.is_empty() {
        return None;
    }
    let rest = shares.len().saturating_sub(MAX_ADDRESSES);
    Some(if rest > 0 {
        format!("{} and {rest} more", named.join(", "))
    } else {
        named.join(", ")
    })
}

/// Slack mrkdwn control characters.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"{"ts":"2026-11-25T15:04:52.123Z","event":"attack_start","incident":"1795619091823-4","vector":"udp_flood","proto":"udp","port":27015,"counter":"svc_udp_27015","pps":81234.5,"bps":4874070.0,"baseline_pps":42.1,"threshold_pps":5000.0,"warmed_up":true,"sources":[{"addr":"10.250.0.1","share":0.981}],"distinct_sources":2.0,"concentrated":true,"top_prefixes":[],"targets":[{"addr":"10.250.1.2","share":1.0}],"pcap":"/var/lib/ftagent/pcap/1795619091823-4.pcap"}"#;
    const APPLIED: &str = r#"{"ts":"2026-11-25T15:04:52.130Z","event":"mitigation_applied","incident":"1795619091823-4","vector":"udp_flood","action":"limit_port","addresses":[],"port":27015,"proto":"udp","rate_pps":10000,"timeout_s":120,"mode":"mitigate"}"#;

    fn json_of(format: WebhookFormat, line: &str) -> Value {
        serde_json::from_slice(&body(format, line, "web1")).unwrap()
    }

    #[test]
    fn generic_is_the_line_as_printed() {
        assert_eq!(
            body(WebhookFormat::Generic, START, "web1"),
            START.as_bytes()
        );
    }

    #[test]
    fn slack_shape() {
        let m = json_of(WebhookFormat::Slack, START);
        assert_eq!(
            m["text"],
            "🚨 web1: udp_flood on udp/27015 — rate: 81.2 kpps, 39.0 Mbit/s, threshold: 5.0 kpps (baseline 42 pps), sources: 10.250.0.1 (98 %), targets: 10.250.1.2 (100 %), capture: /var/lib/ftagent/pcap/1795619091823-4.pcap"
        );
        assert_eq!(m["blocks"][0]["type"], "section");
        assert_eq!(m["blocks"][0]["text"]["type"], "mrkdwn");
        assert!(m["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("*🚨 web1: udp_flood on udp/27015*\n*rate*: 81.2 kpps"));
        assert_eq!(
            m["blocks"][1]["elements"][0]["text"],
            "incident 1795619091823-4 · 2026-11-25T15:04:52.123Z"
        );
        let m = json_of(WebhookFormat::Slack, APPLIED);
        assert_eq!(
            m["text"],
            "🛡️ web1: limit_port udp/27015 to 10000 pps (udp_flood) — timeout: 120 s"
        );
    }

    /// Issue 14, item 5: a flood spread over a prefix says so, and one opened before the
    /// baselines were learned says that too.
    #[test]
    fn issue14_targets_and_learning_are_shown() {
        let start = START
            .replace(
                r#"[{"addr":"10.250.1.2","share":1.0}]"#,
                r#"[{"prefix":"10.250.1.0/28","share":1.0}]"#,
            )
            .replace(r#""warmed_up":true"#, r#""warmed_up":false"#);
        let m = json_of(WebhookFormat::Discord, &start);
        let fields = m["embeds"][0]["fields"].as_array().unwrap();
        let field = |name: &str| {
            fields
                .iter()
                .find(|f| f["name"] == name)
                .map(|f| f["value"].as_str().unwrap().to_string())
        };
        assert_eq!(field("targets").as_deref(), Some("10.250.1.0/28 (100 %)"));
        assert!(field("learning").unwrap().contains("absolute ceiling"));
        let m = json_of(WebhookFormat::Discord, START);
        assert!(!m.to_string().contains("learning"));
    }

    #[test]
    fn discord_shape() {
        let m = json_of(WebhookFormat::Discord, START);
        assert_eq!(m["content"], "🚨 web1: udp_flood on udp/27015");
        let embed = &m["embeds"][0];
        assert_eq!(embed["color"], RED);
        assert_eq!(embed["timestamp"], "2026-11-25T15:04:52.123Z");
        assert_eq!(embed["footer"]["text"], "incident 1795619091823-4");
        assert_eq!(
            embed["fields"][0],
            json!({"name": "rate", "value": "81.2 kpps, 39.0 Mbit/s", "inline": true})
        );
        assert_eq!(m["allowed_mentions"]["parse"], json!([]));
        let end = r#"{"ts":"t","event":"attack_end","incident":"1-1","vector":"syn_flood","proto":"tcp","port":null,"duration_s":12.25,"peak_pps":1234567.0,"sources":[]}"#;
        let m = json_of(WebhookFormat::Discord, end);
        assert_eq!(m["content"], "✅ web1: syn_flood on tcp (any port) ended");
        assert_eq!(m["embeds"][0]["fields"][0]["value"], "12.2 s");
        assert_eq!(m["embeds"][0]["fields"][1]["value"], "1.2 Mpps");
        let removed = r#"{"event":"mitigation_removed","incident":"1-1","vector":"udp_flood","action":"ban","addresses":["10.250.0.1","fd00:250::1"],"port":null,"proto":null,"rate_pps":null,"timeout_s":null,"mode":"mitigate"}"#;
        let m = json_of(WebhookFormat::Discord, removed);
        assert_eq!(
            m["content"],
            "↩️ web1: lifted ban 10.250.0.1, fd00:250::1 (udp_flood)"
        );
        assert_eq!(m["embeds"][0]["color"], BLUE);
        assert!(m["embeds"][0].get("timestamp").is_none());
    }

    #[test]
    fn long_address_lists_are_cut() {
        let addresses: Vec<String> = (1..=40).map(|i| format!("\"2001:db8::{i}\"")).collect();
        let line = format!(
            r#"{{"event":"mitigation_applied","incident":"1-1","vector":"udp_flood","action":"ban","addresses":[{}],"port":null,"proto":null,"rate_pps":null,"timeout_s":600,"mode":"mitigate"}}"#,
            addresses.join(",")
        );
        let m = json_of(WebhookFormat::Discord, &line);
        let title = m["embeds"][0]["title"].as_str().unwrap();
        assert!(
            title.ends_with("2001:db8::5 and 35 more (udp_flood)"),
            "{title}"
        );
        assert!(title.chars().count() <= 256);
    }

    #[test]
    fn distributed_sources_and_escaping() {
        let line = r#"{"event":"attack_start","incident":"1-1","vector":"fragment_flood","proto":null,"port":null,"pps":10,"bps":10,"sources":[],"distinct_sources":51873.0}"#;
        let m = json_of(WebhookFormat::Slack, line);
        let text = m["text"].as_str().unwrap();
        assert!(
            text.starts_with("🚨 web1: fragment_flood on fragments"),
            "{text}"
        );
        assert!(
            text.contains("sources: distributed, ~51873 sources"),
            "{text}"
        );
        assert_eq!(slack_escape("<a&b>"), "&lt;a&amp;b&gt;");
        // Not JSON: passed on as is, whatever the format.
        assert_eq!(body(WebhookFormat::Slack, "oops", "h"), b"oops");
    }
}

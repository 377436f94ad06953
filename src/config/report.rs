//! The reporting keys of the configuration: `[[webhook]]` (where incident events are POSTed)
//! and `[pcap]` (packet captures per incident), checked like every other key.

use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeValue;
use toml::Spanned;

use super::check::{key_text, Checker};
use super::keys::WEBHOOK_KEYS;

/// The events a webhook may be sent, in the order they happen.
pub(crate) const WEBHOOK_EVENTS: &[&str] = &[
    "attack_start",
    "mitigation_applied",
    "mitigation_removed",
    "attack_end",
];

/// One `[[webhook]]`: a URL incident events are POSTed to as JSON, and in which shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Webhook {
    /// An http:// or https:// URL.
    pub(crate) url: String,
    pub(crate) format: WebhookFormat,
    /// The longest one attempt may take, connecting included.
    pub(crate) timeout: Duration,
    /// Attempts after the first one fails (with exponential backoff).
    pub(crate) retries: u32,
    /// The events sent, names from [`WEBHOOK_EVENTS`].
    pub(crate) events: Vec<&'static str>,
    /// A PEM file of the certificate authorities trusted for https://, instead of the
    /// built-in Mozilla roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// More request headers (e.g. Authorization), in file order.
    pub(crate) headers: Vec<(String, String)>,
}

/// The JSON shape of a webhook's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum WebhookFormat {
    /// The event's JSON line as ftagent prints it.
    Generic,
    /// `{"text": …, "blocks": …}` for Slack incoming webhooks (and Mattermost, Rocket.Chat).
    Slack,
    /// `{"content": …, "embeds": …}` for Discord webhooks.
    Discord,
}

impl WebhookFormat {}

/// `[pcap]`: packet captures of incidents, from the sampled packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pcap {
    pub(crate) enabled: bool,
    /// The most recent samples kept in memory, written at the head of each capture.
    pub(crate) ring_packets: u32,
    /// Packets written to one incident's capture at most (those of the ring included).
    pub(crate) max_packets_per_incident: u32,
    /// The most the capture directory may hold, in MiB; the oldest captures go first.
    pub(crate) max_disk_mib: u32,
}

impl Default for Pcap {
    /// The descriptors' defaults (see `keys.rs`).
    fn default() -> Pcap {
        super::Config::default().pcap
    }
}

impl Default for Webhook {
    /// The defaults of every key but `url` (see `keys.rs`).
    fn default() -> Webhook {
        super::keys::blank_webhook()
    }
}

/// Headers ftagent sets itself.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

impl Checker {
    /// The `[[webhook]]` list; None if anything in it is wrong.
    pub(super) fn webhooks(&mut self, value: &Spanned<DeValue<'_>>) -> Option<Vec<Webhook>> {
        let array = self.array(
            value,
            "webhook",
            "one or more [[webhook]] tables",
            "(write [[webhook]], with double brackets, once per webhook)",
        )?;
        let mut webhooks = Vec::with_capacity(array.len());
        for (index, item) in array.iter().enumerate() {
            webhooks.push(self.webhook(item, &format!("webhook[{}]", index + 1)));
        }
        webhooks.into_iter().collect()
    }

    fn webhook(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Webhook> {
        let table = self.table(
            value,
            path,
            "a [[webhook]] table such as { url = \"https://…\", format = \"slack\" }",
        )?;
        let mut webhook = Webhook::default();
        let before = self.issues.len();
        self.keys(
            table,
            path,
            "webhook",
            WEBHOOK_KEYS,
            "the keys of [[webhook]] are",
            &mut webhook,
        );
        let good = self.issues.len() == before;
        let url = table.iter().find(|(k, _)| k.get_ref().as_ref() == "url");
        if url.is_none() {
            if good {
                self.report(
                    value.span(),
                    &format!("{path}.url"),
                    "missing: every [[webhook]] needs a url, e.g. url = \"https://hooks.example.net/ftagent\"".to_string(),
                );
            }
            return None;
        }
        good.then_some(webhook)
    }

    /// An http:// or https:// URL with a host.
    pub(super) fn url(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<String> {
        let text = self.string(
            value,
            path,
            "a URL string such as \"https://hooks.example.net/ftagent\"",
        )?;
        let problem = match text.parse::<ureq::http::Uri>() {
            Err(error) => format!("{text:?} is not a URL: {error}"),
            Ok(uri) if !matches!(uri.scheme_str(), Some("http" | "https")) => {
                format!("{text:?} is not an http:// or https:// URL")
            }
            Ok(uri) if uri.host().is_none_or(str::is_empty) => {
                format!("{text:?} names no host")
            }
            Ok(_) => return Some(text.to_string()),
        };
        self.report(value.span(), path, problem);
        None
    }

    pub(super) fn format(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<WebhookFormat> {
        const EXPECTED: &str = "\"generic\", \"slack\" or \"discord\"";
        match self.string(value, path, EXPECTED)? {
            "generic" => Some(WebhookFormat::Generic),
            "slack" => Some(WebhookFormat::Slack),
            "discord" => Some(WebhookFormat::Discord),
            other => {
                self.report(
                    value.span(),
                    path,
                    format!("{other:?} is not a webhook format: expected {EXPECTED}"),
                );
                None
            }
        }
    }

    /// A non-empty list of distinct names from [`WEBHOOK_EVENTS`].
    pub(super) fn event_names(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<Vec<&'static str>> {
        let expected = WEBHOOK_EVENTS.join(", ");
        let array = self.array(
            value,
            path,
            &format!("a list of event names ({expected})"),
            "",
        )?;
        if array.is_empty() {
            self.report(
                value.span(),
                path,
                "lists no events; remove the [[webhook]] or the key (all events)".to_string(),
            );
            return None;
        }
        let mut names: Vec<&'static str> = Vec::with_capacity(array.len());
        let mut all_good = true;
        for (index, item) in array.iter().enumerate() {
            let item_path = format!("{path}[{}]", index + 1);
            let Some(text) = self.string(item, &item_path, "an event name") else {
                all_good = false;
                continue;
            };
            let problem = match WEBHOOK_EVENTS.iter().find(|e| **e == text) {
                None => format!("{text:?} is not an event a webhook is sent: expected {expected}"),
                Some(name) if names.contains(name) => {
                    format!("{text:?} is listed twice")
                }
                Some(name) => {
                    names.push(name);
                    continue;
                }
            };
            self.report(item.span(), &item_path, problem);
            all_good = false;
        }
        all_good.then_some(names)
    }

    /// A table of header names (RFC 9110 tokens) and values (no control characters).
    pub(super) fn headers(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<Vec<(String, String)>> {
        let table = self.table(
            value,
            path,
            "a table of headers such as { Authorization = \"Bearer …\" }",
        )?;
        let mut headers = Vec::with_capacity(table.len());
        let mut all_good = true;
        for (key, item) in table {
            let name = key.get_ref().as_ref();
            let item_path = format!("{path}.{}", key_text(name));
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            let problem = if !token {
                Some(format!("{name:?} is not a header name"))
            } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                Some(format!("{name} is set by ftagent itself"))
            } else {
                None
            };
            if let Some(problem) = problem {
                self.report(key.span(), &item_path, problem);
                all_good = false;
                continue;
            }
            let Some(text) = self.string(item, &item_path, "a header value string") else {
                all_good = false;
                continue;
            };
            if text.chars().any(|c| c.is_control() && c != '\t') {
                self.report(
                    item.span(),
                    &item_path,
                    "a header value may not hold control characters (line breaks among them)"
                        .to_string(),
                );
                all_good = false;
                continue;
            }
            headers.push((name.to_string(), text.to_string()));
        }
        all_good.then_some(headers)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, ConfigError};
    use super::*;

    const ORIGIN: &str = "/etc/ftagent/ftagent.toml";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new(ORIGIN))
    }

    fn assert_error(text: &str, line: usize, column: usize, key: &str, words: &str) {
        let message = match parse(text) {
            Err(error) => error.to_string(),
            Ok(config) => panic!("expected an error, got {config:?}"),
        };
        let prefix = format!("{ORIGIN}:{line}:{column}: {key}: ");
        assert!(
            message.starts_with(&prefix),
            "{message:?} should start with {prefix:?}"
        );
        assert!(
            message.contains(words),
            "{message:?} should contain {words:?}"
        );
    }

    #[test]
    fn defaults() {
        let config = Config::default();
        assert!(config.webhooks.is_empty());
        assert_eq!(
            config.pcap,
            Pcap {
                enabled: true,
                ring_packets: 2048,
                max_packets_per_incident: 10_000,
                max_disk_mib: 100,
            }
        );
    }

    #[test]
    fn parses_every_key() {
        let config = parse(
            r#"
[[webhook]]
url = "https://hooks.slack.com/services/T0/B0/x"
format = "slack"
timeout = "2s"
retries = 0
events = ["attack_start", "attack_end"]
ca_file = "/etc/ssl/certs/ca-certificates.crt"
headers = { Authorization = "Bearer abc", "X-Team" = "noc" }

[[webhook]]
url = "http://127.0.0.1:9000/hook"

[pcap]
enabled = false
ring_packets = 0
max_packets_per_incident = 500
max_disk_mib = 1
"#,
        )
        .unwrap();
        assert_eq!(
            config.webhooks,
            [
                Webhook {
                    url: "https://hooks.slack.com/services/T0/B0/x".to_string(),
                    format: WebhookFormat::Slack,
                    timeout: Duration::from_secs(2),
                    retries: 0,
                    events: vec!["attack_start", "attack_end"],
                    ca_file: Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt")),
                    headers: vec![
                        ("Authorization".to_string(), "Bearer abc".to_string()),
                        ("X-Team".to_string(), "noc".to_string())
                    ],
                },
                Webhook {
                    url: "http://127.0.0.1:9000/hook".to_string(),
                    ..Webhook::default()
                }
            ]
        );
        assert_eq!(
            config.pcap,
            Pcap {
                enabled: false,
                ring_packets: 0,
                max_packets_per_incident: 500,
                max_disk_mib: 1,
            }
        );
        let discord = parse(
            "[[webhook]]\nurl = \"https://discord.com/api/webhooks/1/x\"\nformat = \"discord\"\n",
        )
        .unwrap();
        assert_eq!(discord.webhooks[0].format, WebhookFormat::Discord);
    }

    #[test]
    fn webhook_errors_name_the_place() {
        let hook = |body: &str| {
            format!("[[webhook]]\nurl = \"http://127.0.0.1/\"\n\n[[webhook]]\n{body}\n")
        };
        assert_error(
            &hook("format = \"slack\""),
            4,
            1,
            "webhook[2].url",
            "missing: every [[webhook]] needs a url",
        );
        assert_error(
            &hook("url = \"ftp://x/\""),
            5,
            7,
            "webhook[2].url",
            "not an http:// or https:// URL",
        );
        assert_error(
            &hook("url = \"not a url\""),
            5,
            7,
            "webhook[2].url",
            "is not a URL",
        );
        assert_error(&hook("url = 5"), 5, 7, "webhook[2].url", "found an integer");
        let body = "url = \"https://h/\"\nformat = \"teams\"";
        assert_error(
            &hook(body),
            6,
            10,
            "webhook[2].format",
            "\"teams\" is not a webhook format: expected \"generic\", \"slack\" or \"discord\"",
        );
        let body = "url = \"https://h/\"\ntimeout = \"2m\"";
        assert_error(
            &hook(body),
            6,
            11,
            "webhook[2].timeout",
            "between 100ms and 60s",
        );
        let body = "url = \"https://h/\"\nretries = 11";
        assert_error(&hook(body), 6, 11, "webhook[2].retries", "between 0 and 10");
        let body = "url = \"https://h/\"\nevents = [\"attack_start\", \"attack_update\"]";
        assert_error(
            &hook(body),
            6,
            27,
            "webhook[2].events[2]",
            "\"attack_update\" is not an event a webhook is sent",
        );
        let body = "url = \"https://h/\"\nevents = [\"attack_end\", \"attack_end\"]";
        assert_error(&hook(body), 6, 25, "webhook[2].events[2]", "listed twice");
        let body = "url = \"https://h/\"\nevents = []";
        assert_error(&hook(body), 6, 10, "webhook[2].events", "lists no events");
        let body = "url = \"https://h/\"\nca_file = \"certs.pem\"";
        assert_error(
            &hook(body),
            6,
            11,
            "webhook[2].ca_file",
            "not an absolute path",
        );
        let body = "url = \"https://h/\"\nheaders = { Host = \"x\" }";
        assert_error(
            &hook(body),
            6,
            13,
            "webhook[2].headers.Host",
            "set by ftagent itself",
        );
        let body = "url = \"https://h/\"\nheaders = { \"a b\" = \"x\" }";
        assert_error(
            &hook(body),
            6,
            13,
            "webhook[2].headers.\"a b\"",
            "not a header name",
        );
        let body = "url = \"https://h/\"\nheaders = { X = \"a\\nb\" }";
        assert_error(
            &hook(body),
            6,
            17,
            "webhook[2].headers.X",
            "control characters",
        );
        let body = "url = \"https://h/\"\nmethod = \"PUT\"";
        assert_error(
            &hook(body),
            6,
            1,
            "webhook[2].method",
            "the keys of [[webhook]] are: url, format",
        );
        assert_error(
            "[webhook]\nurl = \"https://h/\"\n",
            1,
            1,
            "webhook",
            "expected one or more [[webhook]] tables",
        );
    }

    #[test]
    fn pcap_errors_name_the_place() {
        assert_error(
            "[pcap]\nring_packets = 70000\n",
            2,
            16,
            "pcap.ring_packets",
            "between 0 and 65536",
        );
        assert_error(
            "[pcap]\nmax_packets_per_incident = 0\n",
            2,
            28,
            "pcap.max_packets_per_incident",
            "between 1 and 10000000",
        );
        assert_error(
            "[pcap]\nmax_disk_mib = \"1G\"\n",
            2,
            16,
            "pcap.max_disk_mib",
            "expected an integer",
        );
        assert_error(
            "[pcap]\nenabled = 1\n",
            2,
            11,
            "pcap.enabled",
            "expected true or false",
        );
        assert_error(
            "[pcap]\ndir = \"/x\"\n",
            2,
            1,
            "pcap.dir",
            "the keys of [pcap] are",
        );
    }
}

//! `[metrics]`: the Prometheus endpoint (`/metrics`, served by the daemon's own event loop).
//! On by default, on loopback only, on a port of our own. Checked like every other section:
//! `file:line:column: metrics.key: message`.

use std::net::SocketAddr;

use toml::de::DeValue;
use toml::Spanned;

use super::check::Checker;

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metrics {
    pub(crate) enabled: bool,
    /// Where `/metrics` is served.
    pub(crate) listen: SocketAddr,
}

impl Default for Metrics {
    /// The descriptors' defaults (see `keys.rs`).
    fn default() -> Metrics {
        super::Config::default().metrics
    }
}

impl Checker {
    /// `metrics.listen`: an address and a port other than 0.
    pub(super) fn listen(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<SocketAddr> {
        let address: Option<SocketAddr> =
            self.parsed(value, path, "an address:port such as \"127.0.0.1:9947\"");
        if address.is_some_and(|a| a.port() == 0) {
            self.report(
                value.span(),
                path,
                "port 0 is not a port to scrape: give one between 1 and 65535".to_string(),
            );
            return None;
        }
        address
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("/etc/ftagent/ftagent.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_to_loopback_on_our_port() {
        let m = Config::default().metrics;
        assert!(m.enabled);
        assert_eq!(m.listen.to_string(), "127.0.0.1:9947");
    }

    #[test]
    fn every_key() {
        let m = parse("[metrics]\nenabled = false\nlisten = \"[::]:9950\"\n")
            .unwrap()
            .metrics;
        assert!(!m.enabled);
        assert_eq!(m.listen.to_string(), "[::]:9950");
    }

    #[test]
    fn mistakes_name_their_place() {
        let cases = [
            (
                "[metrics]\nlisten = \"localhost:9947\"\n",
                "2:10: metrics.listen: \"localhost:9947\" is not an address:port",
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1\"\n",
                "2:10: metrics.listen: \"127.0.0.1\" is not an address:port",
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1:0\"\n",
                "2:10: metrics.listen: port 0 is not a port to scrape",
            ),
            (
                "[metrics]\nlisten = 9947\n",
                "2:10: metrics.listen: expected an address:port",
            ),
            (
                "[metrics]\nenabled = 1\n",
                "2:11: metrics.enabled: expected true or false",
            ),
            (
                "[metrics]\nlistn = \"127.0.0.1:9947\"\n",
                "2:1: metrics.listn: unknown key (did you mean \"listen\"?)",
            ),
            ("metrics = 1\n", "1:11: metrics: expected a table [metrics]"),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap_err();
            assert!(
                got.starts_with(&format!("/etc/ftagent/ftagent.toml:{want}")),
                "{text:?}: {got}"
            );
        }
    }
}

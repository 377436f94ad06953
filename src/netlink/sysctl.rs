//! Sysctls of this network namespace that a measure changes for its duration and puts back:
//! SYN cookies for a SYN flood (`net.ipv4.tcp_syncookies`), and conntrack's mid-stream pickup
//! off while the SYN proxy runs (`net.netfilter.nf_conntrack_tcp_loose`: the client's ACK must
//! stay `invalid` for the proxy to take it).

use std::io;

const SYNCOOKIES: &str = "/proc/sys/net/ipv4/tcp_syncookies";
const TCP_LOOSE: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose";

/// A sysctl switched from `from` to `to` while needed; remembers the value found before, to
/// put it back afterwards.
#[derive(Debug)]
pub(crate) struct Switch {
    path: String,
    from: &'static str,
    to: &'static str,
    previous: Option<String>,
}

impl Switch {
    /// SYN cookies on (1: when the SYN queue overflows) unless they already are.
    pub(crate) fn syn_cookies() -> Switch {
        Switch::new(SYNCOOKIES, "0", "1")
    }

    /// Conntrack picks up no TCP connection it has not seen start.
    pub(crate) fn strict_tcp_tracking() -> Switch {
        Switch::new(TCP_LOOSE, "1", "0")
    }

    fn new(path: &str, from: &'static str, to: &'static str) -> Switch {
        Switch {
            path: path.to_string(),
            from,
            to,
            previous: None,
        }
    }

    /// The sysctl's name, for messages.
    pub(crate) fn name(&self) -> String {
        self.path.trim_start_matches("/proc/sys/").replace('/', ".")
    }

    /// Switches it (when it is `from`) and remembers what it was, unless already done.
    pub(crate) fn enable(&mut self) -> io::Result<()> {
        let current = std::fs::read_to_string(&self.path)?.trim().to_string();
        if self.previous.is_none() {
            self.previous = Some(current.clone());
        }
        if current == self.from {
            std::fs::write(&self.path, self.to)?;
        }
        Ok(())
    }

    /// Puts back the value found by `enable`.
    pub(crate) fn restore(&mut self) -> io::Result<()> {
        match self.previous.take() {
            Some(value) => std::fs::write(&self.path, value),
            None => Ok(()),
        }
    }

    /// The value found by `enable`, while switched because of us.
    pub(crate) fn previous(&self) -> Option<&str> {
        self.previous.as_deref()
    }

    /// Takes over the value an earlier run found before it switched the sysctl (it was
    /// killed before putting it back).
    pub(crate) fn resume(&mut self, previous: String) {
        self.previous = Some(previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_and_puts_back_what_was_there() {
        let path = std::env::temp_dir().join(format!("ftagent-syncookies-{}", std::process::id()));
        for (before, during) in [("0", "1"), ("2", "2"), ("1", "1")] {
            std::fs::write(&path, format!("{before}\n")).unwrap();
            let mut s = Switch::new(&path.to_string_lossy(), "0", "1");
            s.enable().unwrap();
            s.enable().unwrap(); // a second incident: nothing more
            assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), during);
            s.restore().unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), before);
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn names_are_the_sysctl_keys() {
        assert_eq!(Switch::syn_cookies().name(), "net.ipv4.tcp_syncookies");
        assert_eq!(
            Switch::strict_tcp_tracking().name(),
            "net.netfilter.nf_conntrack_tcp_loose"
        );
    }
}

//! SYN cookies for the duration of a SYN flood: `net.ipv4.tcp_syncookies` of this network
//! namespace, switched on and put back to what it was.

use std::io;
use std::path::Path;

const SYNCOOKIES: &str = "/proc/sys/net/ipv4/tcp_syncookies";

/// Remembers the value found before turning SYN cookies on, to put it back afterwards.
#[derive(Debug, Default)]
pub struct SynCookies {
    previous: Option<String>,
}

impl SynCookies {
    /// Turns SYN cookies on (1: when the SYN queue overflows) unless they already are.
    pub fn enable(&mut self) -> io::Result<()> {
        self.enable_at(Path::new(SYNCOOKIES))
    }

    /// Puts back the value found by `enable`.
    pub fn restore(&mut self) -> io::Result<()> {
        self.restore_at(Path::new(SYNCOOKIES))
    }

    /// The value found by `enable`, while the SYN cookies are on because of us.
    pub fn previous(&self) -> Option<&str> {
        self.previous.as_deref()
    }

    /// Takes over the value an earlier run found before it turned SYN cookies on (it was
    /// killed before putting it back).
    pub fn resume(&mut self, previous: String) {
        self.previous = Some(previous);
    }

    fn enable_at(&mut self, path: &Path) -> io::Result<()> {
        let current = std::fs::read_to_string(path)?.trim().to_string();
        if self.previous.is_none() {
            self.previous = Some(current.clone());
        }
        if current == "0" {
            std::fs::write(path, "1")?;
        }
        Ok(())
    }

    fn restore_at(&mut self, path: &Path) -> io::Result<()> {
        match self.previous.take() {
            Some(value) => std::fs::write(path, value),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_on_and_puts_back_what_was_there() {
        let path = std::env::temp_dir().join(format!("ftagent-syncookies-{}", std::process::id()));
        for (before, during) in [("0", "1"), ("2", "2"), ("1", "1")] {
            std::fs::write(&path, format!("{before}\n")).unwrap();
            let mut s = SynCookies::default();
            s.enable_at(&path).unwrap();
            s.enable_at(&path).unwrap(); // a second incident: nothing more
            assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), during);
            s.restore_at(&path).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), before);
        }
        let _ = std::fs::remove_file(&path);
    }
}

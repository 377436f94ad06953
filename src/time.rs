//! Time formatting shared by every layer: the `ts` of each JSON line ftagent prints or posts.
//! Pure; the caller passes the time.

use std::time::{Duration, SystemTime};

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-25T15:04:52.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let text =
        humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64));
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_083_092_123);
        assert_eq!(rfc3339(t), "2025-11-25T15:04:52.123Z");
    }
}

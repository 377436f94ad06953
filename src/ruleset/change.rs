//! The kernel-change vocabulary: what mitigation asks of our sets (bans and aggregate
//! measures with timeouts, SYN cookies) as plain data, which the daemon applies through
//! netlink in one batch. Nothing here touches the system.

use std::time::Duration;

use super::Measure;
use crate::addr::Cidr;

/// One change to our sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Add (or refresh) a ban with this timeout.
    Ban { cidr: Cidr, timeout: Duration },
    /// Lift a ban (whether or not it is still there).
    Unban { cidr: Cidr },
    /// Switch an aggregate measure on (or refresh it) for this long.
    Enable { measure: Measure, timeout: Duration },
    /// Switch it off (whether or not it is still on).
    Disable { measure: Measure },
    /// SYN cookies on (`net.ipv4.tcp_syncookies`) or back to what they were.
    SynCookies { on: bool },
}

/// Something we put in a set with a timeout: a ban or an aggregate measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Item {
    Ban(Cidr),
    Measure(Measure),
}

/// An item in force: its full timeout and the time it has left, so that putting it back
/// (a table restored, a restart) neither lengthens nor shortens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InForce {
    pub(crate) item: Item,
    pub(crate) timeout: Duration,
    pub(crate) left: Duration,
}

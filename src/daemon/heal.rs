//! Self-healing: our table put back when someone else deletes or changes it (`nft flush
//! ruleset`, nftables.service, a panel's "apply firewall" — on kernels without the `owner`
//! flag). Noticed at once from the kernel's notifications, by a generation check once a
//! second (for notifications the kernel dropped), and by the tick's counter dump (counters
//! missing) as the backstop; restored in one transaction with every ban and measure in force
//! and the time it has left; logged, counted, and reported as a `table_restored` event.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::event::{self, EventBody};
use crate::netlink::monitor::{Committer, Tampering};

/// At most `RESTORES_PER_WINDOW` restores in this window: a tool that deletes our table
/// again and again does not get a busy loop, and an occasional one is undone at once.
pub(crate) const RESTORE_WINDOW: Duration = Duration::from_secs(1);
pub(crate) const RESTORES_PER_WINDOW: usize = 5;
/// How often the ruleset generation is compared with the last one announced.
pub(crate) const GENERATION_CHECK: Duration = Duration::from_secs(1);

/// Why the table was restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Another process deleted it (`delete table`, `flush ruleset`).
    TableDeleted,
    /// Another process deleted or changed chains, rules, sets, counters or elements in it.
    TableChanged,
    /// The counter dump found counters missing (notifications missed).
    CountersMissing,
}

impl Cause {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cause::TableDeleted => "table_deleted",
            Cause::TableChanged => "table_changed",
            Cause::CountersMissing => "counters_missing",
        }
    }

    /// The cause of what the notifications showed, if they showed damage.
    pub(crate) fn of(seen: &Tampering) -> Option<Cause> {
        if seen.table_deleted {
            Some(Cause::TableDeleted)
        } else if seen.changes > 0 {
            Some(Cause::TableChanged)
        } else {
            None
        }
    }
}

/// A restore waiting for its turn (the rate limit), and what is known of who caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) cause: Cause,
    pub(crate) by: Option<Committer>,
    /// When the damage was noticed.
    pub(crate) noticed: Instant,
}

/// The restore waiting, the last one, and the next generation check.
#[derive(Debug, Default)]
pub(crate) struct Healing {
    pub(crate) pending: Option<Pending>,
    /// When the last restores were attempted, oldest first.
    recent: [Option<Instant>; RESTORES_PER_WINDOW],
    pub(crate) next_generation_check: Option<Instant>,
}

impl Healing {
    /// Notes damage; the first cause seen stands (a deleted table outranks a changed one).
    pub(crate) fn note(&mut self, cause: Cause, by: Option<Committer>, now: Instant) {
        match &mut self.pending {
            Some(p) => {
                if cause == Cause::TableDeleted {
                    p.cause = cause;
                }
                p.by = p.by.or(by);
            }
            None => {
                self.pending = Some(Pending {
                    cause,
                    by,
                    noticed: now,
                })
            }
        }
    }

    /// The pending restore, if its turn has come at `now`.
    pub(crate) fn due(&self, now: Instant) -> Option<Pending> {
        let waited =
            self.recent[0].is_none_or(|t| now.saturating_duration_since(t) >= RESTORE_WINDOW);
        self.pending.filter(|_| waited)
    }

    /// Notes a restore attempted at `now`.
    pub(crate) fn attempted(&mut self, now: Instant) {
        self.recent.rotate_left(1);
        self.recent[RESTORES_PER_WINDOW - 1] = Some(now);
    }

    /// Whether the generation check is due at `now` (and schedules the next).
    pub(crate) fn generation_check_due(&mut self, now: Instant) -> bool {
        let due = self.next_generation_check.is_none_or(|t| now >= t);
        if due {
            self.next_generation_check = Some(now + GENERATION_CHECK);
        }
        due
    }
}

/// The `table_restored` event: why, by whom, and what was put back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableRestored {
    pub(crate) cause: Cause,
    pub(crate) by: Option<Committer>,
    /// Bans and measures that were still in the kernel and were kept (a partial change).
    pub(crate) kept: usize,
    /// Bans and measures in force that were lost and put back, with the time they had left.
    pub(crate) put_back: usize,
    /// From noticing the damage to the restored table, in milliseconds.
    pub(crate) took: Duration,
    /// Restores since start, this one included.
    pub(crate) restores: u64,
}

impl TableRestored {
    /// One JSON line (the schema is in the README, section "Events").
    pub(crate) fn to_json(&self, wall_clock: SystemTime) -> String {
        let line = RestoredLine {
            table: format!("inet {}", crate::ruleset::TABLE),
            cause: self.cause.name(),
            by_pid: self.by.map(|b| b.pid),
            by_process: self.by.as_ref().map(|b| b.name()),
            kept: self.kept,
            put_back: self.put_back,
            took_ms: self.took.as_millis() as u64,
            restores: self.restores,
        };
        event::line(&line, wall_clock)
    }
}

/// The `table_restored` event's fields, in schema order.
#[derive(Serialize)]
struct RestoredLine<'a> {
    table: String,
    cause: &'static str,
    by_pid: Option<u32>,
    by_process: Option<&'a str>,
    kept: usize,
    put_back: usize,
    took_ms: u64,
    restores: u64,
}

impl EventBody for RestoredLine<'_> {
    fn name(&self) -> &'static str {
        "table_restored"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_are_at_most_a_few_a_second() {
        let t0 = Instant::now();
        let mut h = Healing::default();
        assert_eq!(h.due(t0), None);
        h.note(Cause::TableChanged, None, t0);
        h.note(Cause::TableDeleted, None, t0);
        assert_eq!(h.due(t0).map(|p| p.cause), Some(Cause::TableDeleted));
        h.pending = None;
        h.note(Cause::CountersMissing, None, t0);
        for _ in 0..RESTORES_PER_WINDOW {
            assert!(h.due(t0).is_some(), "a few at once");
            h.attempted(t0);
        }
        assert_eq!(h.due(t0 + RESTORE_WINDOW / 2), None, "then they wait");
        assert!(h.due(t0 + RESTORE_WINDOW).is_some());
    }

    #[test]
    fn the_event_names_cause_and_counts() {
        let e = TableRestored {
            cause: Cause::TableDeleted,
            by: None,
            kept: 0,
            put_back: 3,
            took: Duration::from_millis(4),
            restores: 2,
        };
        let v: serde_json::Value =
            serde_json::from_str(&e.to_json(SystemTime::UNIX_EPOCH)).unwrap();
        assert_eq!(v["event"], "table_restored");
        assert_eq!(v["cause"], "table_deleted");
        assert_eq!(v["put_back"], 3);
        assert_eq!(v["restores"], 2);
        assert!(v["by_process"].is_null());
    }
}

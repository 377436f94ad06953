//! Tick lateness: how late each tick of the timer starts against its schedule. Pure: times are
//! passed in (the monotonic clock, as a `Duration` since its origin); fixed-size, so recording
//! a tick allocates nothing. Kept as a Prometheus histogram for `/metrics` and as a ring of the
//! latest ticks for the quantiles `status` shows.

use std::time::Duration;

use crate::metrics::Histogram;
use crate::status::TickLateness;

/// The histogram's upper bounds, seconds (`+Inf` is implicit): 0.25 ms to 100 ms.
pub(crate) const BUCKETS: [f64; 11] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.007_5, 0.01, 0.025, 0.05, 0.1,
];
/// Ticks the quantiles of `status` are taken over (a minute at the default 100 ms tick).
pub(crate) const RECENT: usize = 600;
/// Periods one late tick accounts for at most (a loop stalled for minutes counts this many).
const MAX_MERGED: u64 = 1_000;

/// The tick timer's schedule: when its next period is due and how long a period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    next_due: Duration,
    interval: Duration,
}

impl Schedule {
    /// A timer armed to fire first at `first_due`, then every `interval`.
    pub(crate) fn new(first_due: Duration, interval: Duration) -> Schedule {
        Schedule {
            next_due: first_due,
            interval,
        }
    }

    /// The timer reported `expirations` periods run out and the tick starts at `now`: hands
    /// the lateness of each period to `each`, oldest first, and moves the schedule on. A tick
    /// that comes so late that several periods ran out serves them all at once, so each
    /// counts, with its own lateness (at most [`MAX_MERGED`] of them).
    pub(crate) fn served(
        &mut self,
        expirations: u64,
        now: Duration,
        mut each: impl FnMut(Duration),
    ) {
        let skipped = expirations.saturating_sub(MAX_MERGED);
        let mut due = self.next_due + mul(self.interval, skipped);
        for _ in skipped..expirations {
            each(now.saturating_sub(due));
            due += self.interval;
        }
        self.next_due = due;
    }
}

fn mul(d: Duration, n: u64) -> Duration {
    d.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Every tick's lateness since start (the histogram) and the latest [`RECENT`] ticks'.
#[derive(Debug, Clone)]
pub(crate) struct Lateness {
    /// Ticks per bucket, not cumulative; the last is `+Inf`.
    buckets: [u64; BUCKETS.len() + 1],
    sum: Duration,
    count: u64,
    /// The latest ticks' lateness in microseconds, a ring: `next` is the oldest once full.
    recent: [u32; RECENT],
    next: usize,
}

impl Default for Lateness {
    fn default() -> Lateness {
        Lateness {
            buckets: [0; BUCKETS.len() + 1],
            sum: Duration::ZERO,
            count: 0,
            recent: [0; RECENT],
            next: 0,
        }
    }
}

impl Lateness {
    /// One tick that started `late` after it was due.
    pub(crate) fn record(&mut self, late: Duration) {
        let seconds = late.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(BUCKETS.len());
        if let Some(n) = self.buckets.get_mut(bucket) {
            *n += 1;
        }
        self.sum = self.sum.saturating_add(late);
        self.count += 1;
        let micros = u32::try_from(late.as_micros()).unwrap_or(u32::MAX);
        if let Some(slot) = self.recent.get_mut(self.next) {
            *slot = micros;
        }
        self.next = (self.next + 1) % RECENT;
    }

    /// The Prometheus histogram: cumulative counts per upper bound.
    pub(crate) fn histogram(&self) -> Histogram {
        let mut cumulative = 0;
        let buckets = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, &n)| {
                cumulative += n;
                (le, cumulative)
            })
            .collect();
        Histogram {
            buckets,
            sum: self.sum.as_secs_f64(),
            count: self.count,
        }
    }

    /// The median, 99th percentile and maximum of the latest ticks (None before the first).
    /// Sorts a copy: for `status`, never per tick.
    pub(crate) fn summary(&self) -> Option<TickLateness> {
        let held = usize::try_from(self.count)
            .unwrap_or(usize::MAX)
            .min(RECENT);
        if held == 0 {
            return None;
        }
        let mut latest: Vec<u32> = self.recent.get(..held).unwrap_or(&[]).to_vec();
        latest.sort_unstable();
        let at = |q: f64| {
            let rank = ((held as f64 * q).ceil() as usize).clamp(1, held);
            let micros = latest.get(rank - 1).copied().unwrap_or(0);
            f64::from(micros) / 1000.0
        };
        Some(TickLateness {
            ticks: held as u64,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn served(schedule: &mut Schedule, expirations: u64, now: Duration) -> Vec<Duration> {
        let mut seen = Vec::new();
        schedule.served(expirations, now, |late| seen.push(late));
        seen
    }

    #[test]
    fn a_tick_is_late_by_the_time_since_its_period_was_due() {
        let mut schedule = Schedule::new(100 * MS, 100 * MS);
        assert_eq!(served(&mut schedule, 1, 100 * MS), [Duration::ZERO]);
        assert_eq!(served(&mut schedule, 1, 203 * MS), [3 * MS]);
        // The schedule does not drift with a late tick: the next is due at 300 ms.
        assert_eq!(served(&mut schedule, 1, 300 * MS + MS / 4), [MS / 4]);
    }

    #[test]
    fn a_tick_that_merged_periods_counts_each_with_its_own_lateness() {
        let mut schedule = Schedule::new(100 * MS, 100 * MS);
        // Blocked until 350 ms: the periods due at 100, 200 and 300 ms run out together.
        assert_eq!(
            served(&mut schedule, 3, 350 * MS),
            [250 * MS, 150 * MS, 50 * MS]
        );
        assert_eq!(served(&mut schedule, 1, 401 * MS), [MS]);
    }

    #[test]
    fn a_stall_of_many_periods_counts_the_latest_thousand() {
        let mut schedule = Schedule::new(100 * MS, 100 * MS);
        let seen = served(&mut schedule, 5_000, Duration::from_secs(500) + 5 * MS);
        assert_eq!(seen.len(), 1_000);
        assert_eq!(seen.last(), Some(&(5 * MS)));
        assert_eq!(
            seen.first(),
            Some(&(Duration::from_millis(99_900) + 5 * MS))
        );
        assert_eq!(
            served(&mut schedule, 1, Duration::from_millis(500_100)),
            [Duration::ZERO]
        );
    }

    #[test]
    fn a_clock_read_before_the_due_time_is_not_late() {
        let mut schedule = Schedule::new(100 * MS, 100 * MS);
        assert_eq!(served(&mut schedule, 1, 99 * MS), [Duration::ZERO]);
    }

    #[test]
    fn a_rearmed_timer_starts_a_new_schedule() {
        // A fast tick: 20 ms after the rearm at 1.0 s, then every 100 ms from there.
        let mut schedule = Schedule::new(Duration::from_millis(1_020), 100 * MS);
        assert_eq!(
            served(&mut schedule, 1, Duration::from_millis(1_022)),
            [2 * MS]
        );
        assert_eq!(
            served(&mut schedule, 1, Duration::from_millis(1_120)),
            [Duration::ZERO]
        );
    }

    #[test]
    fn the_histogram_is_cumulative_with_sum_and_count() {
        let mut lateness = Lateness::default();
        for late in [MS / 10, MS / 10, 4 * MS, Duration::from_secs(2)] {
            lateness.record(late);
        }
        let h = lateness.histogram();
        assert_eq!(h.count, 4);
        assert!((h.sum - 2.0042).abs() < 1e-9, "{}", h.sum);
        assert_eq!(h.buckets.len(), BUCKETS.len());
        assert_eq!(h.buckets[0], (0.000_25, 2));
        assert_eq!(h.buckets[4], (0.003, 2));
        assert_eq!(h.buckets[5], (0.005, 3));
        assert_eq!(h.buckets.last(), Some(&(0.1, 3)), "2 s is only in +Inf");
        // A value on a bound belongs to that bucket (le: less or equal).
        let mut lateness = Lateness::default();
        lateness.record(MS);
        assert_eq!(lateness.histogram().buckets[2], (0.001, 1));
        assert_eq!(lateness.histogram().buckets[1], (0.000_5, 0));
    }

    #[test]
    fn the_summary_is_over_the_latest_ticks() {
        let mut lateness = Lateness::default();
        assert_eq!(lateness.summary(), None);
        for i in 1..=100u64 {
            lateness.record(Duration::from_micros(i * 100));
        }
        let s = lateness.summary().unwrap();
        assert_eq!(s.ticks, 100);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (5.0, 9.9, 10.0));
        // A full ring of quiet ticks pushes the old ones out; the histogram keeps them.
        for _ in 0..RECENT {
            lateness.record(Duration::from_micros(50));
        }
        let s = lateness.summary().unwrap();
        assert_eq!(s.ticks, RECENT as u64);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (0.05, 0.05, 0.05));
        assert_eq!(lateness.histogram().count, 100 + RECENT as u64);
        // One slow tick among the latest shows as the maximum, not (yet) as the p99.
        lateness.record(Duration::from_millis(40));
        let s = lateness.summary().unwrap();
        assert_eq!((s.p99_ms, s.max_ms), (0.05, 40.0));
    }
}

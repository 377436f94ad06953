//! When a key's run over its threshold began, to within a fast tick: the fast confirmation of
//! floods at 2–10× their threshold.
//!
//! A flood rarely begins or ends on a tick's boundary: the tick it begins in (and, when it
//! began late there, the tick before the first one over) carries only part of it. While a key
//! is over, the detector asks for fast ticks ([`super::Detector::fast_tick`]); their highest
//! rate is the flood's, and the packets over the baseline's mean since the run began, divided
//! by that rate, are the time the flood has run. So a run's length is known to within the
//! noise of its rate, and a flood over `FAST_RATIO` × its threshold for `FAST_CONFIRM` opens
//! at once, while a shorter spike — however high — does not.

/// A run over the threshold at least this long (seconds) confirms a flood far enough over it.
pub(crate) const FAST_CONFIRM: f64 = 0.12;
/// How far over its threshold a flood must be (its mean rate after the run's first tick, over
/// at least `FAST_TICKS_SEEN` ticks) to confirm by its length.
pub(crate) const FAST_RATIO: f64 = 1.8;
const FAST_TICKS_SEEN: u32 = 2;

/// One key's current run over its threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Onset {
    /// Packets over the mean since the run began (from the tick before its first, when that
    /// one had any), and the length of those ticks.
    excess: f64,
    span: f64,
    /// The baseline's mean when the run began (packets per second).
    mean: f64,
    /// The ticks after the run's first: their highest rate (packets per second), their
    /// packets over the mean, their length and number.
    peak: f64,
    after: f64,
    after_dt: f64,
    ticks: u32,
    /// The last tick's packets over the mean, and its length.
    prev_excess: f64,
    prev_dt: f64,
}

impl Onset {
    /// Folds in one tick of `dt` seconds at `pps`, over the threshold or not; `mean` is the
    /// baseline's mean rate.
    pub(crate) fn tick(&mut self, over: bool, pps: f64, mean: f64, dt: f64) {
        let excess = ((pps - mean) * dt).max(0.0);
        if !over {
            *self = Onset {
                prev_excess: excess,
                prev_dt: dt,
                ..Onset::default()
            };
            return;
        }
        if self.span > 0.0 {
            self.excess += excess;
            self.span += dt;
            self.peak = self.peak.max(pps);
            self.after += excess;
            self.after_dt += dt;
            self.ticks += 1;
        } else {
            // The first tick over: it and a tick before it with traffic over the mean hold
            // the flood's beginning.
            let before = if self.prev_excess > 0.0 {
                self.prev_dt
            } else {
                0.0
            };
            self.excess = excess + self.prev_excess;
            self.span = dt + before;
            self.mean = mean;
        }
        self.prev_excess = excess;
        self.prev_dt = dt;
    }

    /// The run's length so far (seconds), once a tick after its first has told its rate (the
    /// highest seen: a spike's partial last tick must not stretch it).
    pub(crate) fn length(&self) -> Option<f64> {
        let rate = self.peak - self.mean;
        if rate <= 0.0 {
            return None;
        }
        Some((self.excess / rate).min(self.span))
    }

    /// Whether the run is over `FAST_RATIO` × `threshold` and `FAST_CONFIRM` long.
    pub(crate) fn confirms(&self, threshold: f64) -> bool {
        self.ticks >= FAST_TICKS_SEEN
            && self.after / self.after_dt + self.mean >= FAST_RATIO * threshold
            && self.length().is_some_and(|l| l >= FAST_CONFIRM - 1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks of (pps, dt) over a mean of 100 pps: the run's length and whether it confirms.
    fn run(ticks: &[(f64, f64)], threshold: f64) -> (Option<f64>, bool) {
        let mut onset = Onset::default();
        for &(pps, dt) in ticks {
            onset.tick(pps > threshold, pps, 100.0, dt);
        }
        (onset.length(), onset.confirms(threshold))
    }

    #[test]
    fn a_flood_begun_inside_a_tick_is_timed_from_its_first_packet() {
        // 2 000 pps over a mean of 100, threshold 1 000: begun 40 ms before the tick's end.
        let partial = 100.0 + 1_900.0 * 0.4;
        let (length, confirms) = run(&[(100.0, 0.1), (partial, 0.1), (2_000.0, 0.02)], 500.0);
        assert!((length.unwrap() - 0.06).abs() < 1e-9, "{length:?}");
        assert!(!confirms);
        let (length, confirms) = run(
            &[
                (partial, 0.1),
                (2_000.0, 0.02),
                (2_000.0, 0.02),
                (2_000.0, 0.02),
                (2_000.0, 0.02),
            ],
            500.0,
        );
        assert!((length.unwrap() - 0.12).abs() < 1e-9, "{length:?}");
        assert!(confirms);
    }

    #[test]
    fn a_flood_begun_late_in_a_tick_counts_that_tick_too() {
        // Begun 30 ms before a tick's end: too little to be over in it, over in the next.
        let partial = 100.0 + 1_900.0 * 0.3;
        let ticks = [
            (partial, 0.1),
            (2_000.0, 0.1),
            (2_000.0, 0.02),
            (2_000.0, 0.02),
        ];
        let (length, confirms) = run(&ticks[..3], 1_000.0);
        assert!((length.unwrap() - 0.15).abs() < 1e-9, "{length:?}");
        assert!(
            !confirms,
            "one tick after the first tells too little of its rate"
        );
        let (length, confirms) = run(&ticks, 1_000.0);
        assert!((length.unwrap() - 0.17).abs() < 1e-9, "{length:?}");
        assert!(confirms);
    }

    #[test]
    fn a_spike_shorter_than_the_confirmation_never_confirms_however_high() {
        // 100 ms at 30× its threshold, begun 60 ms before a tick's end, ending 1 ms into a
        // fast tick.
        let (a, b) = (100.0 + 29_900.0 * 0.6, 100.0 + 29_900.0 * 0.05);
        let ticks = [
            (a, 0.1),
            (30_000.0, 0.02),
            (30_000.0, 0.02),
            (b, 0.02),
            (100.0, 0.02),
        ];
        for n in 1..=ticks.len() {
            let (length, confirms) = run(&ticks[..n], 1_000.0);
            assert!(!confirms, "after {n} ticks: {length:?}");
        }
    }

    #[test]
    fn a_run_under_the_ratio_does_not_confirm_by_its_length() {
        let (length, confirms) = run(&[(1_500.0, 0.1), (1_500.0, 0.1), (1_500.0, 0.02)], 1_000.0);
        assert!(length.unwrap() > 0.2);
        assert!(!confirms);
    }
}

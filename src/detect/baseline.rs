//! What normal looks like for one counter: exponentially weighted averages of its rate and of
//! the rate's absolute deviation, with half-lives in seconds of real time (each fold is
//! weighted by the tick's dt), and the threshold rule `max(floor, mean + k·dev, m·mean)`.

use serde::{Deserialize, Serialize};

/// How thresholds are drawn from a baseline; the same for every counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rule {
    /// Deviations above the mean that are unusual (`detection.k`).
    pub(crate) k: f64,
    /// Multiple of the mean that is unusual (`detection.m`).
    pub(crate) m: f64,
    /// Half-life of the mean and the deviation, seconds (`detection.half_life`).
    pub(crate) half_life: f64,
    /// Half-life of the fast mean, seconds: [`FAST_DIVISOR`] times shorter.
    pub(crate) fast_half_life: f64,
    /// The fast mean may raise a threshold to at most this multiple of the slow one.
    pub(crate) ramp_cap: f64,
    /// An open incident's counter is still "in the attack" above this share of its threshold.
    pub(crate) exit_ratio: f64,
}

/// The fast mean's half-life is the slow one divided by this (10 min → 30 s).
pub(crate) const FAST_DIVISOR: f64 = 20.0;
/// How far a ramp (tracked by the fast mean) can lift a threshold above the slow one.
pub(crate) const RAMP_CAP: f64 = 2.0;
/// Hysteresis: an incident's counter must fall under this share of its threshold to count
/// as quiet.
pub(crate) const EXIT_RATIO: f64 = 0.8;

impl Rule {
    pub(crate) fn new(k: f64, m: f64, half_life: f64) -> Rule {
        let half_life = half_life.max(1e-3);
        Rule {
            k,
            m,
            half_life,
            fast_half_life: half_life / FAST_DIVISOR,
            ramp_cap: RAMP_CAP,
            exit_ratio: EXIT_RATIO,
        }
    }

    /// The weight of a new value after `dt` seconds for a given half-life.
    pub(crate) fn alpha(dt: f64, half_life: f64) -> f64 {
        if dt <= 0.0 {
            0.0
        } else {
            1.0 - 0.5f64.powf(dt / half_life)
        }
    }
}

/// A bias-corrected exponentially weighted average: `sum` and `weight` decay alike, so
/// `sum / weight` is the weighted mean of what was folded in — a young average is the plain
/// mean of its few values instead of being pulled towards zero.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Ewma {
    sum: f64,
    weight: f64,
}

impl Ewma {
    pub(crate) fn value(&self) -> f64 {
        if self.weight > 0.0 {
            self.sum / self.weight
        } else {
            0.0
        }
    }

    /// How much history it holds: 0 (nothing yet) to 1 (many half-lives).
    pub(crate) fn weight(&self) -> f64 {
        self.weight
    }

    pub(crate) fn fold(&mut self, x: f64, alpha: f64) {
        self.sum += alpha * (x - self.sum);
        self.weight += alpha * (1.0 - self.weight);
    }

    fn from_parts(value: f64, weight: f64) -> Ewma {
        let weight = if weight.is_finite() {
            weight.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        Ewma {
            sum: value * weight,
            weight,
        }
    }
}

/// The baseline of one counter (packets per second, or new connections per second).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Baseline {
    mean: Ewma,
    /// Mean absolute deviation from `mean`.
    dev: Ewma,
    /// A mean with a much shorter half-life: follows legitimate ramps (a surge building over
    /// a minute) that the slow mean lags behind.
    fast: Ewma,
}

impl Baseline {
    pub(crate) fn mean(&self) -> f64 {
        self.mean.value()
    }

    pub(crate) fn deviation(&self) -> f64 {
        self.dev.value()
    }

    pub(crate) fn fast_mean(&self) -> f64 {
        self.fast.value()
    }

    /// Learns `x` observed over `dt` seconds.
    pub(crate) fn fold(&mut self, x: f64, dt: f64, rule: &Rule) {
        let alpha = Rule::alpha(dt, rule.half_life);
        if alpha <= 0.0 || !x.is_finite() {
            return;
        }
        // The first value has no mean to deviate from: it teaches the mean only.
        if self.mean.weight() > 0.0 {
            self.dev.fold((x - self.mean.value()).abs(), alpha);
        }
        self.mean.fold(x, alpha);
        self.fast.fold(x, Rule::alpha(dt, rule.fast_half_life));
    }

    /// `max(floor, mean + k·dev, m·mean)`, raised up to `ramp_cap` times by `m·fast mean`
    /// while traffic has been ramping up slowly (not in one step, as floods do).
    pub(crate) fn threshold(&self, floor: f64, rule: &Rule) -> f64 {
        let mean = self.mean();
        let slow = floor
            .max(mean + rule.k * self.deviation())
            .max(rule.m * mean);
        let ramp = (rule.m * self.fast_mean()).min(rule.ramp_cap * slow);
        slow.max(ramp)
    }

    pub(crate) fn to_state(self) -> BaselineState {
        BaselineState {
            mean: self.mean.value(),
            dev: self.dev.value(),
            fast: self.fast.value(),
            weight: self.mean.weight(),
            dev_weight: self.dev.weight(),
            fast_weight: self.fast.weight(),
        }
    }

    pub(crate) fn from_state(s: &BaselineState) -> Baseline {
        Baseline {
            mean: Ewma::from_parts(s.mean, s.weight),
            dev: Ewma::from_parts(s.dev, s.dev_weight),
            fast: Ewma::from_parts(s.fast, s.fast_weight),
        }
    }
}

/// A baseline as persisted: the averages and how much history each holds (0–1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct BaselineState {
    pub(crate) mean: f64,
    pub(crate) dev: f64,
    pub(crate) fast: f64,
    pub(crate) weight: f64,
    pub(crate) dev_weight: f64,
    pub(crate) fast_weight: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_baseline_is_the_plain_mean_of_what_it_saw() {
        let rule = Rule::new(6.0, 3.0, 600.0);
        let mut b = Baseline::default();
        assert_eq!(b.threshold(100.0, &rule), 100.0);
        for x in [1000.0, 1200.0, 800.0, 1000.0] {
            b.fold(x, 0.1, &rule);
        }
        assert!((b.mean() - 1000.0).abs() < 1.0, "{}", b.mean());
        // Deviations 200, 300, 0 from the running mean (1000, ~1100, ~1000).
        assert!(b.deviation() > 100.0 && b.deviation() < 200.0);
        assert!((b.threshold(100.0, &rule) - 3000.0).abs() < 2.0);
    }

    #[test]
    fn half_life_is_in_real_time_whatever_the_tick() {
        let rule = Rule::new(6.0, 3.0, 10.0);
        let (mut fine, mut coarse) = (Baseline::default(), Baseline::default());
        for _ in 0..10 {
            fine.fold(100.0, 0.1, &rule);
        }
        coarse.fold(100.0, 1.0, &rule);
        for _ in 0..100 {
            fine.fold(200.0, 0.1, &rule);
        }
        for _ in 0..10 {
            coarse.fold(200.0, 1.0, &rule);
        }
        assert!((fine.mean() - coarse.mean()).abs() < 0.5);
        // One half-life of 200 after a second of 100: weights 0.5 and (1 - 0.5^0.1) · 0.5.
        assert!((fine.mean() - 193.7).abs() < 0.1, "{}", fine.mean());
        fine.fold(1e9, 0.0, &rule);
        assert!(fine.mean() < 200.0, "dt 0 teaches nothing");
    }

    #[test]
    fn a_ramp_lifts_the_threshold_up_to_the_cap() {
        let rule = Rule::new(6.0, 3.0, 600.0);
        let mut b = Baseline::default();
        for _ in 0..6000 {
            b.fold(1000.0, 0.1, &rule);
        }
        let flat = b.threshold(10.0, &rule);
        assert!((flat - 3000.0).abs() < 1.0);
        // A minute ramping from 1000 to 3000, learned as it goes (it stays under threshold).
        let mut ramped = b;
        for i in 0..600 {
            let x = 1000.0 + 2000.0 * f64::from(i) / 600.0;
            assert!(x < ramped.threshold(10.0, &rule));
            ramped.fold(x, 0.1, &rule);
        }
        let lifted = ramped.threshold(10.0, &rule);
        let slow_only = 3.0 * ramped.mean();
        assert!(slow_only < 3500.0, "the slow mean lags: {slow_only}");
        assert!(lifted > 1.4 * slow_only, "the fast mean follows: {lifted}");
        assert!(lifted <= RAMP_CAP * slow_only + 1e-9);
        // A steep ramp (1000 to 20000 in a minute) is caught once past the cap: twice the
        // slow threshold, where the slow rule alone would have caught it at 3000.
        let mut steep = b;
        for i in 0..600 {
            let x = 1000.0 + 19000.0 * f64::from(i) / 600.0;
            if x > steep.threshold(10.0, &rule) {
                assert!(
                    x > 3000.0 && x < RAMP_CAP * 3.0 * steep.mean() * 1.05,
                    "{x}"
                );
                return;
            }
            steep.fold(x, 0.1, &rule);
        }
        panic!("a steep ramp is caught");
    }

    #[test]
    fn state_round_trips() {
        let rule = Rule::new(6.0, 3.0, 60.0);
        let mut b = Baseline::default();
        for i in 0..50 {
            b.fold(f64::from(i % 7) * 10.0, 0.5, &rule);
        }
        let back = Baseline::from_state(&b.to_state());
        assert!((back.mean() - b.mean()).abs() < 1e-9);
        assert!((back.deviation() - b.deviation()).abs() < 1e-9);
        assert!((back.fast_mean() - b.fast_mean()).abs() < 1e-9);
        assert_eq!(back.threshold(1.0, &rule), b.threshold(1.0, &rule));
    }
}

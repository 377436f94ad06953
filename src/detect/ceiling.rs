//! Absolute ceilings (issue 14): per-counter rates far above anything a server on this link
//! sees in peace. Until the baselines are learned (the warm-up, with no usable saved state)
//! they stand in for the thresholds, so an agent installed or restarted under attack still
//! opens incidents; and no baseline ever learns a tick over its ceiling.
//!
//! The ceiling is `detection.ceiling_pps`, or, when that is "auto", twice the rate at which
//! the link carries full-size frames (1,538 bytes on the wire): no legitimate mix of traffic
//! makes that many packets on that link unless most of them are small, which is what floods
//! are made of (1 Gbit/s: 162,549 pps). The link is `detection.link_mbps`, or the fastest
//! interface that reports its speed, or 1 Gbit/s. Counters of traffic a server receives
//! little of in peace — SYNs, RSTs, ICMP, fragments, reflector ports, new TCP connections —
//! get a tenth of it. No ceiling is below its counter's floor.

use crate::config::Detection;

/// The link speed assumed when neither the configuration nor the host says, Mbit/s.
pub(crate) const FALLBACK_LINK_MBPS: u64 = 1000;
/// A full-size Ethernet frame on the wire, bits: 1,500 bytes of IP, header, FCS, preamble
/// and inter-frame gap.
const FULL_FRAME_BITS: f64 = 1538.0 * 8.0;
/// The ceiling is this many times the link's rate of full-size frames.
const FULL_FRAMES: f64 = 2.0;
/// The share of the ceiling for counters of traffic that is rare in peace.
pub(crate) const RARE_SHARE: f64 = 0.1;

/// Where the link speed behind an automatic ceiling comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkSource {
    Configured,
    Interface,
    Assumed,
}

/// The ceiling of bulk counters (totals, service ports), packets per second, with the link
/// speed it was drawn from (None when configured outright). `detected_mbps` is what the
/// host's interfaces say.
pub(crate) fn base(
    detection: &Detection,
    detected_mbps: Option<u64>,
) -> (f64, Option<(u64, LinkSource)>) {
    if let Some(pps) = detection.ceiling_pps {
        return (pps as f64, None);
    }
    let (mbps, source) = match (detection.link_mbps, detected_mbps) {
        (Some(mbps), _) => (mbps, LinkSource::Configured),
        (None, Some(mbps)) if mbps > 0 => (mbps, LinkSource::Interface),
        _ => (FALLBACK_LINK_MBPS, LinkSource::Assumed),
    };
    (
        FULL_FRAMES * mbps as f64 * 1e6 / FULL_FRAME_BITS,
        Some((mbps, source)),
    )
}

/// One counter's ceiling: its share of the base, never below its floor.
pub(crate) fn of(base: f64, rare: bool, floor: f64) -> f64 {
    let share = if rare { RARE_SHARE } else { 1.0 };
    (share * base).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_from_the_link_unless_configured() {
        let auto = Detection::default();
        let (gigabit, link) = base(&auto, None);
        assert!((gigabit - 162_549.0).abs() < 1.0, "{gigabit}");
        assert_eq!(link, Some((1000, LinkSource::Assumed)));
        let (ten, link) = base(&auto, Some(10_000));
        assert!((ten - 10.0 * gigabit).abs() < 1.0);
        assert_eq!(link, Some((10_000, LinkSource::Interface)));
        let configured_link = Detection {
            link_mbps: Some(100),
            ..Detection::default()
        };
        let (hundred, link) = base(&configured_link, Some(10_000));
        assert!((hundred - gigabit / 10.0).abs() < 1.0);
        assert_eq!(link, Some((100, LinkSource::Configured)));
        let configured = Detection {
            ceiling_pps: Some(40_000),
            link_mbps: Some(100),
            ..Detection::default()
        };
        assert_eq!(base(&configured, Some(10_000)), (40_000.0, None));
    }

    #[test]
    fn rare_traffic_gets_a_tenth_and_no_ceiling_is_under_its_floor() {
        assert_eq!(of(100_000.0, false, 5000.0), 100_000.0);
        assert_eq!(of(100_000.0, true, 5000.0), 10_000.0);
        assert_eq!(of(100_000.0, true, 20_000.0), 20_000.0);
        assert_eq!(of(1.0, false, 5000.0), 5000.0);
    }
}

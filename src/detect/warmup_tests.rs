//! Issue 14, item 6: started under attack. During the warm-up the absolute ceilings open
//! incidents (`warmed_up: false`) for floods far above any peaceful rate, nothing under them
//! does, and no baseline learns a flood — so when the warm-up ends the flood is still one.

use std::time::Duration;

use super::replay::{background, few, Flow, Kind, Replay};
use super::*;
use crate::config::{PortRange, Service};

const WARMUP: f64 = 60.0;
const ATTACKER: &str = "203.0.113.66";

fn with_background(extra: &[Flow]) -> Vec<Flow> {
    let mut flows = background();
    flows.extend_from_slice(extra);
    flows
}

/// The lab's services (27015/udp beside the defaults) and a configured ceiling.
fn lab_like(c: &mut Config) {
    c.services.push(Service {
        ports: PortRange {
            first: 27015,
            last: 27015,
        },
        proto: Proto::Udp,
        floor_pps: None,
        web: None,
    });
    c.detection.ceiling_pps = Some(40_000);
}

/// A flood from the first tick: the replay, the flood, its vector and port, and the counters
/// whose baselines it must not teach.
struct Case {
    replay: Replay,
    flood: Flow,
    vector: Vector,
    port: Option<u16>,
    counters: [&'static str; 3],
}

fn cases() -> [Case; 2] {
    [
        // The automatic ceiling (no link known: 1 Gbit/s, 162,549 pps), random ports.
        Case {
            replay: Replay::new(Config::default()),
            flood: Flow::new(Kind::Udp { port: None }, 400_000.0).size(64.0),
            vector: Vector::UdpFlood,
            port: None,
            counters: ["l4_udp", "l3_ipv4", "other"],
        },
        // A configured ceiling, a UDP service.
        Case {
            replay: Replay::with(lab_like),
            flood: Flow::new(Kind::Udp { port: Some(27015) }, 100_000.0).size(64.0),
            vector: Vector::UdpFlood,
            port: Some(27015),
            counters: ["l4_udp", "l3_ipv4", "udp_27015"],
        },
    ]
}

#[test]
fn issue14_a_flood_from_the_first_tick_opens_during_the_warmup_and_is_never_learned() {
    for case in cases() {
        let Case {
            mut replay,
            flood,
            vector,
            port,
            counters,
        } = case;
        let flood = flood.from(few(&[ATTACKER]));
        let attack = with_background(std::slice::from_ref(&flood));
        // Through the whole warm-up and half a minute past it.
        replay.run(WARMUP + 30.0, &attack);
        assert!(replay.detector.warmed_up());
        replay.check_invariants();
        let starts = replay.of_kind(EventKind::AttackStart);
        assert_eq!(starts.len(), 1, "one incident: {:?}", replay.events);
        let (at, start) = starts[0].clone();
        let ticks = (at.as_secs_f64() / replay.tick.as_secs_f64()).round();
        assert!(ticks <= 3.0, "{vector}: opened at tick {ticks}");
        assert_eq!((start.vector, start.port), (vector, port));
        assert!(!start.warmed_up);
        let (ceiling, _) = replay.detector.ceiling();
        assert_eq!(start.threshold_pps, ceiling, "judged by the ceiling");
        assert!(start.concentrated);
        assert_eq!(start.sources[0].addr.to_string(), ATTACKER);
        let json: serde_json::Value =
            serde_json::from_str(&start.to_json(std::time::SystemTime::UNIX_EPOCH)).unwrap();
        assert_eq!(json["warmed_up"], false);
        // Still the same incident after the warm-up, its updates still saying how it opened.
        let last = &replay.events.last().unwrap().1;
        assert_eq!(last.kind, EventKind::AttackUpdate);
        assert_eq!(last.incident, start.incident);
        assert!(!last.warmed_up);
        // The baselines hold the background only: the flood is far over the thresholds now.
        for name in counters {
            let mean = replay.detector.baseline_mean(name).unwrap();
            let threshold = replay.detector.threshold(name).unwrap();
            assert!(mean < 0.01 * flood.rate, "{name} learned the flood: {mean}");
            assert!(threshold < 0.1 * flood.rate, "{name}: {threshold}");
        }
        // It ends after the flood; the same flood again opens a warmed-up incident.
        replay.run(15.0, &background());
        let ends = replay.of_kind(EventKind::AttackEnd);
        assert_eq!(ends.len(), 1);
        assert!(!ends[0].1.warmed_up);
        replay.run(2.0, &attack);
        let starts = replay.of_kind(EventKind::AttackStart);
        assert_eq!(starts.len(), 2);
        assert!(starts[1].1.warmed_up);
        assert_eq!((starts[1].1.vector, starts[1].1.port), (vector, port));
    }
}

/// Under the ceilings the warm-up judges nothing (and learns what it sees, as before).
#[test]
fn issue14_a_flood_under_the_ceilings_opens_nothing_during_the_warmup() {
    let mut replay = Replay::new(Config::default());
    replay.run(10.0, &background());
    let flood = with_background(&[Flow::new(Kind::Udp { port: None }, 100_000.0)]);
    replay.run(40.0, &flood);
    assert!(replay.events.is_empty());
    assert!(!replay.detector.warmed_up());
    assert!(replay.detector.threshold("l3_ipv4").unwrap() > 150_000.0);
}

/// A flood starting in the middle of the warm-up is caught the same way, and the baselines
/// keep what they learned before it.
#[test]
fn issue14_a_flood_in_the_middle_of_the_warmup_teaches_nothing() {
    let mut replay = Replay::with(lab_like);
    replay.noise = false;
    replay.run(20.0, &background());
    let before = replay.detector.baseline_mean("l3_ipv4").unwrap();
    let flood = Flow::new(Kind::Udp { port: Some(27015) }, 100_000.0).from(few(&[ATTACKER]));
    let first = replay.now + replay.tick;
    replay.run(60.0, &with_background(&[flood]));
    let starts = replay.of_kind(EventKind::AttackStart);
    assert_eq!(starts.len(), 1, "{:?}", replay.events);
    assert!(starts[0].0 <= first + replay.tick * 3);
    assert!(!starts[0].1.warmed_up);
    let after = replay.detector.baseline_mean("l3_ipv4").unwrap();
    assert!((after - before).abs() < 0.01 * before, "{before} → {after}");
}

/// The replay negatives, run inside the warm-up: a slow legitimate ramp to three times, rare
/// legitimate spikes and a low-rate SSH brute force (a 10-minute warm-up), and a day of the
/// diurnal cycle (a 24-hour warm-up at one-second ticks) open nothing.
#[test]
fn issue14_the_negatives_open_nothing_during_the_warmup() {
    let mut replay = Replay::with(|c| c.agent.warmup = Duration::from_secs(600));
    let web = |factor: f64| -> Vec<Flow> {
        let mut flows: Vec<Flow> = background()
            .into_iter()
            .map(|f| match f.kind {
                Kind::Connections { port: 443, .. } => f.scaled(550.0 / 150.0 * factor),
                _ => f,
            })
            .collect();
        flows.push(
            Flow::new(
                Kind::Connections {
                    port: 22,
                    packets: 20.0,
                },
                20.0,
            )
            .from(few(&["203.0.113.99"])),
        );
        flows
    };
    let spike = Flow::new(Kind::Udp { port: Some(27015) }, 15_000.0).from(few(&[ATTACKER]));
    replay.run(60.0, &web(1.0));
    replay.run_with(60.0, |t| web(1.0 + 2.0 * t / 60.0));
    replay.run_with(300.0, |t| {
        let mut flows = web(3.0);
        if t.rem_euclid(20.0) < 0.1 {
            flows.push(spike.clone());
        }
        flows
    });
    assert!(!replay.detector.warmed_up());
    assert!(replay.events.is_empty(), "{:?}", replay.events.first());

    let mut replay = Replay::with(|c| {
        c.agent.tick = Duration::from_secs(1);
        c.agent.warmup = Duration::from_secs(24 * 3600);
    });
    let day = 86_400.0;
    replay.run_with(day - 10.0, |t| {
        let level = 1.0 - 0.8 * (2.0 * std::f64::consts::PI * t / day).cos();
        vec![
            Flow::new(
                Kind::Connections {
                    port: 443,
                    packets: 12.0,
                },
                800.0 * level,
            )
            .size(800.0),
            Flow::new(Kind::Amp { src_port: 53 }, 300.0 * level),
            Flow::new(Kind::Udp { port: None }, 2000.0 * level),
            Flow::new(Kind::Icmp, 50.0 * level),
        ]
    });
    assert!(!replay.detector.warmed_up());
    assert!(replay.events.is_empty(), "{:?}", replay.events.first());
}

/// Saved state too young to have finished the warm-up is no usable baseline: after a restart
/// the ceilings still judge, and an incident opens with `warmed_up: false`.
#[test]
fn issue14_a_restart_before_the_warmup_ended_keeps_the_ceilings() {
    let mut replay = Replay::with(lab_like);
    replay.run(20.0, &background());
    let saved = replay.detector.save();
    replay.restart();
    replay.detector.restore(saved, Duration::ZERO);
    assert!(!replay.detector.warmed_up());
    let flood = Flow::new(Kind::Udp { port: Some(27015) }, 100_000.0).from(few(&[ATTACKER]));
    replay.run(2.0, &with_background(&[flood]));
    let starts = replay.of_kind(EventKind::AttackStart);
    assert_eq!(starts.len(), 1, "{:?}", replay.events);
    assert!(!starts[0].1.warmed_up);
    // An incident opened under a ceiling survives a restart as one.
    let saved = replay.detector.save();
    assert!(saved.incidents.iter().all(|i| !i.warmed_up));
    let json = saved.to_json().replace(",\"warmed_up\":false", "");
    let older = State::from_json(&json).unwrap();
    assert!(
        older.incidents.iter().all(|i| i.warmed_up),
        "files without it"
    );
}

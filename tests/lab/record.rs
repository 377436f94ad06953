//! What the victim received, per 100 ms: a thread of the test process that enters the
//! victim's namespace and reads its flood-facing interface's receive counter from
//! `/proc/thread-self/net/dev` ten times a second for the whole test. From it, a flood's
//! shape as the victim saw it (whatever the generator meant to send) and, with the users'
//! per-second results, what share of real users' requests was served during the flood.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::users::{Second, KINDS};

/// The sampling period.
pub const BIN: Duration = Duration::from_millis(100);
/// A 100 ms bin with at least this many packets is part of a flood (2 kpps; the lab's own
/// pings, probes and connection loops stay far below it, and the users have their own link).
pub const FLOOD_BIN: u64 = 200;

/// One 100 ms bin: when it ended (unix seconds) and the packets received in it.
#[derive(Clone, Copy, Debug)]
pub struct Bin {
    pub end: f64,
    pub packets: u64,
}

pub struct Recorder {
    bins: Arc<Mutex<Vec<Bin>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Starts sampling `ifname` in the namespace `netns` (a name under /var/run/netns).
    pub fn start(netns: &str, ifname: &str) -> Recorder {
        let path = format!("/var/run/netns/{netns}");
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("lab: open {path}: {e}"));
        let bins = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (bins2, stop2) = (bins.clone(), stop.clone());
        let key = format!("{ifname}:");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("lab-record".into())
            .spawn(move || {
                // SAFETY: setns on a descriptor we own; CLONE_NEWNET moves only this thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let _ = tx.send(Err(std::io::Error::last_os_error().to_string()));
                    return;
                }
                let read = || rx_packets(&key);
                let Some(mut prev) = read() else {
                    let _ = tx.send(Err(format!("no {key} in /proc/thread-self/net/dev")));
                    return;
                };
                let _ = tx.send(Ok(()));
                let mut next = Instant::now() + BIN;
                while !stop2.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    next += BIN;
                    let Some(rx) = read() else { break };
                    let end = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    bins2.lock().unwrap().push(Bin {
                        end,
                        packets: rx.saturating_sub(prev),
                    });
                    prev = rx;
                }
            })
            .expect("lab: spawn the recorder");
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("lab: recorder: {e}"),
            Err(_) => panic!("lab: recorder thread died"),
        }
        Recorder {
            bins,
            stop,
            thread: Some(thread),
        }
    }

    /// The bins so far.
    pub fn bins(&self) -> Vec<Bin> {
        self.bins.lock().unwrap().clone()
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `rx_packets` of the interface whose line starts with `key` (e.g. `fta-v0:`), as this
/// thread's namespace counts it.
pub(crate) fn rx_packets(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with(key))?;
    let (_, rest) = line.split_once(':')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A flood as the victim received it: the bins from the first to the last flood bin.
#[derive(Debug)]
pub struct Shape {
    /// The first flood bin's start and the last one's end (unix seconds).
    pub from: f64,
    pub to: f64,
    /// Packets received in the span.
    pub packets: u64,
    /// The largest bin.
    pub peak: u64,
    /// Bins of the span that were flood bins (1.0: steady; lower: bursts or pulses).
    pub duty: f64,
    /// The unix seconds holding a flood bin.
    pub seconds: Vec<u64>,
}

/// The flood in `bins`, if any bin reached `FLOOD_BIN`.
pub fn shape(bins: &[Bin]) -> Option<Shape> {
    let first = bins.iter().position(|b| b.packets >= FLOOD_BIN)?;
    let last = bins.iter().rposition(|b| b.packets >= FLOOD_BIN)?;
    let span = &bins[first..=last];
    let active = span.iter().filter(|b| b.packets >= FLOOD_BIN).count();
    let mut seconds: Vec<u64> = span
        .iter()
        .filter(|b| b.packets >= FLOOD_BIN)
        .map(|b| (b.end - BIN.as_secs_f64() / 2.0) as u64)
        .collect();
    seconds.dedup();
    Some(Shape {
        from: span[0].end - BIN.as_secs_f64(),
        to: span[span.len() - 1].end,
        packets: span.iter().map(|b| b.packets).sum(),
        peak: span.iter().map(|b| b.packets).max().unwrap_or(0),
        duty: active as f64 / span.len() as f64,
        seconds,
    })
}

/// The users' results summed over `seconds`: (succeeded, started) per kind.
pub fn served(users: &BTreeMap<u64, Second>, seconds: &[u64]) -> BTreeMap<String, (u64, u64)> {
    let mut sum: BTreeMap<String, (u64, u64)> =
        KINDS.iter().map(|k| (k.to_string(), (0, 0))).collect();
    for t in seconds {
        if let Some(s) = users.get(t) {
            for (k, (ok, n)) in s {
                let e = sum.entry(k.clone()).or_default();
                e.0 += ok;
                e.1 += n;
            }
        }
    }
    sum
}

/// The share of all requests in `served` that succeeded; panics when none were started
/// (the users were not running, or reported nothing for those seconds).
pub fn share(served: &BTreeMap<String, (u64, u64)>) -> f64 {
    let (ok, n) = served
        .values()
        .fold((0, 0), |(a, b), (ok, n)| (a + ok, b + n));
    assert!(n > 0, "lab: no user request was started in those seconds");
    ok as f64 / n as f64
}

/// One line for a test's record: the flood's shape and the users' share served during it.
pub fn summary(test: &str, shape: &Option<Shape>, served: &BTreeMap<String, (u64, u64)>) -> String {
    let Some(s) = shape else {
        return format!("{test}: no flood (no 100 ms bin reached {FLOOD_BIN} packets)");
    };
    let len = s.to - s.from;
    let kinds: Vec<String> = served
        .iter()
        .map(|(k, (ok, n))| format!("{k} {ok}/{n}"))
        .collect();
    format!(
        "{test}: flood over {len:.1} s: {} packets received ({:.1} kpps mean, peak {} per 100 ms, \
         {:.0} % of its 100 ms bins active); users served {:.1} % during it ({})",
        s.packets,
        s.packets as f64 / len / 1000.0,
        s.peak,
        s.duty * 100.0,
        if served.values().any(|c| c.1 > 0) {
            share(served) * 100.0
        } else {
            f64::NAN
        },
        kinds.join(", ")
    )
}

/// The per-100 ms counts of the flood span (with a second either side), for the record.
pub fn series(bins: &[Bin], shape: &Option<Shape>) -> String {
    let Some(s) = shape else {
        return String::new();
    };
    let counts: Vec<String> = bins
        .iter()
        .filter(|b| b.end > s.from - 1.0 && b.end <= s.to + 1.0)
        .map(|b| b.packets.to_string())
        .collect();
    format!("  per 100 ms: {}", counts.join(" "))
}

/// Appends a test's record to `target/tmp/lab-report.txt` (tests/run.sh prints its summary).
pub fn append(text: &str) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab-report.txt");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    match file {
        Ok(mut f) => {
            let _ = writeln!(f, "{text}");
        }
        Err(e) => eprintln!("lab: {}: {e}", path.display()),
    }
}

//! The one place that talks to the BGP daemon (gobgpd, through its `gobgp` client). A worker
//! thread keeps the daemon's routes equal to the set the event loop last published: it lists
//! our routes (tagged with `bgp.tag_community`), withdraws those no longer wanted, announces
//! the missing ones, and does it again every few seconds — so a daemon that restarted gets its
//! routes back, and a failed command is retried. The event loop only swaps a shared slot and
//! drains a channel: a slow or dead BGP daemon never holds up detection.

mod gobgp;

pub(crate) use gobgp::Gobgp;

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::config::Bgp;
use crate::escalate::Route;

/// How often the daemon's routes are checked against the wanted set.
const RESYNC: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum BgpError {
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` did not answer within {}", humantime::format_duration(*.timeout))]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("gobgp listing of {family}: {message}")]
    Listing {
        family: &'static str,
        message: String,
    },
}

/// The wanted set, handed from the event loop to the worker (the latest one wins).
#[derive(Debug, Default)]
struct Slot {
    wanted: Option<Vec<Route>>,
    generation: u64,
    stop: bool,
}

/// The event loop's handle on the worker.
#[derive(Debug)]
pub(crate) struct Speaker {
    shared: Arc<(Mutex<Slot>, Condvar)>,
    found: Receiver<Vec<Route>>,
}

impl Speaker {
    /// Starts the worker. Its first job is to list the routes the daemon already announces
    /// for us ([`Speaker::found`]); it changes nothing before the first [`Speaker::publish`].
    pub(crate) fn start(bgp: &Bgp) -> io::Result<Speaker> {
        let shared = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let (tx, found) = mpsc::channel();
        let client = Gobgp::new(bgp);
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ftagent-bgp".to_string())
            .spawn(move || run(&client, &worker, &tx))?;
        Ok(Speaker { shared, found })
    }

    /// Our routes the daemon announced when the worker started, once it could list them.
    pub(crate) fn found(&self) -> Option<Vec<Route>> {
        self.found.try_recv().ok()
    }

    /// Makes `wanted` the set the daemon should announce.
    pub(crate) fn publish(&self, wanted: Vec<Route>) {
        let (lock, wake) = &*self.shared;
        let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
        slot.wanted = Some(wanted);
        slot.generation += 1;
        wake.notify_one();
    }
}

impl Drop for Speaker {
    /// The worker stops after its current command; the routes stay in the daemon (the next
    /// start finds them and reconciles).
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_one();
    }
}

fn run(client: &Gobgp, shared: &(Mutex<Slot>, Condvar), found: &Sender<Vec<Route>>) {
    let mut complained = false;
    let initial = loop {
        match client.list() {
            Ok(routes) => break routes,
            Err(e) => {
                if !complained {
                    log::error!(
                        "BGP daemon: {e}; trying again every {}",
                        humantime::format_duration(RESYNC)
                    );
                    complained = true;
                }
                if wait(shared, 0, RESYNC).is_none() {
                    return;
                }
            }
        }
    };
    if complained {
        log::info!("BGP daemon answers");
    }
    log::info!("BGP daemon announces {} routes of ours", initial.len());
    if found.send(initial).is_err() {
        return;
    }
    let mut seen = 0;
    let mut healthy = true;
    while let Some((generation, wanted)) = wait(shared, seen, RESYNC) {
        seen = generation;
        let Some(wanted) = wanted else { continue };
        match reconcile(client, &wanted) {
            Ok(()) if !healthy => {
                log::info!("BGP daemon: announcements in step again");
                healthy = true;
            }
            Ok(()) => {}
            Err(e) => {
                // Logged once per outage; retried every RESYNC.
                if healthy {
                    log::error!(
                        "BGP daemon: {e}; retrying every {}",
                        humantime::format_duration(RESYNC)
                    );
                }
                healthy = false;
            }
        }
    }
}

/// Waits until a generation after `seen` is published or `timeout` passes; None when told to
/// stop. Returns the current generation and wanted set.
fn wait(
    shared: &(Mutex<Slot>, Condvar),
    seen: u64,
    timeout: Duration,
) -> Option<(u64, Option<Vec<Route>>)> {
    let (lock, wake) = shared;
    let slot = lock.lock().unwrap_or_else(|p| p.into_inner());
    let (slot, _) = wake
        .wait_timeout_while(slot, timeout, |s| !s.stop && s.generation == seen)
        .unwrap_or_else(|p| p.into_inner());
    (!slot.stop).then(|| (slot.generation, slot.wanted.clone()))
}

/// Brings the daemon's routes of ours to `wanted`: withdrawals first (a rule whose action
/// changed is replaced, not removed after its replacement), then announcements.
fn reconcile(client: &Gobgp, wanted: &[Route]) -> Result<(), BgpError> {
    let present = client.list()?;
    for route in present.iter().filter(|r| !wanted.contains(r)) {
        client.withdraw(route)?;
        log::info!("BGP: withdrew {route}");
    }
    for route in wanted.iter().filter(|r| !present.contains(r)) {
        client.announce(route)?;
        log::info!("BGP: announced {route}");
    }
    Ok(())
}

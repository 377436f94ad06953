//! The iptables compatibility chain's checks, off the event loop: a thread of its own runs the
//! iptables tools (each may wait up to 5 s for the xtables lock), one check at a time, with at
//! most one more waiting. The loop only asks and never waits; what a check finds is logged.
//! The ipsets are not the thread's: bans go into them from the loop, over netlink.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::netlink::shim::ShimChain;
use crate::ruleset;

/// The thread that checks the chain, and the way to ask it.
pub(super) struct ShimKeeper {
    requests: Option<SyncSender<()>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ShimKeeper {
    /// Starts the thread (signals stay blocked in it, as in the thread that starts it).
    pub(crate) fn start(chain: ShimChain) -> std::io::Result<ShimKeeper> {
        let (requests, asked) = sync_channel::<()>(1);
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("ftagent-shim".into())
            .spawn(move || {
                super::yield_to_the_loop();
                while asked.recv().is_ok() && !stop.load(Ordering::Relaxed) {
                    check(&chain);
                }
            })?;
        Ok(ShimKeeper {
            requests: Some(requests),
            stopping,
            thread: Some(thread),
        })
    }

    /// Asks for a check of the chain; returns at once. A check already waiting covers this one.
    pub(crate) fn check(&self) {
        if let Some(requests) = &self.requests {
            let _ = requests.try_send(());
        }
    }

    /// Ends the thread: a check under way is finished first (waited for), one waiting is not
    /// run. After this no iptables process of ours runs, so the chain can be removed or
    /// installed anew.
    pub(crate) fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the iptables chain's checking thread panicked");
            }
        }
    }
}

impl Drop for ShimKeeper {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Puts the chain, rule or jump back if another tool removed them.
fn check(chain: &ShimChain) {
    match chain.repair() {
        Ok(true) => log::warn!(
            "iptables chain {} or its jump was removed by another tool: put back",
            ruleset::shim::CHAIN
        ),
        Ok(false) => {}
        Err(e) => log::error!("checking the iptables compatibility chain: {e}"),
    }
}

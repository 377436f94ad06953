//! Conntrack reads off the event loop: a thread of its own, with its own ctnetlink socket,
//! counts and dumps the table (12–150 ms, more with a big table) into a connection table and
//! deletes the entries of banned sources. The loop hands it a [`Round`] — a connection table
//! and the bans — and gets it back filled through a channel and the poll's waker; the filled
//! table takes the place of the sensor's, whose table becomes the next round's. At most one
//! read is in flight: one asked for while another runs is skipped, not queued. Nothing is
//! allocated per read once running (the buffers go back and forth).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::Waker;

use crate::addr::Cidr;
use crate::netlink::conntrack::{Conntrack, Entry};
use crate::sense::connections::ConnectionTable;

/// Conntrack entries of banned sources deleted at most per read.
const STALE_PER_READ: usize = 4096;

/// One read's buffers: what the loop asks with, and what the thread fills in.
pub(super) struct Round {
    /// Filled from the dump (after `begin`): connections per source and service port.
    pub table: ConnectionTable,
    /// The entries in the table when it was counted; None when the count failed.
    pub entries: Option<u64>,
    /// How long the read took.
    pub took: Duration,
    /// Bans in force when the read was asked for: their entries are not counted but deleted.
    bans: Vec<Cidr>,
    /// Entries of banned sources found by the dump (capacity reserved).
    stale: Vec<Entry>,
    /// The loop's configuration generation when asked (a reload may change the table's ports).
    generation: u64,
}

impl Round {
    /// Reads the table: the count, then a dump into `table`, then the banned sources'
    /// entries deleted. Errors are logged; the next read tries again.
    fn read(&mut self, conntrack: &mut Conntrack) {
        let started = Instant::now();
        self.read_table(conntrack);
        self.took = started.elapsed();
    }

    fn read_table(&mut self, conntrack: &mut Conntrack) {
        self.entries = match conntrack.count() {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!("conntrack count: {e}");
                None
            }
        };
        // Banned sources hold nothing: their FINs are dropped with the rest of their packets.
        let (table, stale) = (&mut self.table, &mut self.stale);
        table.set_banned(self.bans.iter().copied());
        table.begin();
        stale.clear();
        let dumped = conntrack.dump(&mut |entry| {
            if table.add(entry) && stale.len() < stale.capacity() {
                stale.push(*entry);
            }
        });
        if let Err(e) = dumped {
            log::warn!("conntrack dump: {e}");
        }
        if !stale.is_empty() {
            // Their FINs never came through: gone, they cannot count as held once the ban ends.
            match conntrack.delete(stale) {
                Ok(n) => log::debug!("deleted {n} conntrack entries of banned sources"),
                Err(e) => log::warn!("deleting conntrack entries of banned sources: {e}"),
            }
        }
    }
}

/// The reading thread, and the round that is the loop's while no read is in flight.
pub(super) struct ConntrackReader {
    requests: Option<SyncSender<Round>>,
    results: Receiver<Round>,
    idle: Option<Round>,
    generation: u64,
    thread: Option<JoinHandle<()>>,
}

impl ConntrackReader {
    /// Starts the thread with its socket; `table` is a spare like the sensor's (same ports,
    /// same own addresses). Each finished read wakes the loop through `waker`.
    pub fn start(
        mut conntrack: Conntrack,
        table: ConnectionTable,
        waker: Arc<Waker>,
    ) -> std::io::Result<ConntrackReader> {
        let (requests, asked) = sync_channel::<Round>(1);
        let (done, results) = sync_channel::<Round>(1);
        let thread = std::thread::Builder::new()
            .name("ftagent-conntrack".into())
            .spawn(move || {
                super::yield_to_the_loop();
                while let Ok(mut round) = asked.recv() {
                    round.read(&mut conntrack);
                    if done.send(round).is_err() {
                        return;
                    }
                    if let Err(e) = waker.wake() {
                        log::warn!("waking the event loop after a conntrack read: {e}");
                    }
                }
            })?;
        Ok(ConntrackReader {
            requests: Some(requests),
            results,
            idle: Some(Round {
                table,
                entries: None,
                took: Duration::ZERO,
                bans: Vec::new(),
                stale: Vec::with_capacity(STALE_PER_READ),
                generation: 0,
            }),
            generation: 0,
            thread: Some(thread),
        })
    }

    /// True when no read is in flight.
    pub fn idle(&self) -> bool {
        self.idle.is_some()
    }

    /// Asks for a read with `bans` in force; never waits. False when a read is still in flight
    /// (or the thread is gone): nothing is asked.
    pub fn request(&mut self, bans: impl Iterator<Item = Cidr>) -> bool {
        let (Some(mut round), Some(requests)) = (self.idle.take(), &self.requests) else {
            return false;
        };
        round.bans.clear();
        round.bans.extend(bans);
        round.generation = self.generation;
        match requests.try_send(round) {
            Ok(()) => true,
            Err(TrySendError::Full(round) | TrySendError::Disconnected(round)) => {
                self.idle = Some(round);
                false
            }
        }
    }

    /// The finished read, if there is one: the caller takes what it needs (swapping tables)
    /// and hands the round back with [`Self::put_back`]. A round asked for before the last
    /// [`Self::renew`] comes back with `stale_config` true: its table counts the old ports.
    pub fn finished(&mut self) -> Option<(Round, bool)> {
        match self.results.try_recv() {
            Ok(round) => {
                let stale_config = round.generation != self.generation;
                Some((round, stale_config))
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// The round back after [`Self::finished`], for the next read.
    pub fn put_back(&mut self, round: Round) {
        self.idle = Some(round);
    }

    /// After a reload that rebuilt the sensor: `table` is a spare like its new one. A read in
    /// flight comes back marked as of the old configuration.
    pub fn renew(&mut self, table: ConnectionTable) {
        self.generation += 1;
        if let Some(round) = &mut self.idle {
            round.table = table;
            round.generation = self.generation;
        }
    }

    /// Ends the thread after the read under way, if any (bounded by the socket's reply
    /// timeout).
    fn shut_down(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the conntrack reading thread panicked");
            }
        }
    }
}

impl Drop for ConntrackReader {
    fn drop(&mut self) {
        self.shut_down();
    }
}

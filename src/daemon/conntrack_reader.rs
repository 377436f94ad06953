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
    pub(crate) table: ConnectionTable,
    /// The entries in the table when it was counted; None when the count failed.
    pub(crate) entries: Option<u64>,
    /// How long the read took.
    pub(crate) took: Duration,
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
            // Only TCP and UDP entries, the ones a tuple of addresses and ports names (an
            // ICMP entry's tuple needs its id, type and code: the kernel refuses it without).
            let ported = entry.src_port.is_some() && entry.dst_port.is_some();
            if table.add(entry) && ported && stale.len() < stale.capacity() {
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
    pub(crate) fn start(
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
    pub(crate) fn idle(&self) -> bool {
        self.idle.is_some()
    }

    /// Asks for a read with `bans` in force; never waits. False when a read is still in flight
    /// (or the thread is gone): nothing is asked.
    pub(crate) fn request(&mut self, bans: impl Iterator<Item = Cidr>) -> bool {
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
    pub(crate) fn finished(&mut self) -> Option<(Round, bool)> {
        match self.results.try_recv() {
            Ok(round) => {
                let stale_config = round.generation != self.generation;
                Some((round, stale_config))
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// The round back after [`Self::finished`], for the next read.
    pub(crate) fn put_back(&mut self, round: Round) {
        self.idle = Some(round);
    }

    /// After a reload that rebuilt the sensor: `table` is a spare like its new one. A read in
    /// flight comes back marked as of the old configuration.
    pub(crate) fn renew(&mut self, table: ConnectionTable) {
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, TcpListener};
    use std::time::Duration;

    use mio::{Events, Poll, Token};

    use super::*;
    use crate::netlink::testns::{connect_from, is_root, Netns};

    const WOKEN: Token = Token(1);

    /// Waits for the reader's wake-up and takes the finished round.
    fn wait(poll: &mut Poll, reader: &mut ConntrackReader) -> (Round, bool) {
        let mut events = Events::with_capacity(4);
        for _ in 0..50 {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if events.iter().any(|e| e.token() == WOKEN) {
                if let Some(done) = reader.finished() {
                    return done;
                }
            }
        }
        panic!("no conntrack read came back within 5 s");
    }

    #[test]
    fn root_reads_off_the_loop_one_at_a_time_and_deletes_banned_entries() {
        if !is_root() {
            eprintln!("skipped: needs root (network namespace, nft, conntrack)");
            return;
        }
        let ns = Netns::create("ct-reader").expect("a network namespace");
        // Conntrack tracks only when some hook needs it.
        for rule in [
            "add table inet t",
            "add chain inet t c { type filter hook output priority 0; }",
            "add rule inet t c ct state new counter",
        ] {
            ns.exec(&["nft", rule]).expect("nft");
        }
        ns.run(|| {
            const CONNS: usize = 20;
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let client = Ipv4Addr::new(127, 0, 0, 2);
            let mut streams = Vec::new();
            for _ in 0..CONNS {
                let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
                streams.push(connect_from(client, to).unwrap());
                streams.push(listener.accept().unwrap().0);
            }
            let mut poll = Poll::new().unwrap();
            let waker = Arc::new(Waker::new(poll.registry(), WOKEN).unwrap());
            let table = ConnectionTable::new(&[(port, port)], &[], 64);
            let mut reader =
                ConntrackReader::start(Conntrack::open().unwrap(), table, waker).unwrap();

            assert!(reader.request(std::iter::empty()));
            assert!(!reader.idle());
            assert!(
                !reader.request(std::iter::empty()),
                "a second read is not asked for while one is in flight"
            );
            let (round, stale_config) = wait(&mut poll, &mut reader);
            assert!(!stale_config);
            assert!(round.entries.unwrap() >= CONNS as u64);
            assert_eq!(round.table.per_port(6, port), CONNS as u32);
            assert!(round.stale.is_empty());
            reader.put_back(round);

            // The client banned: its entries count for nothing and are deleted.
            let ban = Cidr::new(IpAddr::V4(client), 32).unwrap();
            assert!(reader.request(std::iter::once(ban)));
            let (round, _) = wait(&mut poll, &mut reader);
            assert_eq!(round.table.per_port(6, port), 0);
            assert_eq!(round.stale.len(), CONNS);
            reader.put_back(round);
            assert!(reader.request(std::iter::empty()));
            let (round, _) = wait(&mut poll, &mut reader);
            assert_eq!(round.table.per_port(6, port), 0, "the entries are gone");
            reader.put_back(round);

            // A read asked for before a reload comes back marked as of the old configuration.
            assert!(reader.request(std::iter::empty()));
            reader.renew(ConnectionTable::new(&[], &[], 64));
            let (round, stale_config) = wait(&mut poll, &mut reader);
            assert!(stale_config);
            reader.put_back(round);
            drop(streams);
        });
    }
}

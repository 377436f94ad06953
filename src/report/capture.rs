//! Packet captures per incident, from the sampled packets the agent already receives over
//! NFLOG. The event loop keeps a ring of recent samples; when an incident opens, its capture
//! starts with the ring (the traffic before the attack) and then takes every sample until it
//! ends or reaches `pcap.max_packets_per_incident`. Records are encoded into 64 KiB chunks
//! from a pool allocated at start and handed to a writer thread, so the loop never waits for
//! the disk and never allocates per packet: when the writer falls behind and the pool is
//! empty, samples are dropped from the captures and counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::pcap::{self, PacketRing, RECORD_HEADER_LEN};
use super::store::{Appended, CaptureDir};
use super::RateLimitedLog;
use crate::config::Pcap;

/// Bytes of one chunk handed to the writer.
const CHUNK: usize = 64 * 1024;
/// Chunks in the pool beyond those a full ring needs.
const SPARE_CHUNKS: usize = 16;
/// A chunk holding samples is handed over after this long, even when not full.
const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// Counters of the captures since start (for logs and metrics).
#[derive(Debug, Default)]
pub(crate) struct CaptureStats {
    /// Captures opened.
    pub(crate) captures_total: AtomicU64,
    /// Packets written into captures.
    pub(crate) packets_total: AtomicU64,
    /// Packets left out of captures: the writer was behind, or the directory at its cap.
    pub(crate) dropped_total: AtomicU64,
    /// Old captures removed to stay under `pcap.max_disk_mib`.
    pub(crate) removed_total: AtomicU64,
    /// Bytes the capture directory holds.
    pub(crate) disk_bytes: AtomicU64,
}

/// Work for the writer thread.
enum Job {
    Open {
        slot: u64,
        name: String,
    },
    Data {
        slot: u64,
        chunk: Vec<u8>,
        packets: u64,
    },
    Close {
        slot: u64,
    },
}

/// An incident whose capture is being written.
#[derive(Debug)]
struct Active {
    incident: String,
    /// Names the file for the writer.
    slot: u64,
    packets: u64,
    /// Records not yet handed over, and when the first of them was added.
    chunk: Option<Vec<u8>>,
    chunk_packets: u64,
    since: Option<SystemTime>,
}

/// The event loop's side of the captures.
#[derive(Debug)]
pub(crate) struct Captures {
    dir: PathBuf,
    ring: PacketRing,
    snaplen: u32,
    max_packets: u64,
    active: Vec<Active>,
    next_slot: u64,
    jobs: Option<SyncSender<Job>>,
    /// Empty chunks, back from the writer (and our own returns).
    pool: Receiver<Vec<u8>>,
    give_back: SyncSender<Vec<u8>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<CaptureStats>,
    log: RateLimitedLog,
}

impl Captures {
    /// Opens the capture directory (`dir`, created 0700 if needed, trimmed to the cap) and
    /// starts the writer thread.
    pub(crate) fn start(dir: &Path, config: &Pcap, snaplen: u32) -> std::io::Result<Captures> {
        let cap = u64::from(config.max_disk_mib) * 1024 * 1024;
        let store = CaptureDir::open(dir, cap)?;
        let ring_bytes = config.ring_packets as usize * (snaplen as usize + RECORD_HEADER_LEN);
        let chunks = ring_bytes.div_ceil(CHUNK) + SPARE_CHUNKS;
        let (give_back, pool) = sync_channel(chunks);
        for _ in 0..chunks {
            let _ = give_back.try_send(Vec::with_capacity(CHUNK));
        }
        let (jobs, inbox) = sync_channel(chunks + 64);
        let stats = Arc::new(CaptureStats::default());
        stats.disk_bytes.store(store.total(), Ordering::Relaxed);
        let writer = {
            let (stats, give_back) = (stats.clone(), give_back.clone());
            std::thread::Builder::new()
                .name("pcap-writer".into())
                .spawn(move || write_captures(store, inbox, give_back, &stats))?
        };
        Ok(Captures {
            dir: dir.to_path_buf(),
            ring: PacketRing::new(config.ring_packets as usize, snaplen as usize),
            snaplen,
            max_packets: u64::from(config.max_packets_per_incident),
            active: Vec::with_capacity(8),
            next_slot: 0,
            jobs: Some(jobs),
            pool,
            give_back,
            writer: Some(writer),
            stats,
            log: RateLimitedLog::new(Duration::from_secs(60)),
        })
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> &Arc<CaptureStats> {
        &self.stats
    }

    /// Where the capture of `incident` is (or would be) written.
    pub(crate) fn path_of(&self, incident: &str) -> PathBuf {
        self.dir.join(format!("{incident}.pcap"))
    }

    /// Whether `incident` has a capture: being written now, or on disk from earlier.
    pub(crate) fn has_capture(&self, incident: &str) -> bool {
        self.active.iter().any(|a| a.incident == incident) || self.path_of(incident).is_file()
    }

    /// One sampled packet: into the ring, and into every capture being written. Allocates
    /// nothing.
    pub(crate) fn packet(
        &mut self,
        time: Duration,
        captured: &[u8],
        wire_len: u32,
        now: SystemTime,
    ) {
        let captured = &captured[..captured.len().min(self.snaplen as usize)];
        self.ring.push(time, captured, wire_len);
        for i in 0..self.active.len() {
            if self.active[i].packets < self.max_packets {
                self.add_record(i, time, captured, wire_len, now);
            }
            let active = &self.active[i];
            if active
                .since
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= FLUSH_AFTER)
            {
                self.hand_over(i);
            }
        }
    }

    /// An incident opened: its capture starts with the file header and the ring. Returns
    /// false when the capture cannot be written (the writer is gone or far behind).
    pub(crate) fn open(&mut self, incident: &str, now: SystemTime) -> bool {
        if self.active.iter().any(|a| a.incident == incident) {
            return true;
        }
        let valid = !incident.is_empty()
            && incident
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let Some(mut chunk) = valid.then(|| self.pool.try_recv().ok()).flatten() else {
            self.log.warn(format_args!(
                "incident {incident}: no packet capture (the capture writer is behind)"
            ));
            return false;
        };
        let slot = self.next_slot;
        self.next_slot += 1;
        let name = incident.to_string();
        if !self.send(Job::Open { slot, name }) {
            let _ = self.give_back.try_send(chunk);
            return false;
        }
        chunk.extend_from_slice(&pcap::file_header(self.snaplen));
        self.stats.captures_total.fetch_add(1, Ordering::Relaxed);
        self.active.push(Active {
            incident: incident.to_string(),
            slot,
            packets: 0,
            chunk: Some(chunk),
            chunk_packets: 0,
            since: Some(now),
        });
        let i = self.active.len() - 1;
        let ring = std::mem::replace(&mut self.ring, PacketRing::new(0, 0));
        for (time, bytes, wire_len) in ring.iter() {
            if self.active[i].packets >= self.max_packets {
                break;
            }
            self.add_record(i, time, bytes, wire_len, now);
        }
        self.ring = ring;
        true
    }

    /// An incident ended: what its capture holds goes to disk and the file is closed.
    pub(crate) fn close(&mut self, incident: &str) {
        let Some(i) = self.active.iter().position(|a| a.incident == incident) else {
            return;
        };
        self.hand_over(i);
        let active = self.active.swap_remove(i);
        if let Some(chunk) = active.chunk {
            let _ = self.give_back.try_send(chunk);
        }
        self.send(Job::Close { slot: active.slot });
    }

    /// Adds one record to capture `i`, handing its chunk over when full. A packet that finds
    /// no chunk free is dropped and counted.
    fn add_record(
        &mut self,
        i: usize,
        time: Duration,
        bytes: &[u8],
        wire_len: u32,
        now: SystemTime,
    ) {
        for _ in 0..2 {
            let active = &mut self.active[i];
            if active.chunk.is_none() {
                active.chunk = self.pool.try_recv().ok();
            }
            let Some(chunk) = active.chunk.as_mut() else {
                break;
            };
            if pcap::append_record(chunk, time, bytes, wire_len) {
                active.packets += 1;
                active.chunk_packets += 1;
                active.since.get_or_insert(now);
                return;
            }
            self.hand_over(i);
        }
        self.stats.dropped_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands capture `i`'s chunk (if it holds anything) to the writer.
    fn hand_over(&mut self, i: usize) {
        let active = &mut self.active[i];
        active.since = None;
        let Some(chunk) = active.chunk.take_if(|c| !c.is_empty()) else {
            return;
        };
        let (slot, packets) = (active.slot, std::mem::take(&mut active.chunk_packets));
        self.send(Job::Data {
            slot,
            chunk,
            packets,
        });
    }

    /// Queues a job for the writer without waiting; false (logged) when it cannot.
    fn send(&mut self, job: Job) -> bool {
        let Some(jobs) = &self.jobs else { return false };
        match jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                if let Job::Data { chunk, packets, .. } = job {
                    self.stats
                        .dropped_total
                        .fetch_add(packets, Ordering::Relaxed);
                    let _ = self.give_back.try_send(chunk);
                }
                self.log.warn(format_args!(
                    "packet capture writer is behind or gone: data dropped"
                ));
                false
            }
        }
    }
}

impl Drop for Captures {
    /// Finishes every capture and waits for the writer to put it on disk.
    fn drop(&mut self) {
        let open: Vec<String> = self.active.iter().map(|a| a.incident.clone()).collect();
        for incident in open {
            self.close(&incident);
        }
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: runs the jobs until the event loop's side is dropped.
fn write_captures(
    mut store: CaptureDir,
    inbox: Receiver<Job>,
    give_back: SyncSender<Vec<u8>>,
    stats: &CaptureStats,
) {
    let mut open: Vec<(u64, Option<PathBuf>)> = Vec::new();
    let mut log = RateLimitedLog::new(Duration::from_secs(60));
    for job in inbox {
        match job {
            Job::Open { slot, name } => match store.create(&name) {
                Ok(path) => open.push((slot, Some(path))),
                Err(e) => {
                    log.warn(format_args!("creating the capture of incident {name}: {e}"));
                    open.push((slot, None));
                }
            },
            Job::Data {
                slot,
                mut chunk,
                packets,
            } => {
                let path = open
                    .iter()
                    .find(|(s, _)| *s == slot)
                    .and_then(|(_, p)| p.as_ref());
                let written = match path.map(|p| (store.append(p, &chunk), p)) {
                    Some((Ok(Appended::Written), _)) => true,
                    Some((Ok(Appended::OverCap), p)) => {
                        log.warn(format_args!(
                            "{}: the capture directory is at pcap.max_disk_mib; packets left out",
                            p.display()
                        ));
                        false
                    }
                    Some((Err(e), p)) => {
                        log.warn(format_args!("writing {}: {e}", p.display()));
                        false
                    }
                    None => false,
                };
                let counter = if written {
                    &stats.packets_total
                } else {
                    &stats.dropped_total
                };
                counter.fetch_add(packets, Ordering::Relaxed);
                chunk.clear();
                let _ = give_back.try_send(chunk);
            }
            Job::Close { slot } => {
                if let Some(i) = open.iter().position(|(s, _)| *s == slot) {
                    if let (_, Some(path)) = open.swap_remove(i) {
                        store.close(&path);
                    }
                }
            }
        }
        stats
            .removed_total
            .store(store.removed(), Ordering::Relaxed);
        stats.disk_bytes.store(store.total(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::thread_allocations;
    use crate::report::pcap::FILE_HEADER_LEN;

    fn temp_dir(tag: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("ftagent-capture-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    fn packet(i: u32) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 250, 0, 1, 10, 250, 0, 2,
        ];
        p.extend_from_slice(&(i as u16).to_be_bytes());
        p.extend_from_slice(&[0x69, 0x87, 0, 8, 0, 0]);
        p
    }

    /// The records of a pcap file: (seconds, microseconds, captured bytes).
    fn records(file: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let word = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
        assert_eq!(word(0), 0xa1b2_c3d4);
        let mut at = FILE_HEADER_LEN;
        let mut out = Vec::new();
        while at < file.len() {
            let len = word(at + 8) as usize;
            out.push((
                word(at),
                word(at + 4),
                file[at + 16..at + 16 + len].to_vec(),
            ));
            at += 16 + len;
        }
        out
    }

    /// Issue 9: a capture starts with the ring (the packets before the incident), goes on with
    /// the packets during it, stops at the per-incident cap, and the loop's side allocates
    /// nothing per packet.
    #[test]
    fn capture_starts_with_the_ring_and_respects_the_cap() {
        let dir = temp_dir("ring");
        let config = Pcap {
            enabled: true,
            ring_packets: 4,
            max_packets_per_incident: 10,
            max_disk_mib: 1,
        };
        let mut captures = Captures::start(&dir, &config, 128).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at =
            |i: u32| Duration::from_secs(1_800_000_000) + Duration::from_millis(u64::from(i) * 10);
        let packets: Vec<Vec<u8>> = (0..40).map(packet).collect();
        for i in 0..6 {
            captures.packet(at(i), &packets[i as usize], 28, t0);
        }
        assert!(captures.open("1800000000060-1", t0));
        assert!(
            !captures.open("../etc/passwd", t0),
            "only incident-id names"
        );
        let before = thread_allocations();
        for i in 6..40 {
            captures.packet(at(i), &packets[i as usize], 28, t0);
        }
        assert_eq!(thread_allocations(), before, "packets allocate nothing");
        assert!(captures.has_capture("1800000000060-1"));
        captures.close("1800000000060-1");
        let path = captures.path_of("1800000000060-1");
        let stats = captures.stats().clone();
        drop(captures);
        let file = std::fs::read(&path).unwrap();
        let records = records(&file);
        // The ring's 4 (packets 2–5, before the incident), then 6 more up to the cap of 10.
        let firsts: Vec<u16> = records
            .iter()
            .map(|(_, _, p)| u16::from_be_bytes([p[20], p[21]]))
            .collect();
        assert_eq!(firsts, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!((records[0].0, records[0].1), (1_800_000_000, 20_000));
        assert_eq!(file.len() as u64, 24 + 10 * (16 + 28));
        assert_eq!(stats.packets_total.load(Ordering::Relaxed), 10);
        assert_eq!(stats.captures_total.load(Ordering::Relaxed), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Concurrent incidents get a file each; a full chunk is handed over and a long capture
    /// spans several chunks.
    #[test]
    fn concurrent_captures_and_many_chunks() {
        let dir = temp_dir("many");
        let config = Pcap {
            enabled: true,
            ring_packets: 0,
            max_packets_per_incident: 5000,
            max_disk_mib: 10,
        };
        let mut captures = Captures::start(&dir, &config, 128).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(captures.open("1-1", t0));
        assert!(captures.open("1-2", t0));
        let p = packet(7);
        for i in 0..3000u64 {
            captures.packet(Duration::from_millis(i), &p, 28, t0);
            if i % 200 == 0 {
                // Let the writer keep up, as the disk would between NFLOG batches.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        captures.close("1-2");
        drop(captures);
        for name in ["1-1", "1-2"] {
            let file = std::fs::read(dir.join(format!("{name}.pcap"))).unwrap();
            assert_eq!(records(&file).len(), 3000, "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

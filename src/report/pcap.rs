//! The pcap file format — libpcap 2.4, little-endian, microsecond timestamps, LINKTYPE_RAW
//! (each record an IPv4 or IPv6 packet from its IP header, as NFLOG copies it) — and the ring
//! of recent sampled packets each incident's capture starts with. Encoding only, into buffers
//! allocated beforehand; nothing here touches the disk.

use std::time::Duration;

/// LINKTYPE_RAW: the packet begins with an IPv4 or IPv6 header (the version nibble tells).
pub(crate) const LINKTYPE_RAW: u32 = 101;
pub(crate) const FILE_HEADER_LEN: usize = 24;
pub(crate) const RECORD_HEADER_LEN: usize = 16;
const MAGIC_MICROSECONDS: u32 = 0xa1b2_c3d4;

/// The file header: magic, version 2.4, no time zone offset, `snaplen`, LINKTYPE_RAW.
pub(crate) fn file_header(snaplen: u32) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_MICROSECONDS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
    h
}

/// Appends one record — `time` since the Unix epoch, the captured bytes and the packet's
/// length on the wire — to `out` if it fits in `out`'s capacity (so it never allocates);
/// false when it does not fit.
pub(crate) fn append_record(
    out: &mut Vec<u8>,
    time: Duration,
    captured: &[u8],
    wire_len: u32,
) -> bool {
    if out.capacity() - out.len() < RECORD_HEADER_LEN + captured.len() {
        return false;
    }
    // Seconds past 2106 wrap, as in every classic pcap file.
    out.extend_from_slice(&(time.as_secs() as u32).to_le_bytes());
    out.extend_from_slice(&time.subsec_micros().to_le_bytes());
    out.extend_from_slice(&(captured.len() as u32).to_le_bytes());
    out.extend_from_slice(&wire_len.max(captured.len() as u32).to_le_bytes());
    out.extend_from_slice(captured);
    true
}

/// One sampled packet in the ring: when, how much was captured, how long it was.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    time: Duration,
    captured: u16,
    wire_len: u32,
}

/// The most recent sampled packets, `snaplen` bytes each, in memory allocated once: pushing
/// overwrites the oldest.
#[derive(Debug)]
pub(crate) struct PacketRing {
    snaplen: usize,
    bytes: Box<[u8]>,
    slots: Box<[Slot]>,
    /// Where the next packet goes.
    next: usize,
    len: usize,
}

impl PacketRing {
    pub(crate) fn new(capacity: usize, snaplen: usize) -> PacketRing {
        PacketRing {
            snaplen,
            bytes: vec![0; capacity * snaplen].into_boxed_slice(),
            slots: vec![Slot::default(); capacity].into_boxed_slice(),
            next: 0,
            len: 0,
        }
    }

    /// Keeps a packet (its first `snaplen` bytes), dropping the oldest when full.
    pub(crate) fn push(&mut self, time: Duration, captured: &[u8], wire_len: u32) {
        let capacity = self.slots.len();
        if capacity == 0 {
            return;
        }
        let captured = &captured[..captured.len().min(self.snaplen).min(usize::from(u16::MAX))];
        let start = self.next * self.snaplen;
        self.bytes[start..start + captured.len()].copy_from_slice(captured);
        self.slots[self.next] = Slot {
            time,
            captured: captured.len() as u16,
            wire_len,
        };
        self.next = (self.next + 1) % capacity;
        self.len = (self.len + 1).min(capacity);
    }

    /// The packets kept, oldest first: (time, captured bytes, length on the wire).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Duration, &[u8], u32)> + '_ {
        let capacity = self.slots.len();
        let first = (self.next + capacity - self.len) % capacity.max(1);
        (0..self.len).map(move |i| {
            let index = (first + i) % capacity;
            let slot = self.slots[index];
            let start = index * self.snaplen;
            let bytes = &self.bytes[start..start + usize::from(slot.captured)];
            (slot.time, bytes, slot.wire_len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::thread_allocations;

    #[test]
    fn header_is_libpcap_2_4_raw_ip() {
        let h = file_header(128);
        assert_eq!(
            h,
            [
                0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0, 0, 101, 0,
                0, 0
            ]
        );
    }

    #[test]
    fn records_fit_or_are_refused_without_allocating() {
        let mut out = Vec::with_capacity(RECORD_HEADER_LEN * 2 + 8);
        let before = thread_allocations();
        let t = Duration::new(1_800_000_000, 123_456_789);
        assert!(append_record(&mut out, t, &[0x45, 1, 2, 3], 1500));
        assert!(!append_record(&mut out, t, &[0; 16], 60), "no room left");
        assert!(append_record(&mut out, t, &[0x60; 4], 2));
        assert_eq!(thread_allocations(), before);
        assert_eq!(&out[0..4], &1_800_000_000u32.to_le_bytes());
        assert_eq!(&out[4..8], &123_456u32.to_le_bytes());
        assert_eq!(&out[8..12], &4u32.to_le_bytes());
        assert_eq!(&out[12..16], &1500u32.to_le_bytes());
        assert_eq!(&out[16..20], &[0x45, 1, 2, 3]);
        // A wire length shorter than the capture is raised to it.
        assert_eq!(&out[32..36], &4u32.to_le_bytes());
        assert_eq!(out.len(), 2 * (RECORD_HEADER_LEN + 4));
    }

    #[test]
    fn ring_keeps_the_newest_oldest_first() {
        let mut ring = PacketRing::new(3, 4);
        assert_eq!(ring.iter().count(), 0);
        let before = thread_allocations();
        for i in 0..5u8 {
            ring.push(
                Duration::from_secs(u64::from(i)),
                &[i; 6],
                100 + u32::from(i),
            );
        }
        assert_eq!(thread_allocations(), before, "push never allocates");
        let kept: Vec<(u64, Vec<u8>, u32)> = ring
            .iter()
            .map(|(t, b, l)| (t.as_secs(), b.to_vec(), l))
            .collect();
        assert_eq!(
            kept,
            [
                (2, vec![2; 4], 102),
                (3, vec![3; 4], 103),
                (4, vec![4; 4], 104)
            ]
        );
        let mut short = PacketRing::new(4, 8);
        short.push(Duration::ZERO, &[9; 3], 3);
        assert_eq!(
            short.iter().map(|(_, b, _)| b.len()).collect::<Vec<_>>(),
            [3]
        );
        let mut none = PacketRing::new(0, 8);
        none.push(Duration::ZERO, &[9; 3], 3);
        assert_eq!(none.iter().count(), 0);
    }
}

//! The sampled packets of the last second or so, kept whole in a fixed ring so that the
//! detector can pick out each incident's own packets (its vector, its ports) and say who sent
//! them and what they hit. Pure data; nothing allocates after `new`.

use std::net::{IpAddr, Ipv4Addr};

use crate::netlink::nflog::PacketMeta;

const VACANT: PacketMeta = PacketMeta {
    src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    proto: 0,
    src_port: None,
    dst_port: None,
    len: 0,
    ttl: 0,
    tcp_flags: None,
    fragment: false,
};

/// The newest `capacity` sampled packets of the last `ticks` ticks.
#[derive(Debug)]
pub(crate) struct Recent {
    ring: Box<[PacketMeta]>,
    /// Packets pushed since start; the next goes to `ring[written % capacity]`.
    written: u64,
    /// `written` at the start of each of the last ticks, a ring at `at` (the current tick).
    starts: Box<[u64]>,
    at: usize,
}

/// A borrowed view of the recent packets, in no particular order (the ring's two parts).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Window<'a> {
    parts: [&'a [PacketMeta]; 2],
}

impl<'a> Window<'a> {
    #[cfg(test)]
    pub(crate) fn new(packets: &'a [PacketMeta]) -> Window<'a> {
        Window {
            parts: [packets, &[]],
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.parts[0].len() + self.parts[1].len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a PacketMeta> {
        let [a, b] = self.parts;
        a.iter().chain(b)
    }
}

impl Recent {
    /// At most `capacity` packets (at least 1) of the current tick and the `ticks - 1` before.
    pub(crate) fn new(capacity: usize, ticks: usize) -> Recent {
        Recent {
            ring: vec![VACANT; capacity.max(1)].into_boxed_slice(),
            written: 0,
            starts: vec![0; ticks.max(1)].into_boxed_slice(),
            at: 0,
        }
    }

    pub(crate) fn push(&mut self, p: &PacketMeta) {
        let cap = self.ring.len() as u64;
        self.ring[(self.written % cap) as usize] = *p;
        self.written += 1;
    }

    /// Starts the next tick: the oldest tick's packets leave the window.
    pub(crate) fn next_tick(&mut self) {
        self.at = (self.at + 1) % self.starts.len();
        self.starts[self.at] = self.written;
    }

    /// The packets of the window.
    pub(crate) fn window(&self) -> Window<'_> {
        let cap = self.ring.len() as u64;
        let oldest = self.starts[(self.at + 1) % self.starts.len()];
        let from = oldest.max(self.written.saturating_sub(cap));
        let len = (self.written - from) as usize;
        let a = (from % cap) as usize;
        let parts = if a + len <= self.ring.len() {
            [&self.ring[a..a + len], &[][..]]
        } else {
            [&self.ring[a..], &self.ring[..a + len - self.ring.len()]]
        };
        Window { parts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(n: u32) -> PacketMeta {
        PacketMeta {
            src: IpAddr::V4(Ipv4Addr::from(n)),
            ..VACANT
        }
    }

    fn sources(w: Window) -> Vec<u32> {
        let mut v: Vec<u32> = w
            .iter()
            .map(|p| match p.src {
                IpAddr::V4(a) => u32::from(a),
                IpAddr::V6(_) => unreachable!(),
            })
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn the_window_holds_the_last_ticks_and_at_most_the_capacity() {
        let mut r = Recent::new(8, 3);
        assert!(r.window().is_empty());
        for tick in 0..3u32 {
            for i in 0..2 {
                r.push(&from(tick * 10 + i));
            }
            r.next_tick();
        }
        // Three ticks of two; the window is the current (empty) tick and the two before.
        assert_eq!(sources(r.window()), [10, 11, 20, 21]);
        for i in 0..7 {
            r.push(&from(100 + i));
        }
        // 2 + 7 in the window, capacity 8: the newest 8, across the ring's end.
        assert_eq!(sources(r.window()), [21, 100, 101, 102, 103, 104, 105, 106]);
        r.next_tick();
        r.next_tick();
        r.next_tick();
        assert!(r.window().is_empty(), "three quiet ticks empty it");
    }
}

//! A fixed number of client connections on the event loop — the control socket's and
//! `/metrics`' — each with a mio token of its own from `first_token` on. A new connection takes
//! a free slot (or the oldest connection's, which the caller closes); a connection open longer
//! than a time limit is closed whatever its client does, so no client holds a slot for long.

use std::io::{self, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

/// The stream of a connection: registered with mio, shut down when closed.
pub(crate) trait Stream: Source {
    fn shut_down(&self);
}

impl Stream for UnixStream {
    fn shut_down(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Stream for TcpStream {
    fn shut_down(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

/// How far `write_out` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// All of it.
    All,
    /// The socket takes no more now: wait for WRITABLE.
    Later,
    /// The peer is gone or the socket failed: close.
    Failed,
}

/// Writes what the socket takes of `output` from `*written` on, advancing `*written`.
pub(crate) fn write_out(stream: &mut impl Write, output: &[u8], written: &mut usize) -> Written {
    while *written < output.len() {
        match stream.write(&output[*written..]) {
            Ok(0) => return Written::Failed,
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Written::Later,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Written::Failed,
        }
    }
    Written::All
}

/// A connection kept in a slot.
pub(crate) trait Connection {
    type Stream: Stream;
    fn stream(&mut self) -> &mut Self::Stream;
    fn opened(&self) -> Instant;
}

pub(crate) struct Slots<C> {
    first_token: usize,
    slots: Vec<Option<C>>,
}

impl<C: Connection> Slots<C> {
    pub(crate) fn new(first_token: usize, capacity: usize) -> Slots<C> {
        Slots {
            first_token,
            slots: (0..capacity).map(|_| None).collect(),
        }
    }

    pub(crate) fn owns(&self, token: Token) -> bool {
        self.slot_of(token).is_some()
    }

    /// The slot behind a token of ours.
    pub(crate) fn slot_of(&self, token: Token) -> Option<usize> {
        token
            .0
            .checked_sub(self.first_token)
            .filter(|&slot| slot < self.slots.len())
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut C> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// A free slot, or Err with the oldest connection's, which the caller closes first.
    pub(crate) fn free(&self) -> Result<usize, usize> {
        self.slots.iter().position(Option::is_none).ok_or_else(|| {
            self.slots
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().map(|c| (i, c.opened())))
                .min_by_key(|(_, opened)| *opened)
                .map_or(0, |(i, _)| i)
        })
    }

    /// Registers the connection (readable and writable) under the slot's token and keeps it.
    pub(crate) fn insert(
        &mut self,
        slot: usize,
        mut conn: C,
        registry: &Registry,
    ) -> std::io::Result<()> {
        let token = Token(self.first_token + slot);
        registry.register(
            conn.stream(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.slots[slot] = Some(conn);
        Ok(())
    }

    pub(crate) fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(mut conn) = self.slots.get_mut(slot).and_then(Option::take) {
            let _ = registry.deregister(conn.stream());
            conn.stream().shut_down();
        }
    }

    /// Closes the connections open longer than `limit`; returns how many.
    pub(crate) fn expire(&mut self, now: Instant, limit: Duration, registry: &Registry) -> usize {
        let mut closed = 0;
        for slot in 0..self.slots.len() {
            let stale = self.slots[slot]
                .as_ref()
                .is_some_and(|c| now.saturating_duration_since(c.opened()) > limit);
            if stale {
                self.close(slot, registry);
                closed += 1;
            }
        }
        closed
    }
}

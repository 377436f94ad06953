//! Reporting beyond stdout: incident events POSTed to webhooks (generic JSON, Slack, Discord)
//! and a packet capture per incident from the sampled packets. The event loop only hands
//! work over — events to bounded queues, packets to preallocated buffers — and threads of
//! their own do the slow parts (HTTP, disk), so neither ever holds up detection.

pub(crate) mod capture;
pub(crate) mod message;
pub(crate) mod pcap;
mod store;
pub(crate) mod webhook;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::detect::{Event, EventKind};
use crate::netlink::nflog::Captured;
use crate::netlink::nflog::PacketMeta;
use capture::Captures;
use webhook::{WebhookError, Webhooks};

/// The directory of the captures, in `agent.state_dir`.
pub(crate) const PCAP_DIR: &str = "pcap";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Webhook(#[from] WebhookError),
}

/// Webhooks and captures, as the daemon drives them.
#[derive(Debug)]
pub(crate) struct Reporter {
    webhooks: Webhooks,
    captures: Option<Captures>,
    host: String,
}

impl Reporter {
    /// Starts the webhook threads and, with `pcap.enabled`, the capture writer. A capture
    /// directory that cannot be used is logged and leaves captures off: detection and
    /// mitigation matter more.
    pub(crate) fn start(config: &Config) -> Result<Reporter, ReportError> {
        let host = hostname();
        let webhooks = Webhooks::start(&config.webhooks, &host)?;
        for (label, _) in webhooks.stats() {
            log::info!("events go to {label}");
        }
        let captures = config.pcap.enabled.then(|| {
            let dir = config.agent.state_dir.join(PCAP_DIR);
            match Captures::start(&dir, &config.pcap, config.sense.snaplen) {
                Ok(captures) => {
                    log::info!(
                        "packet captures of incidents in {} ({} packets before each, at most {} per incident, {} MiB in all)",
                        dir.display(),
                        config.pcap.ring_packets,
                        config.pcap.max_packets_per_incident,
                        config.pcap.max_disk_mib
                    );
                    Some(captures)
                }
                Err(e) => {
                    log::error!("packet captures off: {}: {e}", dir.display());
                    None
                }
            }
        });
        Ok(Reporter {
            webhooks,
            captures: captures.flatten(),
            host,
        })
    }

    /// A new configuration (SIGHUP): the webhooks are started afresh when they changed; a
    /// bad one keeps the running ones.
    pub(crate) fn reconfigure(
        &mut self,
        fresh: &Config,
        running: &Config,
    ) -> Result<(), ReportError> {
        if fresh.webhooks != running.webhooks {
            let fresh = Webhooks::start(&fresh.webhooks, &self.host)?;
            std::mem::replace(&mut self.webhooks, fresh).stop_now();
        }
        Ok(())
    }

    /// One sampled packet (`now`: when it was read, for packets the kernel did not stamp).
    /// Allocates nothing.
    pub(crate) fn packet(&mut self, meta: &PacketMeta, captured: &Captured, now: SystemTime) {
        if let Some(captures) = &mut self.captures {
            let time = captured
                .timestamp
                .unwrap_or_else(|| now.duration_since(UNIX_EPOCH).unwrap_or_default());
            captures.packet(time, captured.l3, u32::from(meta.len), now);
        }
    }

    /// Before the events are printed: an opening incident starts its capture, an ending one
    /// finishes it, and every event of an incident with a capture names its file.
    pub(crate) fn capture(&mut self, events: &mut [Event], now: SystemTime) {
        let Some(captures) = &mut self.captures else {
            return;
        };
        for event in events {
            let named = match event.kind {
                EventKind::AttackStart => captures.open(&event.incident, now),
                EventKind::AttackUpdate | EventKind::AttackEnd => {
                    captures.has_capture(&event.incident)
                }
            };
            if named {
                let path = captures.path_of(&event.incident);
                event.pcap = Some(path.display().to_string());
            }
            if event.kind == EventKind::AttackEnd {
                captures.close(&event.incident);
            }
        }
    }

    /// Queues an event's JSON line (as printed) for the webhooks that want `event`.
    pub(crate) fn notify(&mut self, event: &'static str, line: &str) {
        if !self.webhooks.is_empty() {
            self.webhooks.notify(event, &Arc::from(line));
        }
    }
}

/// This machine's name for messages (`/proc/sys/kernel/hostname`, as in the host's UTS
/// namespace).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown host".to_string())
}

/// A warning logged at most once per interval, with how many were held back meanwhile:
/// a failing receiver or a full disk must not flood the log.
#[derive(Debug)]
pub(crate) struct RateLimitedLog {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Default for RateLimitedLog {
    fn default() -> RateLimitedLog {
        RateLimitedLog::new(Duration::from_secs(10))
    }
}

impl RateLimitedLog {
    pub(crate) fn new(every: Duration) -> RateLimitedLog {
        RateLimitedLog {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// Logs `message` unless one was logged less than the interval ago. Formats (and so
    /// allocates) only when it logs.
    pub(crate) fn warn(&mut self, message: fmt::Arguments) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.held_back += 1;
            return;
        }
        match std::mem::take(&mut self.held_back) {
            0 => log::warn!("{message}"),
            n => log::warn!("{message} ({n} similar messages held back)"),
        }
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_held_back_within_the_interval() {
        let mut log = RateLimitedLog::new(Duration::from_secs(3600));
        log.warn(format_args!("first"));
        let logged = log.last;
        log.warn(format_args!("second"));
        log.warn(format_args!("third"));
        assert_eq!((log.last, log.held_back), (logged, 2));
        let mut always = RateLimitedLog::new(Duration::ZERO);
        always.warn(format_args!("a"));
        always.warn(format_args!("b"));
        assert_eq!(always.held_back, 0);
    }
}

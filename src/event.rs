//! The one shape of every event line: each JSON object ftagent prints on stdout (one a line)
//! and posts to a generic webhook has `ts` (RFC 3339 UTC, milliseconds) and `event` first,
//! then the event's own fields in schema order (README, section "Events").
//!
//! Each layer keeps the fields of its own events as a serde struct beside the plain data they
//! describe — `sample` (sense), `attack_*` (detect), `mitigation_*` (mitigate), `bgp_*`
//! (escalate), `table_restored` (daemon) — and implements [`EventBody`]; [`line`] is the only
//! writer of the envelope, so no event can put its keys before `ts` and `event`. This module
//! sits in the lowest layer so that every one of them can use it.

use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use crate::addr::Cidr;
use crate::time::rfc3339;

/// An event's own fields (everything after `ts` and `event`), and its name.
pub(crate) trait EventBody: Serialize {
    /// The `event` key: `attack_start`, `mitigation_applied`, `table_restored`…
    fn name(&self) -> &'static str;
}

/// The event as one JSON line (no newline): `ts` from `wall_clock`, `event`, then the body.
pub(crate) fn line<B: EventBody>(body: &B, wall_clock: SystemTime) -> String {
    let line = Line {
        ts: rfc3339(wall_clock),
        event: body.name(),
        body,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

#[derive(Serialize)]
struct Line<'a, B> {
    ts: String,
    event: &'static str,
    #[serde(flatten)]
    body: &'a B,
}

/// `"mode"`: `"monitor"` when the measure was only reported, else `"mitigate"`.
pub(crate) fn mode<S: Serializer>(monitor: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *monitor { "monitor" } else { "mitigate" })
}

/// Addresses and prefixes as text (`"10.0.0.1"`, `"10.1.0.0/24"`).
pub(crate) fn cidrs<S: Serializer>(cidrs: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(cidrs.iter().map(Cidr::to_string))
}

/// A duration in whole seconds, or null.
pub(crate) fn whole_seconds<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(|d| d.as_secs()).serialize(s)
}

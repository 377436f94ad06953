//! The daemon's state files in `agent.state_dir`: the detector's baselines and open incidents
//! (`detector.json`), and what is in force (`mitigation.json`: the incidents being mitigated
//! with each ban and measure and the wall-clock time it runs out, the operators' bans, and the
//! SYN-cookie setting found before turning them on). Each is written atomically (a temporary
//! file renamed over it); files older than a day describe other traffic and are not loaded.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::addr::Cidr;
use crate::detect::{Detector, State};
use crate::mitigate::{MitigatedIncident, SavedItem};

/// The detector's state file.
const DETECTOR_FILE: &str = "detector.json";
/// The mitigation state file.
const MITIGATION_FILE: &str = "mitigation.json";
/// A state file older than this describes other traffic: it is not loaded.
const STALE_STATE: Duration = Duration::from_secs(24 * 3600);
/// The format version of `mitigation.json` written by this build.
const MITIGATION_VERSION: u32 = 1;

/// What is in force, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MitigationState {
    pub(crate) version: u32,
    pub(crate) incidents: Vec<MitigatedIncident>,
    pub(crate) operator_bans: Vec<OperatorBan>,
    /// `net.ipv4.tcp_syncookies` before an incident turned SYN cookies on, to put it back.
    pub(crate) syn_cookies_before: Option<String>,
    /// `net.netfilter.nf_conntrack_tcp_loose` before the SYN proxy turned it off.
    #[serde(default)]
    pub(crate) tcp_loose_before: Option<String>,
}

/// An operator's ban: the address or prefix, its timeout, and when it runs out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OperatorBan {
    #[serde(flatten)]
    pub(crate) ban: SavedItem<String>,
    pub(crate) timeout_ms: u64,
}

impl MitigationState {
    pub(crate) fn new(
        incidents: Vec<MitigatedIncident>,
        operator_bans: Vec<OperatorBan>,
        syn_cookies_before: Option<String>,
    ) -> MitigationState {
        MitigationState {
            version: MITIGATION_VERSION,
            incidents,
            operator_bans,
            syn_cookies_before,
            tcp_loose_before: None,
        }
    }

    /// The operators' bans not run out at `wall_now`: address, timeout, time left.
    pub(crate) fn operator_bans_left(
        &self,
        wall_now: SystemTime,
    ) -> Vec<(Cidr, Duration, Duration)> {
        self.operator_bans
            .iter()
            .filter_map(|b| {
                let cidr = b.ban.what.parse().ok()?;
                let left = crate::mitigate::left_until(b.ban.until_ms, wall_now)?;
                Some((cidr, Duration::from_millis(b.timeout_ms), left))
            })
            .collect()
    }
}

/// Baselines and open incidents from an earlier run, so a restart mid-attack neither
/// re-learns the attack nor reports it again. Usable: a readable file of this build's format
/// version, no older than a day; otherwise the detector starts its warm-up afresh (only the
/// ceilings judge until it ends).
pub(crate) fn load_detector(detector: &mut Detector, dir: &Path) {
    let path = dir.join(DETECTOR_FILE);
    if let Some(text) = read_fresh(&path) {
        match State::from_json(&text) {
            Ok(state) if state.version != crate::detect::state::VERSION => log::warn!(
                "{}: format version {} unknown to this build; learning afresh",
                path.display(),
                state.version
            ),
            Ok(state) => {
                detector.restore(state, Duration::ZERO);
                log::info!("baselines restored from {}", path.display());
            }
            Err(e) => log::warn!("{}: unreadable, learning afresh: {e}", path.display()),
        }
    }
}

/// What an earlier run had in force, if it left a readable, recent file.
pub(crate) fn load_mitigation(dir: &Path) -> Option<MitigationState> {
    let path = dir.join(MITIGATION_FILE);
    let text = read_fresh(&path)?;
    match serde_json::from_str::<MitigationState>(&text) {
        Ok(state) if state.version == MITIGATION_VERSION => Some(state),
        Ok(state) => {
            log::warn!(
                "{}: format version {} unknown to this build; ignored",
                path.display(),
                state.version
            );
            None
        }
        Err(e) => {
            log::warn!("{}: unreadable, ignored: {e}", path.display());
            None
        }
    }
}

pub(crate) fn save_detector(detector: &Detector, dir: &Path) {
    write_atomically(dir, DETECTOR_FILE, &detector.save().to_json());
}

pub(crate) fn save_mitigation(state: &MitigationState, dir: &Path) {
    match serde_json::to_string(state) {
        Ok(text) => write_atomically(dir, MITIGATION_FILE, &text),
        Err(e) => log::warn!("saving {MITIGATION_FILE}: {e}"),
    }
}

/// The file's text unless it is missing, unreadable (logged) or stale (logged).
fn read_fresh(path: &Path) -> Option<String> {
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    if age.is_some_and(|a| a > STALE_STATE) {
        log::info!(
            "{} is older than {}: not loaded",
            path.display(),
            humantime::format_duration(STALE_STATE)
        );
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            log::warn!("{}: {e}; not loaded", path.display());
            None
        }
    }
}

/// Writes a temporary file and renames it over `name`: a reader (or a crash) sees the old
/// file or the new one, never half of one.
fn write_atomically(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, text))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        log::warn!("saving {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mitigate::wall_ms;

    #[test]
    fn mitigation_state_round_trips_and_drops_what_ran_out() {
        let wall_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now = Duration::from_secs(50);
        let ban = |what: &str, left_s: u64| OperatorBan {
            ban: SavedItem {
                what: what.to_string(),
                until_ms: wall_ms(now + Duration::from_secs(left_s), now, wall_now),
            },
            timeout_ms: 600_000,
        };
        let state = MitigationState::new(
            Vec::new(),
            vec![ban("10.250.0.1", 30), ban("10.250.1.0/24", 0)],
            Some("0".into()),
        );
        let dir = std::env::temp_dir().join(format!("ftagent-persist-{}", std::process::id()));
        save_mitigation(&state, &dir);
        let loaded = load_mitigation(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(loaded, state);
        let later = wall_now + Duration::from_secs(10);
        assert_eq!(
            loaded.operator_bans_left(later),
            vec![(
                "10.250.0.1".parse().unwrap(),
                Duration::from_secs(600),
                Duration::from_secs(20)
            )]
        );
    }
}

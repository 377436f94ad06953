//! SIGHUP: the configuration read again and applied without a restart. An invalid file is
//! reported and the running configuration kept (and `status` says so). A valid one reaches the
//! kernel as a diff in one batch when only elements change (safelist, service and reflector
//! ports), else as an atomic replacement of the table that keeps bans and measures. Open
//! incidents and what is in force for them carry over. Keys only a restart can apply are
//! named and keep their running values.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::{
    install_shim, install_with, own_addresses_into, quietly, remove_shim, Daemon, DaemonError,
};
use crate::addr::Cidr;
use crate::config::{Config, ConfigSource, DEFAULT_PATH};
use crate::detect::Detector;

use crate::ruleset::{self, diff};
use crate::sense::Sensor;
use crate::status::Reload;
use crate::time::rfc3339;

/// The file a daemon started with `config_path` reads: None for the embedded defaults.
pub(super) fn source_path(config_path: Option<&Path>) -> Option<PathBuf> {
    match config_path {
        Some(path) => Some(path.to_path_buf()),
        None => Path::new(DEFAULT_PATH)
            .exists()
            .then(|| PathBuf::from(DEFAULT_PATH)),
    }
}

impl Daemon {
    pub(super) fn reload(&mut self) {
        let at = rfc3339(SystemTime::now());
        let failed = |error: String| Reload {
            at: at.clone(),
            ok: false,
            error: Some(error),
            applied: None,
            restart_only: Vec::new(),
        };
        let (mut fresh, source) = match Config::load(self.config_path.as_deref()) {
            Ok(loaded) => loaded,
            Err(e) => {
                log::error!("reload: configuration not reloaded, keeping the running one: {e}");
                self.last_reload = Some(failed(e.to_string()));
                return;
            }
        };
        let restart_only = keep_restart_only(&mut fresh, &self.config);
        super::fit_to_kernel(&mut fresh, self.kernel.features);
        if !restart_only.is_empty() {
            log::warn!(
                "reload: {} changed; they take effect at the next start",
                restart_only.join(", ")
            );
        }
        let safelist = self.pipeline.safelist_refresh.read_all(&fresh);
        let applied = match self.apply_table(&fresh, &safelist) {
            Ok(how) => how,
            Err(e) => {
                log::error!("reload: new configuration not applied, keeping the running one: {e}");
                self.last_reload = Some(failed(format!("not applied: {e}")));
                return;
            }
        };
        if fresh.nft != self.config.nft
            || fresh.mitigation.ban_duration != self.config.mitigation.ban_duration
            || safelist != self.pipeline.safelist
        {
            // The iptables chain follows: its ipsets' sizes, default timeout and safelist. Its
            // checks wait meanwhile, so that none runs beside the install.
            self.stop_shim_keeper();
            match install_shim(&mut self.kernel.nft, &fresh, &safelist) {
                Ok(None) if self.kernel.shim.is_some() => {
                    remove_shim();
                    self.kernel.shim = None;
                }
                Ok(shim) => self.kernel.shim = shim,
                Err(e) => log::error!("reload: {e}; the previous iptables chain stays"),
            }
            self.start_shim_keeper();
        }
        if let Err(e) = self.report.reconfigure(&fresh, &self.config) {
            log::error!("reload: {e}; the previous webhooks stay");
        }
        let never = self.pipeline.safelist_refresh.never_banned(&safelist);
        if let Some(escalation) = &mut self.pipeline.escalation {
            escalation.set_safelist(never.clone());
        }
        self.pipeline.mitigator.reconfigure(&fresh, never);
        self.pipeline.safelist = safelist;
        if fresh.services != self.config.services
            || fresh.sense.amplification_ports != self.config.sense.amplification_ports
            || fresh.detection != self.config.detection
        {
            // Keys may have changed: baselines and open incidents carry over by name.
            let mut sensor = Sensor::new(&fresh);
            sensor.loss = self.pipeline.sensor.loss;
            sensor.conntrack_entries = self.pipeline.sensor.conntrack_entries;
            self.pipeline.sensor = sensor;
            own_addresses_into(&mut self.pipeline.sensor);
            self.kernel
                .conntrack
                .renew(self.pipeline.sensor.connections.clone());
            let state = self.pipeline.detector.save();
            self.pipeline.detector = Detector::new(&fresh, self.pipeline.sensor.counters.layout());
            super::ceilings_from_link(&mut self.pipeline.detector);
            self.pipeline
                .detector
                .set_clock_origin(SystemTime::now() - self.schedule.started.elapsed());
            self.pipeline
                .detector
                .restore(state, self.schedule.started.elapsed());
        }
        self.config = fresh;
        self.config_source = match source {
            ConfigSource::File(path) => Some(path),
            ConfigSource::Defaults => None,
        };
        log::info!("reload: configuration reloaded (table: {applied})");
        self.last_reload = Some(Reload {
            at,
            ok: true,
            error: None,
            applied: Some(applied.to_string()),
            restart_only,
        });
    }

    /// Brings the table from the running configuration to `fresh`: element changes in one
    /// batch, checked by reading the table back; otherwise (or if that fails) the table
    /// replaced atomically, keeping its bans, and the incidents' measures put back. Returns
    /// how: "none", "diff" or "replace".
    fn apply_table(
        &mut self,
        fresh: &Config,
        safelist: &[Cidr],
    ) -> Result<&'static str, DaemonError> {
        let running = ruleset::desired(&self.config);
        let wanted = ruleset::desired(fresh);
        if let Some(diff) = diff::diff(&running, &wanted, &self.pipeline.safelist, safelist) {
            if diff.is_empty() {
                return Ok("none");
            }
            match self.kernel.nft.update(&diff) {
                Ok(()) => match self.kernel.nft.table_state() {
                    Ok(Some(state)) if state.differences(&wanted).is_empty() => {
                        log::info!("reload: table updated in place: {}", diff.summary());
                        return Ok("diff");
                    }
                    Ok(_) => log::warn!("reload: the table differs after the update; replacing it"),
                    Err(e) => log::warn!("reload: reading the table back: {e}; replacing it"),
                },
                Err(e) => log::warn!("reload: in-place update refused ({e}); replacing the table"),
            }
        }
        // One transaction: the new table with every ban and measure in force, each with the
        // time it has left.
        let now = Instant::now();
        let held = self.held_now(now);
        quietly(&mut self.kernel.monitor, held.len(), || {
            install_with(
                &mut self.kernel.nft,
                fresh,
                safelist,
                self.kernel.features,
                &held,
            )
        })?;
        Ok("replace")
    }
}

/// Puts the running values back into `fresh` for keys only a restart applies (the tick, the
/// control socket, the table mode, the NFLOG instance, BGP, the metrics endpoint…: the reload
/// class of their descriptors in `config`) and names those that differed.
fn keep_restart_only(fresh: &mut Config, running: &Config) -> Vec<String> {
    Config::keep_restart_only(fresh, running)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_keep_their_running_values() {
        let running = Config::default();
        let mut fresh = Config::from_toml(
            "[agent]\ntick = \"1s\"\n[sense]\nsnaplen = 96\nsample_rate = 100\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let changed = keep_restart_only(&mut fresh, &running);
        assert_eq!(changed, vec!["agent.tick", "sense.snaplen"]);
        assert_eq!(fresh.agent, running.agent);
        assert_eq!(fresh.sense.snaplen, running.sense.snaplen);
        assert_eq!(fresh.sense.sample_rate, 100, "live keys are not touched");
    }
}

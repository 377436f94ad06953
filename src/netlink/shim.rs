//! The iptables compatibility chain in the kernel: our ipsets over netlink, and the `FTAGENT`
//! chain and its jump from `INPUT` written with the host's own iptables tools (the only way
//! into the legacy x_tables; `-w` waits for the xtables lock). Bans are mirrored into the
//! ipsets in the same tick as into our nft sets. Only objects named in `ruleset::shim` are
//! ever created, changed or removed: no built-in chain is flushed, no other rule touched. The
//! chain's periodic check ([`ShimChain`]) is apart, for a thread that may wait for the lock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::ipset::{ElementOp, Ipset};
use super::NlError;
use crate::addr::Cidr;
use crate::config::Config;
use crate::ruleset::change::Change;
use crate::ruleset::shim::{self, Backend, HostIptables, CHAIN, HOOK_CHAIN};

/// Seconds an iptables command waits for the xtables lock.
const LOCK_WAIT: &str = "5";
/// Where the tools are looked for beside $PATH (a service's PATH may be short).
const SBIN: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0}")]
    Ipset(#[from] NlError),
    #[error("{command}: {message}")]
    Tool { command: String, message: String },
    #[error("{0}")]
    Unavailable(String),
}

/// The programs of one backend, v4 and (if the host has it) v6.
#[derive(Debug, Clone)]
struct Tools {
    backend: Backend,
    v4: PathBuf,
    v6: Option<PathBuf>,
    save4: Option<PathBuf>,
    save6: Option<PathBuf>,
}

impl Tools {
    /// The backend's programs: `iptables-legacy`/`iptables-nft`, or a plain `iptables` whose
    /// `-V` names that backend (AlmaLinux 9 has only the nft one, under both names).
    fn find(backend: Backend) -> Option<Tools> {
        let (suffix, word) = match backend {
            Backend::Legacy => ("legacy", "(legacy)"),
            Backend::Nft => ("nft", "(nf_tables)"),
        };
        let pick = |family: &str, tail: &str| {
            find_program(&format!("{family}-{suffix}{tail}")).or_else(|| {
                let plain = find_program(&format!("{family}{tail}"))?;
                let probe = find_program(family)?;
                let out = Command::new(&probe).arg("-V").output().ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains(word)
                    .then_some(plain)
            })
        };
        Some(Tools {
            backend,
            v4: pick("iptables", "")?,
            v6: pick("ip6tables", ""),
            save4: pick("iptables", "-save"),
            save6: pick("ip6tables", "-save"),
        })
    }

    fn families(&self) -> impl Iterator<Item = (bool, &Path)> {
        std::iter::once((false, self.v4.as_path())).chain(self.v6.as_deref().map(|p| (true, p)))
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs an iptables program with the lock wait; Ok(stdout) on exit status 0.
fn run(program: &Path, args: &[&str]) -> Result<String, ShimError> {
    let out = Command::new(program)
        .arg("-w")
        .arg(LOCK_WAIT)
        .args(args)
        .output()
        .map_err(|e| tool_error(program, args, &e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(tool_error(program, args, stderr.trim()))
    }
}

/// Runs a check (`-C`, `-S`): true on exit status 0.
fn check(program: &Path, args: &[&str]) -> Result<bool, ShimError> {
    Command::new(program)
        .arg("-w")
        .arg(LOCK_WAIT)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .map_err(|e| tool_error(program, args, &e.to_string()))
}

fn tool_error(program: &Path, args: &[&str], message: &str) -> ShimError {
    ShimError::Tool {
        command: format!("{} {}", program.display(), args.join(" ")),
        message: message.to_string(),
    }
}

/// Whether this namespace has legacy x_tables tables at all. Read from /proc, because running
/// any legacy tool would create them (and make iptables-nft warn about them from then on).
fn legacy_tables_exist() -> bool {
    ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"]
        .iter()
        .any(|p| std::fs::read_to_string(p).is_ok_and(|t| !t.trim().is_empty()))
}

/// The tools of a backend that holds tables already: never the legacy one when no legacy
/// table exists, since using it would create them.
fn tools_in_use(backend: Backend) -> Option<Tools> {
    if backend == Backend::Legacy && !legacy_tables_exist() {
        return None;
    }
    Tools::find(backend)
}

/// Which iptables tools the host has, and whether the legacy tables are in use.
pub(crate) fn host() -> HostIptables {
    let legacy = Tools::find(Backend::Legacy);
    let legacy_in_use = legacy.as_ref().is_some_and(|t| {
        legacy_tables_exist()
            && [&t.save4, &t.save6].into_iter().flatten().any(|save| {
                Command::new(save)
                    .output()
                    .map(|o| legacy_tables_in_use(&String::from_utf8_lossy(&o.stdout)))
                    .unwrap_or(false)
            })
    });
    HostIptables {
        legacy_tools: legacy.is_some(),
        nft_tools: Tools::find(Backend::Nft).is_some(),
        legacy_in_use,
    }
}

/// Whether `iptables-save` output shows rules or chains of anyone's (Fail2Ban's among them).
fn legacy_tables_in_use(save: &str) -> bool {
    const BUILT_IN: [&str; 5] = ["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];
    save.lines().any(|l| {
        l.starts_with("-A ")
            || l.strip_prefix(':')
                .and_then(|c| c.split_whitespace().next())
                .is_some_and(|c| !BUILT_IN.contains(&c))
    })
}

/// The chain, its jump and the ipsets, kept in step with our nft table.
pub(crate) struct Shim {
    tools: Tools,
    ipset: Ipset,
}

impl Shim {
    /// The shim the configuration asks for on this host, or None (`off`, or `auto` on a host
    /// without iptables). Touches nothing yet.
    pub(crate) fn open(config: &Config) -> Result<Option<Shim>, ShimError> {
        let Some(backend) =
            shim::choose(config.nft.iptables_shim, host()).map_err(ShimError::Unavailable)?
        else {
            return Ok(None);
        };
        let tools = Tools::find(backend)
            .ok_or_else(|| ShimError::Unavailable(format!("no {} found", backend.name())))?;
        Ok(Some(Shim {
            tools,
            ipset: Ipset::open()?,
        }))
    }

    pub(crate) fn backend(&self) -> Backend {
        self.tools.backend
    }

    /// Creates (or keeps) the ipsets, fills them with the safelist and with `bans` and their
    /// time left, then the chain and its jump; our chain left in the other backend by an
    /// earlier configuration is removed.
    pub(crate) fn install(
        &mut self,
        config: &Config,
        safelist: &[Cidr],
        bans: &[(Cidr, Duration)],
    ) -> Result<(), ShimError> {
        for spec in shim::ipsets(config) {
            self.ipset.ensure(&spec)?;
        }
        for (set, v6) in [(shim::SAFE4, false), (shim::SAFE6, true)] {
            let ops: Vec<ElementOp> = shim::safelist_entries(safelist, v6)
                .into_iter()
                .map(|cidr| ElementOp::Add {
                    cidr,
                    timeout_secs: None,
                })
                .collect();
            self.ipset.flush(set)?;
            self.ipset.apply(set, &ops)?;
        }
        for set in [shim::IP4, shim::IP6, shim::NET4, shim::NET6] {
            self.ipset.flush(set)?;
        }
        mirror_into(
            &mut self.ipset,
            bans.iter().map(|&(cidr, left)| Change::Ban {
                cidr,
                timeout: left,
            }),
        )?;
        for (v6, program) in self.tools.families() {
            ensure_chain(program, v6)?;
        }
        let other = match self.tools.backend {
            Backend::Legacy => Backend::Nft,
            Backend::Nft => Backend::Legacy,
        };
        if let Some(tools) = tools_in_use(other) {
            remove_chain(&tools)?;
        }
        Ok(())
    }

    /// The chain and its jump apart from the ipsets, for checks that may wait for the
    /// xtables lock (a thread of their own).
    pub(crate) fn chain(&self) -> ShimChain {
        ShimChain {
            tools: self.tools.clone(),
        }
    }

    /// Brings the safelist ipsets from `old` to `new`: the entries that differ deleted and
    /// added, the rest untouched (no flush, no moment without them).
    pub(crate) fn update_safelist(&mut self, old: &[Cidr], new: &[Cidr]) -> Result<(), ShimError> {
        for (set, v6) in [(shim::SAFE4, false), (shim::SAFE6, true)] {
            let before = shim::safelist_entries(old, v6);
            let after = shim::safelist_entries(new, v6);
            let gone = before.iter().filter(|c| !after.contains(c));
            let mut ops: Vec<ElementOp> = gone.map(|&cidr| ElementOp::Del { cidr }).collect();
            ops.extend(
                after
                    .iter()
                    .filter(|c| !before.contains(c))
                    .map(|&cidr| ElementOp::Add {
                        cidr,
                        timeout_secs: None,
                    }),
            );
            if !ops.is_empty() {
                self.ipset.apply(set, &ops)?;
            }
        }
        Ok(())
    }

    /// Mirrors the bans and unbans among `changes` into the ipsets (measures stay nft-only).
    pub(crate) fn mirror(&mut self, changes: &[Change]) -> Result<(), ShimError> {
        mirror_into(&mut self.ipset, changes.iter().copied())
    }
}

/// The `FTAGENT` chain and its jump from `INPUT`, checked and put back with the iptables tools:
/// each call runs processes that may wait up to 5 s for the xtables lock.
#[derive(Debug, Clone)]
pub(crate) struct ShimChain {
    tools: Tools,
}

impl ShimChain {
    /// Puts the chain, its rule or its jump back if another tool removed them (a firewall
    /// reload, `iptables -F`). True if something had to be put back.
    pub(crate) fn repair(&self) -> Result<bool, ShimError> {
        let mut repaired = false;
        for (v6, program) in self.tools.families() {
            if !chain_in_place(program, v6)? {
                ensure_chain(program, v6)?;
                repaired = true;
            }
        }
        Ok(repaired)
    }
}

/// Writes bans and unbans into the four element ipsets, one send per set.
fn mirror_into(ipset: &mut Ipset, changes: impl Iterator<Item = Change>) -> Result<(), ShimError> {
    let mut per_set: [(&str, Vec<ElementOp>); 4] = [
        (shim::IP4, Vec::new()),
        (shim::IP6, Vec::new()),
        (shim::NET4, Vec::new()),
        (shim::NET6, Vec::new()),
    ];
    for change in changes {
        let (cidr, op) = match change {
            Change::Ban { cidr, timeout } => (
                cidr,
                ElementOp::Add {
                    cidr,
                    timeout_secs: Some(shim::ban_timeout_secs(timeout)),
                },
            ),
            Change::Unban { cidr } => (cidr, ElementOp::Del { cidr }),
            _ => continue,
        };
        let set = shim::ban_set(&cidr);
        if let Some((_, ops)) = per_set.iter_mut().find(|(name, _)| *name == set) {
            ops.push(op);
        }
    }
    for (set, ops) in &per_set {
        if !ops.is_empty() {
            ipset.apply(set, ops)?;
        }
    }
    Ok(())
}

/// `ftagent ban`/`unban` with no daemon running: the bans go into our ipsets too, if a
/// daemon made them earlier (no ipsets: nothing to do).
pub fn mirror_without_daemon(changes: &[Change]) -> Result<(), ShimError> {
    let mut ipset = Ipset::open()?;
    match mirror_into(&mut ipset, changes.iter().copied()) {
        Err(ShimError::Ipset(e)) if e.errno() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Our chain with exactly its one rule, and one jump to it from INPUT.
fn ensure_chain(program: &Path, v6: bool) -> Result<(), ShimError> {
    let rule = shim::chain_rule(v6);
    if !check(program, &["-t", "filter", "-S", CHAIN])? {
        run(program, &["-t", "filter", "-N", CHAIN])?;
    }
    let listed = run(program, &["-t", "filter", "-S", CHAIN])?;
    if listed.lines().filter(|l| l.starts_with("-A ")).count() != 1
        || !check(program, &with(&["-t", "filter", "-C", CHAIN], &rule))?
    {
        run(program, &["-t", "filter", "-F", CHAIN])?;
        run(program, &with(&["-t", "filter", "-A", CHAIN], &rule))?;
    }
    let jumps = jump_count(program)?;
    if jumps == 0 {
        run(
            program,
            &["-t", "filter", "-I", HOOK_CHAIN, "1", "-j", CHAIN],
        )?;
    }
    for _ in 1..jumps {
        run(program, &["-t", "filter", "-D", HOOK_CHAIN, "-j", CHAIN])?;
    }
    Ok(())
}

fn chain_in_place(program: &Path, v6: bool) -> Result<bool, ShimError> {
    let rule = shim::chain_rule(v6);
    Ok(
        check(program, &with(&["-t", "filter", "-C", CHAIN], &rule))?
            && check(program, &["-t", "filter", "-C", HOOK_CHAIN, "-j", CHAIN])?,
    )
}

/// How many `-j FTAGENT` rules INPUT has.
fn jump_count(program: &Path) -> Result<usize, ShimError> {
    let listed = run(program, &["-t", "filter", "-S", HOOK_CHAIN])?;
    let ours = format!("-A {HOOK_CHAIN} -j {CHAIN}");
    Ok(listed.lines().filter(|l| l.trim_end() == ours).count())
}

fn with<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter().chain(tail).copied().collect()
}

/// Removes our jumps and chain from one backend; true if there was anything.
fn remove_chain(tools: &Tools) -> Result<bool, ShimError> {
    let mut removed = false;
    for (_, program) in tools.families() {
        while check(program, &["-t", "filter", "-C", HOOK_CHAIN, "-j", CHAIN])? {
            run(program, &["-t", "filter", "-D", HOOK_CHAIN, "-j", CHAIN])?;
            removed = true;
        }
        if check(program, &["-t", "filter", "-S", CHAIN])? {
            run(program, &["-t", "filter", "-F", CHAIN])?;
            run(program, &["-t", "filter", "-X", CHAIN])?;
            removed = true;
        }
    }
    if removed && tools.backend == Backend::Nft {
        drop_empty_filter_tables(tools);
    }
    Ok(removed)
}

/// iptables-nft creates `table ip filter` (and `ip6 filter`) on first use. When ours was the
/// only use — nothing left but the built-in chains, empty, policy ACCEPT — the table goes
/// with our chain, so that `rules flush` leaves the ruleset as it found it. A table with any
/// rule, chain or policy of anyone else's is left alone.
fn drop_empty_filter_tables(tools: &Tools) {
    let Some(nft) = find_program("nft") else {
        return;
    };
    for (family, save) in [("ip", &tools.save4), ("ip6", &tools.save6)] {
        let Some(save) = save else { continue };
        let Ok(out) = Command::new(save).args(["-t", "filter"]).output() else {
            continue;
        };
        if out.status.success() && filter_table_is_pristine(&String::from_utf8_lossy(&out.stdout)) {
            let _ = Command::new(&nft)
                .args(["delete", "table", family, "filter"])
                .output();
        }
    }
}

/// Whether `iptables-save -t filter` shows only the three built-in chains, empty, ACCEPT.
fn filter_table_is_pristine(save: &str) -> bool {
    let mut chains = 0;
    for line in save.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line == "*filter" || line == "COMMIT" {
            continue;
        }
        match line.strip_prefix(':').and_then(|c| c.split_once(' ')) {
            Some((chain, rest))
                if ["INPUT", "FORWARD", "OUTPUT"].contains(&chain)
                    && rest.starts_with("ACCEPT ") =>
            {
                chains += 1
            }
            _ => return false,
        }
    }
    chains == 3
}

/// `rules flush`: our chain and jumps in every backend, then our ipsets. What was removed, in
/// words (empty: there was nothing).
pub fn remove_everywhere() -> Result<Vec<String>, ShimError> {
    let mut removed = Vec::new();
    for backend in [Backend::Legacy, Backend::Nft] {
        if let Some(tools) = tools_in_use(backend) {
            if remove_chain(&tools)? {
                removed.push(format!("{} chain {CHAIN} and its jump", backend.name()));
            }
        }
    }
    let mut ipset = Ipset::open()?;
    let mut sets = 0;
    for name in shim::ALL_SETS {
        sets += usize::from(ipset.destroy(name)?);
    }
    if sets > 0 {
        removed.push(format!("{sets} ipsets ftagent-*"));
    }
    Ok(removed)
}

/// `rules dump`: our chain as `iptables-save` shows it in each backend that has it, and our
/// ipsets with their elements, as comment lines (the dump stays valid nft input).
pub fn render_installed() -> String {
    let mut out = String::new();
    for backend in [Backend::Legacy, Backend::Nft] {
        let Some(tools) = tools_in_use(backend) else {
            continue;
        };
        for save in [&tools.save4, &tools.save6].into_iter().flatten() {
            let Ok(o) = Command::new(save).args(["-t", "filter"]).output() else {
                continue;
            };
            let text = String::from_utf8_lossy(&o.stdout);
            let ours: Vec<&str> = text.lines().filter(|l| l.contains(CHAIN)).collect();
            if !ours.is_empty() {
                out.push_str(&format!("# {}:\n", save.display()));
                for line in ours {
                    out.push_str(&format!("#   {line}\n"));
                }
            }
        }
    }
    if let Some(ipset) = find_program("ipset") {
        for name in shim::ALL_SETS {
            let Ok(o) = Command::new(&ipset).args(["save", name]).output() else {
                continue;
            };
            if o.status.success() {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    out.push_str(&format!("#   ipset {line}\n"));
                }
            }
        }
    }
    if !out.is_empty() {
        out.insert_str(
            0,
            "\n# The iptables compatibility chain (nft.iptables_shim):\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_untouched_filter_table_counts_as_pristine() {
        let pristine = "# Generated by iptables-nft-save v1.8.9\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [3:180]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n# Completed\n";
        assert!(filter_table_is_pristine(pristine));
        assert!(!filter_table_is_pristine(""));
        assert!(!filter_table_is_pristine(
            &pristine.replace(":INPUT ACCEPT", ":INPUT DROP")
        ));
        assert!(!filter_table_is_pristine(
            &pristine.replace("COMMIT", ":f2b-sshd - [0:0]\nCOMMIT")
        ));
        assert!(!filter_table_is_pristine(
            &pristine.replace("COMMIT", "-A INPUT -j ACCEPT\nCOMMIT")
        ));
    }

    #[test]
    fn legacy_tables_count_as_used_with_any_rule_or_own_chain() {
        let empty = "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        assert!(!legacy_tables_in_use(empty));
        assert!(!legacy_tables_in_use(""));
        let f2b = empty.replace("COMMIT", ":f2b-sshd - [0:0]\nCOMMIT");
        assert!(legacy_tables_in_use(&f2b));
        let rule = empty.replace("COMMIT", "-A INPUT -s 192.0.2.1/32 -j DROP\nCOMMIT");
        assert!(legacy_tables_in_use(&rule));
    }
}

//! Renders a `TableState` as nft text that `nft -c -f` accepts: counters, sets and maps with
//! their elements and remaining timeouts, chains with their rules and counter values.

use std::fmt::Write as _;
use std::time::Duration;

use super::expr::render_rule;
use super::{ChainState, RuleState, SetState, TableState, TABLE};

pub(crate) fn table(state: &TableState) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table inet {TABLE} {{");
    if state.owner || state.persist {
        let flags: Vec<&str> = [(state.owner, "owner"), (state.persist, "persist")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        // The flag belongs to a running process and cannot be restored from a file.
        let _ = writeln!(
            out,
            "\t# flags {} (held by the running ftagent)",
            flags.join(", ")
        );
    }
    for c in &state.counters {
        let _ = writeln!(
            out,
            "\tcounter {} {{\n\t\tpackets {} bytes {}\n\t}}",
            c.name, c.packets, c.bytes
        );
    }
    for set in &state.sets {
        render_set(&mut out, set);
    }
    for chain in &state.chains {
        render_chain(&mut out, chain);
    }
    out.push_str("}\n");
    out
}

fn render_set(out: &mut String, set: &SetState) {
    let kind = if set.counter_map { "map" } else { "set" };
    let _ = writeln!(out, "\t{kind} {} {{", set.name);
    let Some(key) = set.key else {
        out.push_str("\t\t# key type not recognised\n\t}\n");
        return;
    };
    if set.counter_map {
        let _ = writeln!(out, "\t\ttype {} : counter", key.nft_name());
    } else {
        let _ = writeln!(out, "\t\ttype {}", key.nft_name());
    }
    let flags: Vec<&str> = [
        (set.dynamic, "dynamic"),
        (set.interval, "interval"),
        (set.timeout, "timeout"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    if let Some(t) = set.default_timeout {
        let _ = writeln!(out, "\t\ttimeout {}", nft_duration(t));
    }
    if let Some(size) = set.size {
        let _ = writeln!(out, "\t\tsize {size}");
    }
    if !set.elements.is_empty() {
        out.push_str("\t\telements = {");
        for (i, e) in set.elements.iter().enumerate() {
            out.push_str(if i == 0 { " " } else { ",\n\t\t\t     " });
            out.push_str(&e.key.render(key));
            if let Some(t) = e.timeout {
                let _ = write!(out, " timeout {}", nft_duration(t));
            }
            if let Some(x) = e.expires {
                let _ = write!(out, " expires {}", nft_duration(x));
            }
            if let Some(c) = &e.counter {
                let _ = write!(out, " : \"{c}\"");
            }
        }
        out.push_str(" }\n");
    }
    out.push_str("\t}\n");
}

fn render_chain(out: &mut String, chain: &ChainState) {
    let _ = writeln!(out, "\tchain {} {{", chain.name);
    if let Some(h) = &chain.hook {
        let policy = if h.policy_accept { "accept" } else { "drop" };
        let _ = writeln!(
            out,
            "\t\ttype {} hook {} priority {}; policy {};",
            h.kind, h.hook, h.priority, policy
        );
    }
    for rule in &chain.rules {
        let text = match rule {
            RuleState::Known(exprs) => render_rule(exprs),
            RuleState::Unknown(_) => None,
        };
        match (text, rule) {
            (Some(text), _) => {
                let _ = writeln!(out, "\t\t{text}");
            }
            (None, RuleState::Unknown(what)) => {
                let _ = writeln!(out, "\t\t# rule not written by ftagent: {what}");
            }
            (None, RuleState::Known(exprs)) => {
                let _ = writeln!(out, "\t\t# rule not written by ftagent: {exprs:?}");
            }
        }
    }
    out.push_str("\t}\n");
}

/// A duration in nft's syntax: `1d2h3m4s500ms`; zero is `0s`.
pub(crate) fn nft_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= len {
            let _ = write!(out, "{}{unit}", ms / len);
            ms %= len;
        }
    }
    if ms > 0 {
        let _ = write!(out, "{ms}ms");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_nft_syntax() {
        assert_eq!(nft_duration(Duration::from_millis(0)), "0s");
        assert_eq!(nft_duration(Duration::from_millis(2_500)), "2s500ms");
        assert_eq!(nft_duration(Duration::from_secs(90_061)), "1d1h1m1s");
    }
}

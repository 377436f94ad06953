//! What a reload changes in our table without replacing it: named counters and counter-map
//! elements (service and reflector ports come and go), and the safelist's intervals. Anything
//! else — a rule (a rate, the sampling), a set's type or size — needs the table replaced.

use super::{ElementKey, Key, SetRole, SetSpec, TableSpec};
use crate::addr::{merge_intervals, Cidr};

/// The element-level changes from one table (and safelist) to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableDiff {
    pub(crate) add_counters: Vec<String>,
    pub(crate) remove_counters: Vec<String>,
    /// Counter-map elements: the map (and whether its keys are intervals), the key, the
    /// counter it maps to.
    pub(crate) add_elements: Vec<(String, bool, Key, String)>,
    pub(crate) remove_elements: Vec<(String, bool, Key)>,
    /// Safelist intervals, in `allow4`/`allow6`.
    pub(crate) allow_add: Vec<(SetRole, Key)>,
    pub(crate) allow_remove: Vec<(SetRole, Key)>,
}

impl TableDiff {
    pub(crate) fn is_empty(&self) -> bool {
        *self == TableDiff::default()
    }

    /// One line for the log: what changes.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} counters added, {} removed; {} map elements added, {} removed; {} safelist intervals added, {} removed",
            self.add_counters.len(),
            self.remove_counters.len(),
            self.add_elements.len(),
            self.remove_elements.len(),
            self.allow_add.len(),
            self.allow_remove.len()
        )
    }
}

/// The safelist as the intervals of `allow4`/`allow6` (neighbours and overlaps merged).
pub(crate) fn allow_elements(safelist: &[Cidr]) -> Vec<(SetRole, Key)> {
    use super::Family;
    let (v4, v6) = merge_intervals(safelist);
    let key = |start, end| Key::Addr(ElementKey::from_interval(start, end));
    v4.into_iter()
        .map(|(s, e)| (SetRole::Allow(Family::V4), key(s.into(), e.map(Into::into))))
        .chain(
            v6.into_iter()
                .map(|(s, e)| (SetRole::Allow(Family::V6), key(s.into(), e.map(Into::into)))),
        )
        .collect()
}

/// The changes that turn `old` (with `old_safelist`) into `new` (with `new_safelist`), or None
/// when rules or set declarations differ and only a replacement will do.
pub(crate) fn diff(
    old: &TableSpec,
    new: &TableSpec,
    old_safelist: &[Cidr],
    new_safelist: &[Cidr],
) -> Option<TableDiff> {
    if old.chains != new.chains || old.sets.len() != new.sets.len() {
        return None;
    }
    let declaration = |s: &SetSpec| SetSpec {
        elements: Vec::new(),
        ..s.clone()
    };
    let mut d = TableDiff::default();
    for (o, n) in old.sets.iter().zip(&new.sets) {
        if declaration(o) != declaration(n) {
            return None;
        }
        for (key, counter) in &o.elements {
            if !n.elements.contains(&(*key, counter.clone())) {
                d.remove_elements.push((o.name.clone(), o.interval, *key));
            }
        }
        for (key, counter) in &n.elements {
            if !o.elements.contains(&(*key, counter.clone())) {
                d.add_elements
                    .push((n.name.clone(), n.interval, *key, counter.clone()));
            }
        }
    }
    d.add_counters = missing_from(&new.counters, &old.counters);
    d.remove_counters = missing_from(&old.counters, &new.counters);
    let allow = allow_diff(old_safelist, new_safelist);
    d.allow_add = allow.allow_add;
    d.allow_remove = allow.allow_remove;
    Some(d)
}

/// The changes to `allow4`/`allow6` that turn `old_safelist` into `new_safelist`, alone.
pub(crate) fn allow_diff(old_safelist: &[Cidr], new_safelist: &[Cidr]) -> TableDiff {
    let (old_allow, new_allow) = (allow_elements(old_safelist), allow_elements(new_safelist));
    TableDiff {
        allow_add: missing_from(&new_allow, &old_allow),
        allow_remove: missing_from(&old_allow, &new_allow),
        ..TableDiff::default()
    }
}

/// The items of `these` that are not in `those`.
fn missing_from<T: Clone + PartialEq>(these: &[T], those: &[T]) -> Vec<T> {
    these
        .iter()
        .filter(|x| !those.contains(x))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ruleset::{desired, Family};

    fn config(text: &str) -> Config {
        Config::from_toml(text, std::path::Path::new("test.toml")).unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn nothing_changed_is_empty() {
        let spec = desired(&Config::default());
        let safe = cidrs(&["10.0.0.0/8"]);
        assert!(diff(&spec, &spec, &safe, &safe).unwrap().is_empty());
    }

    #[test]
    fn safelist_changes_are_intervals() {
        let spec = desired(&Config::default());
        let d = diff(
            &spec,
            &spec,
            &cidrs(&["10.250.9.0/24", "fd00:250::99"]),
            &cidrs(&["10.250.8.0/24", "10.250.9.0/24", "fd00:250::98"]),
        )
        .unwrap();
        // 10.250.8.0/24 and 10.250.9.0/24 merge into one interval replacing the old one.
        let v4 = SetRole::Allow(Family::V4);
        let v6 = SetRole::Allow(Family::V6);
        let key = |c: &str| Key::Addr(ElementKey::Cidr(c.parse().unwrap()));
        assert_eq!(
            d.allow_remove,
            vec![(v4, key("10.250.9.0/24")), (v6, key("fd00:250::99"))]
        );
        assert_eq!(
            d.allow_add,
            vec![(v4, key("10.250.8.0/23")), (v6, key("fd00:250::98"))]
        );
        assert!(d.add_counters.is_empty() && d.add_elements.is_empty());
    }

    #[test]
    fn a_new_service_adds_its_counters_and_map_elements() {
        let old = desired(&Config::default());
        let new = desired(&config(
            "[[service]]\nport = 22\n[[service]]\nport = 80\n[[service]]\nport = \"8000-8100\"\n",
        ));
        let d = diff(&old, &new, &[], &[]).unwrap();
        assert_eq!(d.add_counters, vec!["tcp_8000-8100", "new_tcp_8000-8100"]);
        assert_eq!(d.remove_counters, vec!["tcp_443", "new_tcp_443"]);
        assert_eq!(
            d.add_elements,
            vec![
                (
                    "svc_tcp".to_string(),
                    true,
                    Key::Ports(8000, 8100),
                    "tcp_8000-8100".to_string()
                ),
                (
                    "new_tcp".to_string(),
                    true,
                    Key::Ports(8000, 8100),
                    "new_tcp_8000-8100".to_string()
                ),
            ]
        );
        assert_eq!(
            d.remove_elements,
            vec![
                ("svc_tcp".to_string(), true, Key::Ports(443, 443)),
                ("new_tcp".to_string(), true, Key::Ports(443, 443)),
            ]
        );
    }

    #[test]
    fn changed_rules_or_sizes_need_a_replacement() {
        let old = desired(&Config::default());
        for text in [
            "[mitigation]\nport_limit_pps = 123\n",
            "[sense]\nsample_rate = 100\n",
            "[nft]\nban4_size = 1024\n",
            "[detection]\nmax_connections_per_source = 7\n",
            "[detection]\nfloor_pps = 7\n",
            "[detection]\ninstant_factor = 0\n",
        ] {
            assert_eq!(
                diff(&old, &desired(&config(text)), &[], &[]),
                None,
                "{text}"
            );
        }
        // Detection thresholds are not in the table at all (the floor is, in the tripwire).
        let d = diff(&old, &desired(&config("[detection]\nk = 7\n")), &[], &[]);
        assert!(d.unwrap().is_empty());
    }
}

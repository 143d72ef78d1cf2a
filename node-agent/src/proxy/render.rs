//! Rulesets as `nft -f` transactions. `nft` applies a whole file as one
//! netlink batch, so each script here is one atomic transaction: packets
//! see the old table or the new one, never a half-written state.
//!
//! Scripts use flat commands (`add chain`, `add rule`, `add element`)
//! ordered so that everything a rule or element refers to exists before it
//! and nothing is deleted while still referred to.

use std::fmt::Write;

use super::{Ruleset, SetKind, TABLE, Touched};

/// The comment on the table, for people reading `nft list ruleset`.
const COMMENT: &str = "knit service proxy: rewritten by the node agent";

/// A transaction that replaces whatever `ip knit` holds (or nothing) by
/// `rs`. Adding the table first makes the delete valid when it is absent.
pub fn full(rs: &Ruleset) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "add table {TABLE}");
    let _ = writeln!(out, "delete table {TABLE}");
    let _ = writeln!(out, "add table {TABLE} {{ comment \"{COMMENT}\"; }}");
    for (name, set) in &rs.sets {
        let _ = writeln!(
            out,
            "add {} {TABLE} {name} {{ {} }}",
            kind(set.kind),
            set.spec
        );
    }
    for (name, chain) in &rs.chains {
        declare_chain(&mut out, name, chain.base.as_deref());
    }
    for (name, chain) in &rs.chains {
        for rule in &chain.rules {
            let _ = writeln!(out, "add rule {TABLE} {name} {rule}");
        }
    }
    // One command per set (in chunks, to keep lines reasonable): nft
    // parses a long element list far faster than as many commands.
    for (name, set) in &rs.sets {
        let elements: Vec<String> = set
            .elements
            .iter()
            .map(|(key, value)| element(set.kind, key, value))
            .collect();
        for chunk in elements.chunks(1000) {
            let _ = writeln!(out, "add element {TABLE} {name} {{ {} }}", chunk.join(", "));
        }
    }
    out
}

/// A transaction that turns the applied `old` table into `new` by
/// touching only what differs: new sets and chains are added, changed
/// chains flushed and refilled, map elements deleted or added one by one,
/// chains and sets that are gone deleted last. `None` when the difference
/// cannot be expressed that way (a base chain or a set's type changed);
/// the caller then syncs fully. An empty string means nothing changed.
/// Walks both tables; [`partial_touched`] looks only at what a planner
/// says it touched.
pub fn partial(old: &Ruleset, new: &Ruleset) -> Option<String> {
    partial_touched(old, new, &Touched::between(old, new))
}

/// [`partial`] restricted to the names in `touched` (everything else is
/// taken to be equal in `old` and `new`), so its cost follows the size of
/// the change, not of the table.
pub fn partial_touched(old: &Ruleset, new: &Ruleset, touched: &Touched) -> Option<String> {
    for name in &touched.chains {
        let (before, after) = (old.chains.get(name), new.chains.get(name));
        let base = |c: Option<&super::Chain>| c.and_then(|c| c.base.clone());
        if (base(before).is_some() || base(after).is_some()) && base(before) != base(after) {
            return None;
        }
    }
    for name in &touched.sets {
        if let (Some(before), Some(after)) = (old.sets.get(name), new.sets.get(name))
            && (before.spec != after.spec || before.kind != after.kind)
        {
            return None;
        }
    }

    let mut out = String::new();
    // 1. New sets and chains, so that rules and elements can name them.
    for name in &touched.sets {
        if let (None, Some(set)) = (old.sets.get(name), new.sets.get(name)) {
            let _ = writeln!(
                out,
                "add {} {TABLE} {name} {{ {} }}",
                kind(set.kind),
                set.spec
            );
        }
    }
    for name in &touched.chains {
        if let (None, Some(chain)) = (old.chains.get(name), new.chains.get(name)) {
            declare_chain(&mut out, name, chain.base.as_deref());
        }
    }
    // 2. Elements that went away or now point elsewhere (in sets that
    //    stay: a set that goes takes its elements with it).
    for (set, key) in &touched.elements {
        let Some(before) = old.sets.get(set).filter(|s| !s.dynamic) else {
            continue;
        };
        let Some(value) = before.elements.get(key) else {
            continue;
        };
        let after = new.sets.get(set);
        let keep = after.and_then(|s| s.elements.get(key)) == Some(value);
        if !keep && after.is_some() {
            let _ = writeln!(out, "delete element {TABLE} {set} {{ {key} }}");
        }
    }
    // 3. Changed chains refilled; chains about to go emptied, which drops
    //    their references to other doomed chains and sets.
    for name in &touched.chains {
        match (old.chains.get(name), new.chains.get(name)) {
            (Some(before), Some(chain)) if before.rules == chain.rules => {}
            (Some(_), Some(chain)) => {
                let _ = writeln!(out, "flush chain {TABLE} {name}");
                for rule in &chain.rules {
                    let _ = writeln!(out, "add rule {TABLE} {name} {rule}");
                }
            }
            (None, Some(chain)) => {
                for rule in &chain.rules {
                    let _ = writeln!(out, "add rule {TABLE} {name} {rule}");
                }
            }
            (Some(_), None) => {
                let _ = writeln!(out, "flush chain {TABLE} {name}");
            }
            (None, None) => {}
        }
    }
    // 4. New elements, now that their chains exist.
    for (set, key) in &touched.elements {
        let Some(after) = new.sets.get(set).filter(|s| !s.dynamic) else {
            continue;
        };
        let Some(value) = after.elements.get(key) else {
            continue;
        };
        if old.sets.get(set).and_then(|s| s.elements.get(key)) != Some(value) {
            add_element(&mut out, set, after.kind, key, value);
        }
    }
    // 5. What nothing refers to any more.
    for name in &touched.chains {
        if old.chains.contains_key(name) && !new.chains.contains_key(name) {
            let _ = writeln!(out, "delete chain {TABLE} {name}");
        }
    }
    for name in &touched.sets {
        if let (Some(before), None) = (old.sets.get(name), new.sets.get(name)) {
            let _ = writeln!(out, "delete {} {TABLE} {name}", kind(before.kind));
        }
    }
    Some(out)
}

fn kind(kind: SetKind) -> &'static str {
    match kind {
        SetKind::Set => "set",
        SetKind::Map => "map",
    }
}

fn declare_chain(out: &mut String, name: &str, base: Option<&str>) {
    match base {
        Some(spec) => {
            let _ = writeln!(out, "add chain {TABLE} {name} {{ {spec} }}");
        }
        None => {
            let _ = writeln!(out, "add chain {TABLE} {name}");
        }
    }
}

fn add_element(out: &mut String, set: &str, kind: SetKind, key: &str, value: &str) {
    let _ = writeln!(
        out,
        "add element {TABLE} {set} {{ {} }}",
        element(kind, key, value)
    );
}

fn element(kind: SetKind, key: &str, value: &str) -> String {
    match kind {
        SetKind::Set => key.to_string(),
        SetKind::Map => format!("{key} : {value}"),
    }
}

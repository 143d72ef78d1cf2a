//! Rulesets as `nft -f` transactions. `nft` applies a whole file as one
//! netlink batch, so each script here is one atomic transaction: packets
//! see the old table or the new one, never a half-written state.
//!
//! Scripts use flat commands (`add chain`, `add rule`, `add element`)
//! ordered so that everything a rule or element refers to exists before it
//! and nothing is deleted while still referred to.

use std::fmt::Write;

use super::{Ruleset, SetKind, TABLE};

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
pub fn partial(old: &Ruleset, new: &Ruleset) -> Option<String> {
    for (name, chain) in &new.chains {
        if let Some(before) = old.chains.get(name)
            && (before.base.is_some() || chain.base.is_some())
            && before.base != chain.base
        {
            return None;
        }
    }
    for (name, set) in &new.sets {
        if let Some(before) = old.sets.get(name)
            && (before.spec != set.spec || before.kind != set.kind)
        {
            return None;
        }
    }
    if old
        .chains
        .iter()
        .any(|(n, c)| c.base.is_some() && !new.chains.contains_key(n))
    {
        return None;
    }

    let mut out = String::new();
    // 1. New sets and chains, so that rules and elements can name them.
    for (name, set) in &new.sets {
        if !old.sets.contains_key(name) {
            let _ = writeln!(
                out,
                "add {} {TABLE} {name} {{ {} }}",
                kind(set.kind),
                set.spec
            );
        }
    }
    for (name, chain) in &new.chains {
        if !old.chains.contains_key(name) {
            declare_chain(&mut out, name, chain.base.as_deref());
        }
    }
    // 2. Elements that went away or now point elsewhere.
    for (name, before) in &old.sets {
        if before.dynamic {
            continue;
        }
        let after = new.sets.get(name);
        for (key, value) in &before.elements {
            let keep = after.and_then(|s| s.elements.get(key)) == Some(value);
            if !keep && after.is_some() {
                let _ = writeln!(out, "delete element {TABLE} {name} {{ {key} }}");
            }
        }
    }
    // 3. Changed chains refilled; chains about to go emptied, which drops
    //    their references to other doomed chains and sets.
    for (name, chain) in &new.chains {
        match old.chains.get(name) {
            Some(before) if before.rules == chain.rules => {}
            Some(_) => {
                let _ = writeln!(out, "flush chain {TABLE} {name}");
                for rule in &chain.rules {
                    let _ = writeln!(out, "add rule {TABLE} {name} {rule}");
                }
            }
            None => {
                for rule in &chain.rules {
                    let _ = writeln!(out, "add rule {TABLE} {name} {rule}");
                }
            }
        }
    }
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            let _ = writeln!(out, "flush chain {TABLE} {name}");
        }
    }
    // 4. New elements, now that their chains exist.
    for (name, set) in &new.sets {
        if set.dynamic {
            continue;
        }
        let before = old.sets.get(name);
        for (key, value) in &set.elements {
            if before.and_then(|s| s.elements.get(key)) != Some(value) {
                add_element(&mut out, name, set.kind, key, value);
            }
        }
    }
    // 5. What nothing refers to any more.
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            let _ = writeln!(out, "delete chain {TABLE} {name}");
        }
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            let _ = writeln!(out, "delete {} {TABLE} {name}", kind(old.sets[name].kind));
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

//! Rulesets as transactions. A [`Transaction`] is either one `nft -f`
//! script (`nft` applies a whole file as one netlink batch, so packets
//! see the old table or the new one, never a half-written state) or a
//! batch of map and set elements written over netlink (`nfnl`), with the
//! `nft` scripts around it that only add what the elements will point to
//! and only delete what nothing points to any more.
//!
//! Scripts use flat commands (`add chain`, `add rule`, `add element`)
//! ordered so that everything a rule or element refers to exists before it
//! and nothing is deleted while still referred to.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::nfnl::{Codec, Outline, SetWrites};
use super::{Ruleset, SetKind, TABLE, Touched};

/// The comment on the table, for people reading `nft list ruleset`.
const COMMENT: &str = "knit service proxy: rewritten by the node agent";

/// How one sync reaches the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transaction<'a> {
    /// One `nft -f` script, one kernel transaction.
    Script(String),
    /// Element writes in one netlink batch (one kernel transaction):
    /// `prepare` first adds the sets and chains they will refer to
    /// (invisible to packets until an element points at them), `cleanup`
    /// last deletes what no element refers to any more. Either may be
    /// empty.
    Elements {
        /// `nft` script run before the batch.
        prepare: String,
        /// The batch, set by set, borrowed from the plans it came from.
        writes: Vec<SetWrites<'a>>,
        /// How each written set's elements are encoded.
        codecs: HashMap<String, Codec>,
        /// `nft` script run after the batch.
        cleanup: String,
    },
}

impl Transaction<'_> {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        match self {
            Transaction::Script(script) => script.is_empty(),
            Transaction::Elements {
                prepare,
                writes,
                cleanup,
                ..
            } => prepare.is_empty() && writes.is_empty() && cleanup.is_empty(),
        }
    }

    /// The same change as `nft` commands (what a reader or a test wants
    /// to see; a batch is written as its equivalent element commands).
    pub fn to_script(&self) -> String {
        match self {
            Transaction::Script(script) => script.clone(),
            Transaction::Elements {
                prepare,
                writes,
                cleanup,
                ..
            } => format!("{prepare}{}{cleanup}", element_commands(writes)),
        }
    }
}

/// `writes` as `nft` element commands, in the batch's order.
pub fn element_commands(writes: &[SetWrites<'_>]) -> String {
    let mut out = String::new();
    for w in writes.iter().filter(|w| w.flush) {
        let _ = writeln!(out, "flush set {TABLE} {}", w.set);
    }
    delete_commands(writes, &mut out);
    add_commands(writes, &mut out);
    out
}

fn delete_commands(writes: &[SetWrites<'_>], out: &mut String) {
    for w in writes {
        for key in &w.deletes {
            let _ = writeln!(out, "delete element {TABLE} {} {{ {key} }}", w.set);
        }
    }
}

fn add_commands(writes: &[SetWrites<'_>], out: &mut String) {
    for w in writes {
        for (key, value) in &w.adds {
            let kind = if value.is_empty() {
                SetKind::Set
            } else {
                SetKind::Map
            };
            add_element(out, w.set, kind, key, value);
        }
    }
}

/// The codec of every set of `rs` whose elements can go over netlink;
/// `None` if one with planned elements cannot.
fn codecs_of<'n>(
    rs: &Ruleset,
    names: impl Iterator<Item = &'n str>,
) -> Option<HashMap<String, Codec>> {
    let mut out = HashMap::new();
    for name in names {
        let Some(set) = rs.sets.get(name) else {
            continue;
        };
        out.insert(name.to_string(), Codec::for_set(set.kind, &set.spec)?);
    }
    Some(out)
}

/// A full sync of `rs`, given what the namespace's table looks like now
/// (`None`: there is none):
///
/// - no table: nothing can be broken by building it in two steps, so
///   `nft` declares it and the elements (nearly all of a large table) go
///   over netlink, several times faster than `nft` parses them;
/// - a table with this plan's structure (its comment carries a hash of
///   the sets, chains and rules, and the kernel's chains, rule counts and
///   sets agree): one netlink batch empties every map and set and fills
///   them again, atomically (an agent restart, a relist after a failure);
/// - anything else: one `nft` script replaces the table atomically.
pub fn full_transaction<'a>(rs: &'a Ruleset, existing: Option<&Outline>) -> Transaction<'a> {
    let statics = rs.sets.iter().filter(|(_, s)| !s.dynamic);
    let Some(codecs) = codecs_of(rs, statics.map(|(name, _)| name.as_str())) else {
        return Transaction::Script(full(rs));
    };
    let prepare = match existing {
        None => {
            let mut prepare = String::new();
            structure(rs, &mut prepare);
            prepare
        }
        Some(outline) if same_structure(rs, outline) => String::new(),
        Some(_) => return Transaction::Script(full(rs)),
    };
    // A table just declared has nothing to empty.
    let fresh = !prepare.is_empty();
    let writes = rs
        .sets
        .iter()
        .filter(|(name, _)| codecs.contains_key(*name))
        .map(|(name, set)| SetWrites {
            set: name,
            flush: !fresh,
            adds: set
                .elements
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            ..SetWrites::default()
        })
        .filter(|w| w.flush || !w.adds.is_empty())
        .collect();
    Transaction::Elements {
        prepare,
        writes,
        codecs,
        cleanup: String::new(),
    }
}

/// Whether the kernel's table was built from `rs`'s sets, chains and
/// rules (elements aside).
fn same_structure(rs: &Ruleset, outline: &Outline) -> bool {
    outline.comment == comment(rs) && outline.shape == rs.shape()
}

/// The table's comment: who writes it, and a hash of the sets, chains
/// and rules it was built with, so that a later full sync can tell
/// whether only its elements need rewriting.
pub fn comment(rs: &Ruleset) -> String {
    let mut body = String::new();
    declarations(rs, &mut body);
    format!("{COMMENT} (structure {:016x})", fnv1a(body.as_bytes()))
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's
/// hasher, so a restarted (or upgraded) agent computes the same value.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A transaction that replaces whatever `ip knit` holds (or nothing) by
/// `rs`. Adding the table first makes the delete valid when it is absent.
pub fn full(rs: &Ruleset) -> String {
    let elements: usize = rs.sets.values().map(|s| s.elements.len()).sum();
    let mut out = String::with_capacity(4096 + elements * 48);
    structure(rs, &mut out);
    // One command per set (in chunks, to keep lines reasonable): nft
    // parses a long element list far faster than as many commands.
    // Written straight into the script: at 10,000 services a string per
    // element is 100,000 allocations for nothing.
    for (name, set) in &rs.sets {
        let mut in_chunk = 0;
        for (key, value) in &set.elements {
            if in_chunk == 0 {
                let _ = write!(out, "add element {TABLE} {name} {{ ");
            } else {
                out.push_str(", ");
            }
            out.push_str(key);
            if set.kind == SetKind::Map {
                out.push_str(" : ");
                out.push_str(value);
            }
            in_chunk += 1;
            if in_chunk == 1000 {
                out.push_str(" }\n");
                in_chunk = 0;
            }
        }
        if in_chunk > 0 {
            out.push_str(" }\n");
        }
    }
    out
}

/// The table (deleted first if present), its sets, chains and rules:
/// everything but the elements.
fn structure(rs: &Ruleset, out: &mut String) {
    let _ = writeln!(out, "add table {TABLE}");
    let _ = writeln!(out, "delete table {TABLE}");
    let _ = writeln!(out, "add table {TABLE} {{ comment \"{}\"; }}", comment(rs));
    declarations(rs, out);
}

/// The sets, chains and rules of `rs`, as commands.
fn declarations(rs: &Ruleset, out: &mut String) {
    for (name, set) in &rs.sets {
        let _ = writeln!(
            out,
            "add {} {TABLE} {name} {{ {} }}",
            kind(set.kind),
            set.spec
        );
    }
    for (name, chain) in &rs.chains {
        declare_chain(out, name, chain.base.as_deref());
    }
    for (name, chain) in &rs.chains {
        for rule in &chain.rules {
            let _ = writeln!(out, "add rule {TABLE} {name} {rule}");
        }
    }
}

/// A transaction that turns the applied `old` table into `new` by
/// touching only what differs: new sets and chains are added, changed
/// chains flushed and refilled, map elements deleted or added one by one,
/// chains and sets that are gone deleted last. `None` when the difference
/// cannot be expressed that way (a base chain or a set's type changed);
/// the caller then syncs fully. An empty transaction means nothing
/// changed. Walks both tables; [`partial_touched`] looks only at what a
/// planner says it touched.
pub fn partial<'a>(old: &'a Ruleset, new: &'a Ruleset) -> Option<Transaction<'a>> {
    partial_touched(old, new, &Touched::between(old, new))
}

/// [`partial`] restricted to the names in `touched` (everything else is
/// taken to be equal in `old` and `new`), so its cost follows the size of
/// the change, not of the table.
///
/// When no existing chain changes its rules (the common case: endpoints
/// come and go, services are added and removed) the elements go over
/// netlink; a new chain is declared before them and a chain nothing
/// points to any more deleted after them. Otherwise the whole change is
/// one `nft` script, so that rules and elements change together.
pub fn partial_touched<'a>(
    old: &'a Ruleset,
    new: &'a Ruleset,
    touched: &Touched,
) -> Option<Transaction<'a>> {
    if touched.elements_all {
        return None;
    }
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

    // New sets and chains, so that rules and elements can name them.
    let mut declare = String::new();
    for name in &touched.sets {
        if let (None, Some(set)) = (old.sets.get(name), new.sets.get(name)) {
            let _ = writeln!(
                declare,
                "add {} {TABLE} {name} {{ {} }}",
                kind(set.kind),
                set.spec
            );
        }
    }
    for name in &touched.chains {
        if let (None, Some(chain)) = (old.chains.get(name), new.chains.get(name)) {
            declare_chain(&mut declare, name, chain.base.as_deref());
        }
    }
    // Elements that went away or now point elsewhere (in sets that stay:
    // a set that goes takes its elements with it), and elements new or
    // changed.
    let mut writes: BTreeMap<&str, SetWrites<'a>> = BTreeMap::new();
    for (set, key) in &touched.elements {
        // The names and values borrowed from the tables, which outlive
        // the transaction (the touched record need not).
        let Some((set, after)) = new.sets.get_key_value(set) else {
            continue;
        };
        let before = old.sets.get(set).filter(|s| !s.dynamic);
        let was = before.and_then(|s| s.elements.get_key_value(key));
        let is = Some(after)
            .filter(|s| !s.dynamic)
            .and_then(|s| s.elements.get_key_value(key));
        if was.map(|(_, v)| v) == is.map(|(_, v)| v) {
            continue;
        }
        let entry = writes.entry(set).or_insert_with(|| SetWrites {
            set,
            ..SetWrites::default()
        });
        if let Some((key, _)) = was {
            entry.deletes.push(key);
        }
        if let Some((key, value)) = is {
            entry.adds.push((key, value));
        }
    }
    let writes: Vec<SetWrites<'a>> = writes.into_values().collect();
    // Rules of new chains, changed chains refilled, chains about to go
    // emptied (which drops their references to other doomed chains and
    // sets).
    let (mut fill, mut refill, mut empty) = (String::new(), String::new(), String::new());
    for name in &touched.chains {
        match (old.chains.get(name), new.chains.get(name)) {
            (Some(before), Some(chain)) if before.rules == chain.rules => {}
            (Some(_), Some(chain)) => {
                let _ = writeln!(refill, "flush chain {TABLE} {name}");
                for rule in &chain.rules {
                    let _ = writeln!(refill, "add rule {TABLE} {name} {rule}");
                }
            }
            (None, Some(chain)) => {
                for rule in &chain.rules {
                    let _ = writeln!(fill, "add rule {TABLE} {name} {rule}");
                }
            }
            (Some(_), None) => {
                let _ = writeln!(empty, "flush chain {TABLE} {name}");
            }
            (None, None) => {}
        }
    }
    // What nothing refers to any more.
    let mut delete = String::new();
    for name in &touched.chains {
        if old.chains.contains_key(name) && !new.chains.contains_key(name) {
            let _ = writeln!(delete, "delete chain {TABLE} {name}");
        }
    }
    for name in &touched.sets {
        if let (Some(before), None) = (old.sets.get(name), new.sets.get(name)) {
            let _ = writeln!(delete, "delete {} {TABLE} {name}", kind(before.kind));
        }
    }

    let codecs = codecs_of(new, writes.iter().map(|w| w.set));
    Some(match codecs {
        Some(codecs) if refill.is_empty() => Transaction::Elements {
            prepare: declare + &fill,
            writes,
            codecs,
            cleanup: empty + &delete,
        },
        _ => {
            // One script: declarations, deletes, rules, adds, removals.
            let mut script = declare;
            delete_commands(&writes, &mut script);
            script.push_str(&refill);
            script.push_str(&fill);
            script.push_str(&empty);
            add_commands(&writes, &mut script);
            script.push_str(&delete);
            Transaction::Script(script)
        }
    })
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

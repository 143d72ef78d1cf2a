//! The imperative shell of the proxy: keeps the ruleset last applied,
//! turns the next one into a single transaction (full or partial), checks
//! the kernel's table for drift, and clears stale UDP conntrack entries.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::nfnl::Codec;
use super::render::Transaction;
use super::{Firewall, Planner, Result, Ruleset, Touched, UdpPort, render};

/// How a sync reached the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// The whole table was written: declared by `nft` and filled over
    /// netlink when there was none, its maps emptied and refilled in one
    /// batch when it had the planned structure, replaced by one `nft`
    /// transaction otherwise.
    Full,
    /// Only the differing chains, sets and elements were written.
    Partial,
    /// Nothing differed; `nft` was not run.
    Unchanged,
}

/// What one [`Proxier::sync`] did.
#[derive(Clone, Debug)]
pub struct SyncReport {
    /// Full, partial or nothing.
    pub kind: SyncKind,
    /// Size of the `nft` scripts run, in bytes.
    pub script_bytes: usize,
    /// Elements written or deleted over netlink.
    pub elements: usize,
    /// Time spent, conntrack included.
    pub elapsed: Duration,
    /// The `conntrack` argument lists run for UDP endpoints that left.
    pub conntrack: Vec<Vec<String>>,
    /// Failures of those runs: logged by the caller, never fatal, since
    /// the rules themselves are in place.
    pub conntrack_errors: Vec<String>,
}

/// kube-proxy's "proxier" for `ip knit`: one instance per node.
#[derive(Debug)]
pub struct Proxier<F> {
    fw: F,
    /// The ruleset last asked for.
    last: Option<Ruleset>,
    /// Whether the kernel holds `last` exactly; if not, the next sync is
    /// a full one.
    in_sync: bool,
    /// The UDP ports as last applied (kept across failures: conntrack
    /// outlives our mistakes).
    udp: Option<BTreeMap<String, UdpPort>>,
    /// The namespace's nftables generation right after our last
    /// transaction (or the last reading that found the table intact),
    /// when nobody else committed in between.
    generation: Option<u32>,
}

impl<F: Firewall> Proxier<F> {
    /// A proxier whose first sync will be a full one.
    pub fn new(fw: F) -> Self {
        Proxier {
            fw,
            last: None,
            in_sync: false,
            udp: None,
            generation: None,
        }
    }

    /// The firewall it drives.
    pub fn firewall(&self) -> &F {
        &self.fw
    }

    /// Makes the kernel's table `next` in one transaction: full at the
    /// start and after any failure or detected drift, partial otherwise.
    /// On error the kernel keeps its previous table (the transaction is
    /// atomic) and the next sync is full. Finds the difference by walking
    /// both tables; [`Proxier::sync_planned`] does not.
    pub fn sync(&mut self, next: Ruleset) -> Result<SyncReport> {
        let touched = match (&self.last, self.in_sync) {
            (Some(old), true) => Touched::between(old, &next),
            _ => Touched::default(),
        };
        self.sync_touched(&next, touched)
    }

    /// Makes the kernel's table the planner's, writing only what the
    /// planner touched since its last sync (or everything, when a full
    /// sync is due). The planner's record is consumed either way: after a
    /// failure the next sync is a full one.
    pub fn sync_planned(&mut self, planner: &mut Planner) -> Result<SyncReport> {
        let touched = planner.take_touched();
        self.sync_touched(planner.ruleset(), touched)
    }

    /// Whether the next sync will rebuild the whole table.
    pub fn needs_full_sync(&self) -> bool {
        !self.in_sync || self.last.is_none()
    }

    fn sync_touched(&mut self, next: &Ruleset, touched: Touched) -> Result<SyncReport> {
        let start = Instant::now();
        let applied = self.last.as_ref().filter(|_| self.in_sync);
        // A planner that stopped listing what it touched (a relist, many
        // services at once) still changes a table we know element by
        // element: comparing the two here costs milliseconds, rewriting
        // the table a second.
        let touched = match applied {
            Some(old) if touched.elements_all => Touched::between(old, next),
            _ => touched,
        };
        let Written {
            kind,
            generation,
            script_bytes,
            elements,
        } = match write(&self.fw, applied, next, &touched) {
            Ok(done) => done,
            Err(err) => {
                self.in_sync = false;
                self.generation = None;
                self.last = Some(next.clone());
                return Err(err);
            }
        };
        if kind != SyncKind::Unchanged {
            self.generation = generation;
        }

        let conntrack = match &self.udp {
            Some(before) if kind == SyncKind::Full => stale_udp(before, &next.udp),
            Some(before) => {
                let pick = |from: &BTreeMap<String, UdpPort>| -> BTreeMap<String, UdpPort> {
                    touched
                        .udp
                        .iter()
                        .filter_map(|id| from.get(id).map(|p| (id.clone(), p.clone())))
                        .collect()
                };
                stale_udp(&pick(before), &pick(&next.udp))
            }
            // The first sync knows nothing of earlier endpoints; deleting
            // entries then would only break live flows.
            None => Vec::new(),
        };
        let mut conntrack_errors = Vec::new();
        for args in &conntrack {
            if let Err(err) = self.fw.conntrack(args) {
                conntrack_errors.push(err.to_string());
            }
        }
        match (kind, self.last.as_mut(), self.udp.as_mut()) {
            (SyncKind::Full, _, _) | (_, None, _) | (_, _, None) => {
                self.udp = Some(next.udp.clone());
                self.last = Some(next.clone());
            }
            (_, Some(last), Some(udp)) => {
                follow(last, next, &touched);
                for id in &touched.udp {
                    match next.udp.get(id) {
                        Some(port) => udp.insert(id.clone(), port.clone()),
                        None => udp.remove(id),
                    };
                }
            }
        }
        self.in_sync = true;
        Ok(SyncReport {
            kind,
            script_bytes,
            elements,
            elapsed: start.elapsed(),
            conntrack,
            conntrack_errors,
        })
    }

    /// Compares the kernel's table with the last applied ruleset (chains,
    /// rule counts, sets, a sample of each set's elements) and rebuilds
    /// it with a full sync if
    /// someone deleted, flushed or edited it. `Ok(true)` if it repaired
    /// something. When the namespace's nftables generation shows no
    /// transaction since ours, nothing is read back. Meant to run now and
    /// then, not on every sync.
    pub fn check(&mut self) -> Result<bool> {
        let Some(last) = &self.last else {
            return Ok(false);
        };
        if self.in_sync {
            // Nothing committed in the namespace since: nothing to read.
            let now = self.fw.generation().ok().flatten();
            if now.is_some() && now == self.generation {
                return Ok(false);
            }
            let intact = match self.fw.outline()? {
                Some(outline) => outline.shape == last.shape() && self.elements_present(last)?,
                None => false,
            };
            if intact {
                // Someone else's transaction; ours is whole. Remember the
                // generation so the table is not read again until the
                // next one.
                if self.fw.generation().ok().flatten() == now {
                    self.generation = now;
                }
                return Ok(false);
            }
            self.in_sync = false;
        }
        let next = last.clone();
        self.sync(next)?;
        Ok(true)
    }
}

/// What [`write`] did.
struct Written {
    kind: SyncKind,
    /// The generation after it, when no one else committed meanwhile.
    generation: Option<u32>,
    /// Bytes of `nft` scripts run.
    script_bytes: usize,
    /// Elements written or deleted over netlink.
    elements: usize,
}

/// Turns `next` into a transaction (a partial one against `applied`,
/// the table the kernel holds, when it is known) and applies it.
fn write<F: Firewall>(
    fw: &F,
    applied: Option<&Ruleset>,
    next: &Ruleset,
    touched: &Touched,
) -> Result<Written> {
    let existing;
    let (kind, txn) = match applied.and_then(|old| render::partial_touched(old, next, touched)) {
        Some(txn) if txn.is_empty() => {
            return Ok(Written {
                kind: SyncKind::Unchanged,
                generation: None,
                script_bytes: 0,
                elements: 0,
            });
        }
        Some(txn) => (SyncKind::Partial, txn),
        None => {
            existing = fw.outline()?;
            (
                SyncKind::Full,
                render::full_transaction(next, existing.as_ref()),
            )
        }
    };
    let generation = commit(fw, &txn)?;
    let (script_bytes, elements) = match &txn {
        Transaction::Script(script) => (script.len(), 0),
        Transaction::Elements {
            prepare,
            writes,
            cleanup,
            ..
        } => (
            prepare.len() + cleanup.len(),
            writes.iter().map(|w| w.deletes.len() + w.adds.len()).sum(),
        ),
    };
    Ok(Written {
        kind,
        generation,
        script_bytes,
        elements,
    })
}

/// Applies one transaction; the generation after it when no one else
/// committed in between its steps.
fn commit<F: Firewall>(fw: &F, txn: &Transaction<'_>) -> Result<Option<u32>> {
    match txn {
        Transaction::Script(script) => fw.apply(script),
        Transaction::Elements {
            prepare,
            writes,
            codecs,
            cleanup,
        } => {
            let mut steps = Vec::new();
            if !prepare.is_empty() {
                steps.push(fw.apply(prepare)?);
            }
            if !writes.is_empty() {
                steps.push(fw.write_elements(writes, codecs)?);
            }
            if !cleanup.is_empty() {
                steps.push(fw.apply(cleanup)?);
            }
            // Each step knows only that it alone moved the generation;
            // all of them together say nobody came between.
            let ours = steps.iter().all(Option::is_some);
            Ok(steps.last().copied().flatten().filter(|_| ours))
        }
    }
}

/// How many planned elements of each set the drift check looks for.
const SAMPLED_ELEMENTS: usize = 8;

impl<F: Firewall> Proxier<F> {
    /// Whether every set the agent fills still holds a sample of its
    /// planned elements (first, last and evenly between): a map flushed
    /// or emptied by hand is caught without reading 100,000 elements
    /// back.
    fn elements_present(&self, rs: &Ruleset) -> Result<bool> {
        for (name, set) in rs.sets.iter().filter(|(_, s)| !s.dynamic) {
            let n = set.elements.len();
            let Some(codec) = Codec::for_set(set.kind, &set.spec).filter(|_| n > 0) else {
                continue;
            };
            let step = n.div_ceil(SAMPLED_ELEMENTS).max(1);
            let mut keys: Vec<&str> = set
                .elements
                .keys()
                .step_by(step)
                .map(String::as_str)
                .collect();
            if let Some(last) = set.elements.keys().next_back()
                && keys.last() != Some(&last.as_str())
            {
                keys.push(last);
            }
            if !self.fw.has_elements(name, &codec, &keys)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Makes `last` equal to `next` in everything `touched` names.
fn follow(last: &mut Ruleset, next: &Ruleset, touched: &Touched) {
    for name in &touched.chains {
        match next.chains.get(name) {
            Some(chain) => last.chains.insert(name.clone(), chain.clone()),
            None => last.chains.remove(name),
        };
    }
    for name in &touched.sets {
        match next.sets.get(name) {
            Some(set) => last.sets.insert(name.clone(), set.clone()),
            None => last.sets.remove(name),
        };
    }
    for (set, key) in &touched.elements {
        let value = next.sets.get(set).and_then(|s| s.elements.get(key));
        if let Some(target) = last.sets.get_mut(set) {
            match value {
                Some(value) => target.elements.insert(key.clone(), value.clone()),
                None => target.elements.remove(key),
            };
        }
    }
    for id in &touched.udp {
        match next.udp.get(id) {
            Some(port) => last.udp.insert(id.clone(), port.clone()),
            None => last.udp.remove(id),
        };
    }
}

/// The `conntrack -D` filters for UDP flows that would keep going to an
/// endpoint that left (N → fewer, N → 0), or that were made while a
/// service had no endpoints (0 → N).
pub(crate) fn stale_udp(
    before: &BTreeMap<String, UdpPort>,
    after: &BTreeMap<String, UdpPort>,
) -> Vec<Vec<String>> {
    // `conntrack -D -p udp` with the given filters.
    let args = |filters: &[&str]| {
        ["-D", "-p", "udp"]
            .iter()
            .chain(filters)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    for (id, old) in before {
        let new = after.get(id);
        for ep in &old.endpoints {
            if new.is_some_and(|n| n.endpoints.contains(ep)) {
                continue;
            }
            let (ep, port) = (ep.to_string(), old.port.to_string());
            for ip in &old.ips {
                let ip = ip.to_string();
                out.push(args(&[
                    "--orig-dst",
                    &ip,
                    "--orig-port-dst",
                    &port,
                    "--reply-src",
                    &ep,
                ]));
            }
            if let Some(np) = old.node_port {
                let np = np.to_string();
                out.push(args(&["--orig-port-dst", &np, "--reply-src", &ep]));
            }
        }
    }
    for (id, new) in after {
        let had = before.get(id).is_some_and(|o| !o.endpoints.is_empty());
        if had || new.endpoints.is_empty() {
            continue;
        }
        let port = new.port.to_string();
        for ip in &new.ips {
            let ip = ip.to_string();
            out.push(args(&["--orig-dst", &ip, "--orig-port-dst", &port]));
        }
        if let Some(np) = new.node_port {
            out.push(args(&["--orig-port-dst", &np.to_string()]));
        }
    }
    out
}

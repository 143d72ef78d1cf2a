//! The imperative shell of the proxy: keeps the ruleset last applied,
//! turns the next one into a single transaction (full or partial), checks
//! the kernel's table for drift, and clears stale UDP conntrack entries.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Error, Firewall, Result, Ruleset, Shape, UdpPort, render};

/// How a sync reached the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// The table was deleted and rebuilt in one transaction.
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
    /// Size of the nft script, in bytes.
    pub script_bytes: usize,
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
}

impl<F: Firewall> Proxier<F> {
    /// A proxier whose first sync will be a full one.
    pub fn new(fw: F) -> Self {
        Proxier {
            fw,
            last: None,
            in_sync: false,
            udp: None,
        }
    }

    /// The firewall it drives.
    pub fn firewall(&self) -> &F {
        &self.fw
    }

    /// Makes the kernel's table `next` in one transaction: full at the
    /// start and after any failure or detected drift, partial otherwise.
    /// On error the kernel keeps its previous table (the transaction is
    /// atomic) and the next sync is full.
    pub fn sync(&mut self, next: Ruleset) -> Result<SyncReport> {
        let start = Instant::now();
        let partial = match (&self.last, self.in_sync) {
            (Some(old), true) => render::partial(old, &next),
            _ => None,
        };
        let (kind, script) = match partial {
            Some(script) if script.is_empty() => (SyncKind::Unchanged, script),
            Some(script) => (SyncKind::Partial, script),
            None => (SyncKind::Full, render::full(&next)),
        };
        if kind != SyncKind::Unchanged
            && let Err(err) = self.fw.apply(&script)
        {
            self.in_sync = false;
            self.last = Some(next);
            return Err(err);
        }

        let conntrack = match &self.udp {
            Some(before) => stale_udp(before, &next.udp),
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
        self.udp = Some(next.udp.clone());
        self.last = Some(next);
        self.in_sync = true;
        Ok(SyncReport {
            kind,
            script_bytes: script.len(),
            elapsed: start.elapsed(),
            conntrack,
            conntrack_errors,
        })
    }

    /// Compares the kernel's table with the last applied ruleset (chains,
    /// rule counts, element counts) and rebuilds it with a full sync if
    /// someone deleted, flushed or edited it. `Ok(true)` if it repaired
    /// something. Meant to run now and then, not on every sync.
    pub fn check(&mut self) -> Result<bool> {
        let Some(last) = &self.last else {
            return Ok(false);
        };
        if self.in_sync {
            let intact = match self.fw.list_table()? {
                Some(json) => shape_of_listing(&json)? == last.shape(),
                None => false,
            };
            if intact {
                return Ok(false);
            }
            self.in_sync = false;
        }
        let next = last.clone();
        self.sync(next)?;
        Ok(true)
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

/// The [`Shape`] of a table as `nft -j list table` prints it.
pub(crate) fn shape_of_listing(json: &str) -> Result<Shape> {
    let doc: Value = serde_json::from_str(json).map_err(|e| Error::Listing(e.to_string()))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Listing("no \"nftables\" array".into()))?;
    let mut shape = Shape::default();
    for item in items {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let name = body.get("name").and_then(Value::as_str);
        match (kind.as_str(), name) {
            ("chain", Some(name)) => {
                shape.chains.entry(name.to_string()).or_insert(0);
            }
            ("rule", _) => {
                if let Some(chain) = body.get("chain").and_then(Value::as_str) {
                    *shape.chains.entry(chain.to_string()).or_insert(0) += 1;
                }
            }
            ("set" | "map", Some(name)) => {
                let dynamic = body
                    .get("flags")
                    .and_then(Value::as_array)
                    .is_some_and(|f| f.iter().any(|f| f == "dynamic"));
                let count = body
                    .get("elem")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                shape
                    .sets
                    .insert(name.to_string(), (!dynamic).then_some(count));
            }
            _ => {}
        }
    }
    Ok(shape)
}

//! Host-gw routes between nodes, as flannel's host-gw backend makes them:
//! for every other node with a pod CIDR, a route to that CIDR via the
//! node's `InternalIP`. [`routes`] is the pure plan from the Node objects;
//! [`apply_routes`] makes the node namespace's main table match it,
//! touching only routes stamped [`PROTO_KNIT`]; [`follow`] keeps them in
//! step with a Node watch.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::netlink::{Netlink, PROTO_KNIT, Route};
use crate::sandbox::apply::Changes;

/// The routes node `this_node` needs to reach every other node's pods.
/// Nodes without a pod CIDR or an IPv4 `InternalIP` get none; so does a
/// CIDR claimed by two nodes (whichever route we picked could be wrong).
pub fn routes(this_node: &str, nodes: &[Node]) -> Vec<Route> {
    let mut by_cidr: BTreeMap<Ipv4Net, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut own = Vec::new();
    for node in nodes {
        let Some(cidr) = pod_cidr(node) else { continue };
        if node.metadata.name.as_deref() == Some(this_node) {
            own.push(cidr);
            continue;
        }
        let Some(ip) = internal_ip(node) else {
            continue;
        };
        by_cidr.entry(cidr).or_default().push(ip);
    }
    by_cidr
        .into_iter()
        .filter(|(cidr, vias)| vias.len() == 1 && !own.contains(cidr))
        .map(|(dst, vias)| Route {
            dst,
            via: Some(vias[0]),
            dev: None,
            proto: PROTO_KNIT,
        })
        .collect()
}

/// The node's IPv4 pod CIDR (`spec.podCIDR`).
pub fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    let cidr = node.spec.as_ref()?.pod_cidr.as_deref()?;
    cidr.parse::<Ipv4Net>().ok().map(|c| c.trunc())
}

/// The node's first IPv4 `InternalIP`.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// Makes knit's routes in `nl` the `wanted` ones: removes every route
/// stamped [`PROTO_KNIT`] that is not wanted, then adds what is missing.
/// Routes are compared by destination and gateway (the kernel fills in
/// the device of a route added without one).
pub fn apply_routes(nl: &impl Netlink, wanted: &[Route]) -> crate::Result<Changes> {
    let same = |a: &Route, b: &Route| a.dst == b.dst && a.via == b.via;
    let mut changes = Changes::new();
    let present = nl.routes()?;
    for old in present.iter().filter(|r| r.proto == PROTO_KNIT) {
        if !wanted.iter().any(|w| same(w, old)) {
            nl.delete_route(old)?;
            changes.push(format!("delete route {old}"));
        }
    }
    for route in wanted {
        if !present
            .iter()
            .any(|p| p.proto == PROTO_KNIT && same(p, route))
        {
            nl.add_route(route)?;
            changes.push(format!("add route {route}"));
        }
    }
    Ok(changes)
}

/// Follows every Node and keeps `nl`'s host-gw routes in step, until the
/// watch stream ends (it does not, short of the client going away).
/// Failed applies are retried on the next change or after `resync`.
pub async fn follow<N>(client: Client, this_node: String, nl: Arc<N>, resync: Duration)
where
    N: Netlink + Send + Sync + 'static,
{
    let api: Api<Node> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Node>> = None;
    let mut synced = false;
    let mut applied: Option<Vec<Route>> = None;
    let mut tick = tokio::time::interval(resync);
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
                    Ok(watcher::Event::InitApply(n)) => {
                        if let Some(l) = listing.as_mut() {
                            l.insert(n.metadata.name.clone().unwrap_or_default(), n);
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        nodes = listing.take().unwrap_or_default();
                        synced = true;
                    }
                    Ok(watcher::Event::Apply(n)) => {
                        nodes.insert(n.metadata.name.clone().unwrap_or_default(), n);
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "node watch");
                        continue;
                    }
                }
            }
            _ = tick.tick() => applied = None,
        }
        if !synced {
            continue;
        }
        let list: Vec<Node> = nodes.values().cloned().collect();
        let plan = routes(&this_node, &list);
        if applied.as_ref() == Some(&plan) {
            continue;
        }
        let nl = nl.clone();
        let wanted = plan.clone();
        match tokio::task::spawn_blocking(move || apply_routes(&*nl, &wanted)).await {
            Ok(Ok(changes)) => {
                for change in &changes {
                    tracing::info!(node = %this_node, "{change}");
                }
                applied = Some(plan);
            }
            Ok(Err(err)) => {
                tracing::warn!(node = %this_node, error = %err, "host-gw routes");
                applied = None;
            }
            Err(err) => tracing::warn!(error = %err, "host-gw routes task"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{FakeKernel, PROTO_KERNEL};
    use serde_json::json;

    fn node(name: &str, ip: &str, cidr: Option<&str>) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [
                {"type": "Hostname", "address": name},
                {"type": "InternalIP", "address": ip}]},
        }))
        .unwrap()
    }

    fn route(dst: &str, via: &str) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            via: Some(via.parse().unwrap()),
            dev: None,
            proto: PROTO_KNIT,
        }
    }

    #[test]
    fn every_other_node_with_a_cidr_via_its_address() {
        let nodes = [
            node("n1", "10.100.0.2", Some("10.0.1.0/24")),
            node("n2", "10.100.0.3", Some("10.0.2.0/24")),
            node("n3", "10.100.0.4", None),
            node("n4", "fd00::4", Some("10.0.4.0/24")),
            node("n5", "10.100.0.6", Some("10.0.5.0/24")),
        ];
        assert_eq!(
            routes("n1", &nodes),
            vec![
                route("10.0.2.0/24", "10.100.0.3"),
                route("10.0.5.0/24", "10.100.0.6")
            ]
        );
        assert_eq!(routes("n2", &nodes)[0], route("10.0.1.0/24", "10.100.0.2"));
        // Two nodes claiming one CIDR, or a claim on our own: no route.
        let clash = [
            node("n1", "10.100.0.2", Some("10.0.1.0/24")),
            node("n2", "10.100.0.3", Some("10.0.1.0/24")),
            node("n3", "10.100.0.4", Some("10.0.3.0/24")),
            node("n4", "10.100.0.5", Some("10.0.3.0/24")),
        ];
        assert_eq!(routes("n1", &clash), vec![]);
    }

    #[test]
    fn the_applier_touches_only_knits_routes() {
        let kernel = FakeKernel::new();
        kernel.add_namespace("node");
        kernel.add_plain_link("node", "eth0", None, 1500);
        let nl = kernel.netlink("node");
        nl.add_address("eth0", "10.100.0.2/24".parse().unwrap())
            .unwrap();
        let admin = Route {
            dst: "192.168.9.0/24".parse().unwrap(),
            via: Some("10.100.0.1".parse().unwrap()),
            dev: None,
            proto: 4,
        };
        nl.add_route(&admin).unwrap();
        let stale = route("10.0.9.0/24", "10.100.0.9");
        nl.add_route(&stale).unwrap();
        kernel.take_log();

        let wanted = vec![
            route("10.0.2.0/24", "10.100.0.3"),
            route("10.0.3.0/24", "10.100.0.4"),
        ];
        let changes = apply_routes(&nl, &wanted).unwrap();
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(changes[0].starts_with("delete route 10.0.9.0/24"));
        let now = nl.routes().unwrap();
        assert!(now.iter().any(|r| r.same_path(&admin)), "{now:?}");
        assert!(now.iter().any(|r| r.proto == PROTO_KERNEL));
        assert!(!now.iter().any(|r| r.dst == stale.dst));
        assert_eq!(
            apply_routes(&nl, &wanted).unwrap(),
            Changes::new(),
            "idempotent"
        );

        // A node that moved: its old route goes, the new one comes.
        let moved = vec![route("10.0.2.0/24", "10.100.0.33")];
        let changes = apply_routes(&nl, &moved).unwrap();
        assert_eq!(changes.len(), 3, "{changes:?}");
        let knit: Vec<_> = nl
            .routes()
            .unwrap()
            .into_iter()
            .filter(|r| r.proto == PROTO_KNIT)
            .collect();
        assert_eq!(knit.len(), 1);
        assert_eq!(knit[0].via, moved[0].via);
    }
}

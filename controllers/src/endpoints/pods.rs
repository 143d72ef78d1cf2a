//! What the endpoints controller keeps of a Pod: the few fields an
//! endpoint is made of. A typed `Pod` costs several kilobytes in memory
//! (k8s-openapi's structs hold every field inline); this projection costs
//! a few hundred bytes, which is what lets one controller hold a hundred
//! thousand pods.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// A pod's labels sorted by key, each string in one exact allocation (a
/// `BTreeMap` spends a whole node on a pod's two or three labels).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels(Box<[(Box<str>, Box<str>)]>);

impl Labels {
    /// The value of `key`, if the pod has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    /// Every `(key, value)`, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl<K: Into<Box<str>>, V: Into<Box<str>>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut pairs: Vec<(Box<str>, Box<str>)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        Labels(pairs.into_boxed_slice())
    }
}

/// A container port with a name, which a Service's `targetPort` may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: Box<str>,
    pub port: i32,
    pub protocol: Box<str>,
}

/// The endpoint-relevant part of a Pod, in exact allocations: a hundred
/// thousand of these must fit in a few tens of megabytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub uid: Option<Box<str>>,
    pub labels: Labels,
    /// `status.podIP`, when it has one.
    pub ip: Option<Box<str>>,
    /// `Succeeded` or `Failed`: no longer an endpoint at all.
    pub finished: bool,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// Being deleted (`deletionTimestamp` set).
    pub terminating: bool,
    /// When the `Ready` condition last changed: the trigger time of an
    /// endpoint change it causes, as Kubernetes reports it.
    pub ready_since: Option<jiff::Timestamp>,
    pub node: Option<Box<str>>,
    pub hostname: Option<Box<str>>,
    pub subdomain: Option<Box<str>>,
    /// Container ports that have a name; numbered target ports need none.
    pub named_ports: Box<[NamedPort]>,
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().filter(|s| !s.is_empty()).map(Box::from)
}

impl From<&Pod> for PodView {
    fn from(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let ready_condition = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Ready");
        let named_ports = spec
            .into_iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: boxed(&p.name)?,
                    port: p.container_port,
                    protocol: p.protocol.as_deref().unwrap_or("TCP").into(),
                })
            })
            .collect();
        PodView {
            namespace: pod.namespace().unwrap_or_default().into(),
            name: pod.name_any().into(),
            uid: boxed(&pod.metadata.uid),
            labels: pod.labels().iter().map(|(k, v)| (&**k, &**v)).collect(),
            ip: status.and_then(|s| boxed(&s.pod_ip)),
            finished: matches!(
                status.and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ),
            ready: ready_condition.is_some_and(|c| c.status == "True"),
            ready_since: ready_condition
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            node: spec.and_then(|s| boxed(&s.node_name)),
            hostname: spec.and_then(|s| boxed(&s.hostname)),
            subdomain: spec.and_then(|s| boxed(&s.subdomain)),
            named_ports,
        }
    }
}

impl PodView {
    /// The container port named `name` for `protocol`.
    pub fn named_port(&self, name: &str, protocol: &str) -> Option<i32> {
        self.named_ports
            .iter()
            .find(|p| &*p.name == name && &*p.protocol == protocol)
            .map(|p| p.port)
    }

    /// Whether a change from `before` to `self` changes readiness, which
    /// makes its trigger time the Ready condition's transition.
    pub fn readiness_changed(&self, before: &PodView) -> bool {
        self.ready != before.ready || self.ready_since != before.ready_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_keeps_what_endpoints_are_made_of() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
                         "labels": {"app": "web"}, "annotations": {"big": "x".repeat(1000)}},
            "spec": {"nodeName": "n1", "hostname": "web-1", "subdomain": "web",
                     "containers": [
                         {"name": "a", "ports": [{"name": "http", "containerPort": 8080},
                                                 {"containerPort": 9090}]},
                         {"name": "b", "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": "10.0.1.2",
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": "2026-11-26T10:00:00Z"}]},
        }))
        .unwrap();
        let view = PodView::from(&pod);
        assert_eq!((&*view.namespace, &*view.name), ("shop", "web-1"));
        assert_eq!(view.labels.get("app"), Some("web"));
        assert_eq!(view.labels.get("tier"), None);
        assert_eq!(view.ip.as_deref(), Some("10.0.1.2"));
        assert!(view.ready && !view.finished && !view.terminating);
        assert_eq!(
            view.ready_since,
            Some("2026-11-26T10:00:00Z".parse().unwrap())
        );
        assert_eq!(view.named_port("http", "TCP"), Some(8080));
        assert_eq!(view.named_port("dns", "UDP"), Some(53));
        assert_eq!(view.named_port("dns", "TCP"), None);
        assert_eq!(view.named_ports.len(), 2, "the unnamed port is not kept");
    }

    #[test]
    fn labels_are_sorted_and_found_by_key() {
        let labels: Labels = [("tier", "web"), ("app", "shop"), ("z", "")]
            .into_iter()
            .collect();
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["app", "tier", "z"]);
        assert_eq!(
            (labels.get("app"), labels.get("z"), labels.get("b")),
            (Some("shop"), Some(""), None)
        );
    }

    #[test]
    fn a_pod_without_status_is_not_ready_and_has_no_ip() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"podIP": ""},
        }))
        .unwrap();
        let view = PodView::from(&pod);
        assert!(!view.ready && view.ip.is_none() && view.ready_since.is_none());
    }
}

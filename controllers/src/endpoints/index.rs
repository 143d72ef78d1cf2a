//! Which Services select which pods, kept up to date change by change. The
//! pods themselves live in the process's shared pod cache
//! ([`crate::pods`]); the index holds only names. A pod's change costs work
//! in proportion to the Services that select it and a Service's in
//! proportion to its namespace's pods, never to the whole cluster: that is
//! what keeps a readiness flip fast with ten thousand Services.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;

use super::desired::{Desired, desired, managed_selector, selects};
use crate::cache::key_of;
use crate::pods::{PodSummary, State};
use crate::queue::Key;

/// Service names of a namespace by one `key=value` pair of their
/// selectors: namespace → key → value → names.
type PairIndex = HashMap<String, HashMap<String, HashMap<String, BTreeSet<String>>>>;

/// Services and the selection between them and the pods.
#[derive(Debug, Default)]
pub struct Index {
    services: HashMap<Key, Service>,
    /// Every managed Service under the first pair of its selector: a pod
    /// can only be selected by Services found under one of its own labels.
    by_pair: PairIndex,
    /// The pods each Service selects, by name. (Which Services select a
    /// pod is found again from its labels through `by_pair`, which costs
    /// less than keeping it for every pod.)
    selected: HashMap<Key, BTreeSet<Box<str>>>,
}

/// Whether a change from `before` to `after` can change any endpoint:
/// resourceVersions and owners move all the time, endpoints rarely.
fn same_endpoint(before: &PodSummary, after: &PodSummary) -> bool {
    before.uid == after.uid
        && before.labels == after.labels
        && before.ip == after.ip
        && before.ready() == after.ready()
        && before.deleting == after.deleting
        && before.finished == after.finished
        && before.node == after.node
        && before.hostname == after.hostname
        && before.subdomain == after.subdomain
        && before.named_ports == after.named_ports
}

impl Index {
    /// Keys of every known Service.
    pub fn service_keys(&self) -> Vec<Key> {
        self.services.keys().cloned().collect()
    }

    /// Records a pod's change from `before` to `after` (`None`: absent)
    /// and returns the Services whose endpoints it may change: those
    /// selecting it before or after. A change that alters nothing
    /// endpoints are made of returns none.
    pub fn apply_pod(
        &mut self,
        before: Option<&PodSummary>,
        after: Option<&PodSummary>,
    ) -> Vec<Key> {
        if let (Some(b), Some(a)) = (before, after)
            && same_endpoint(b, a)
        {
            return Vec::new();
        }
        let Some(pod) = after.or(before) else {
            return Vec::new();
        };
        let namespace = pod.namespace.to_string();
        let was = before.map(|b| self.selecting(b)).unwrap_or_default();
        let is = after.map(|a| self.selecting(a)).unwrap_or_default();
        for gone in was.difference(&is) {
            if let Some(pods) = self.selected.get_mut(&(namespace.clone(), gone.clone())) {
                pods.remove(&pod.name);
            }
        }
        for new in &is {
            self.selected
                .entry((namespace.clone(), new.clone()))
                .or_default()
                .insert(pod.name.clone());
        }
        was.union(&is)
            .map(|service| (namespace.clone(), service.clone()))
            .collect()
    }

    /// Records `service`, re-selecting its pods from `pods` when its
    /// selector changed, and returns its key (its endpoints always need a
    /// look).
    pub fn apply_service(&mut self, service: Service, pods: &State) -> Key {
        let key = key_of(&service);
        let same_selector = self
            .services
            .get(&key)
            .is_some_and(|old| managed_selector(old) == managed_selector(&service));
        if !same_selector {
            self.unselect(&key);
        }
        let selector = managed_selector(&service).cloned();
        self.services.insert(key.clone(), service);
        if let (false, Some(selector)) = (same_selector, selector) {
            self.select(&key, &selector, pods);
        }
        key
    }

    /// Forgets the Service at `key`.
    pub fn delete_service(&mut self, key: &Key) {
        self.unselect(key);
        self.services.remove(key);
    }

    /// What should exist for the Service at `key`, given the pods, or
    /// `None` when the controller leaves its endpoints alone (no such
    /// Service, no selector, ExternalName).
    pub fn desired(&self, key: &Key, pods: &State) -> Option<Desired> {
        let service = self.services.get(key)?;
        let selected = self.selected.get(key).into_iter().flatten();
        desired(
            service,
            selected.filter_map(|name| pods.get(&key.0, name).map(|p| &**p)),
        )
    }

    /// Names of the Services in the pod's namespace that select it.
    fn selecting(&self, pod: &PodSummary) -> BTreeSet<String> {
        let Some(by_key) = self.by_pair.get(&*pod.namespace) else {
            return BTreeSet::new();
        };
        let mut names = BTreeSet::new();
        for (label, value) in pod.labels.iter() {
            let candidates = by_key.get(label).and_then(|by_value| by_value.get(value));
            for name in candidates.into_iter().flatten() {
                let key = (pod.namespace.to_string(), name.clone());
                let picks = self
                    .services
                    .get(&key)
                    .and_then(managed_selector)
                    .is_some_and(|selector| selects(selector, &pod.labels));
                if picks {
                    names.insert(name.clone());
                }
            }
        }
        names
    }

    /// Indexes the Service at `key` under `selector` and selects the
    /// namespace's pods.
    fn select(&mut self, key: &Key, selector: &BTreeMap<String, String>, pods: &State) {
        let Some((label, value)) = selector.iter().next() else {
            return;
        };
        self.by_pair
            .entry(key.0.clone())
            .or_default()
            .entry(label.clone())
            .or_default()
            .entry(value.clone())
            .or_default()
            .insert(key.1.clone());
        let picked: BTreeSet<Box<str>> = pods
            .in_namespace(&key.0)
            .filter(|pod| selects(selector, &pod.labels))
            .map(|pod| pod.name.clone())
            .collect();
        if !picked.is_empty() {
            self.selected.insert(key.clone(), picked);
        }
    }

    /// Undoes [`select`](Self::select) for the Service at `key`.
    fn unselect(&mut self, key: &Key) {
        let selector = self.services.get(key).and_then(managed_selector);
        if let Some((label, value)) = selector.and_then(|s| s.iter().next()) {
            let by_key = self.by_pair.get_mut(&key.0);
            let names = by_key
                .and_then(|by_key| by_key.get_mut(label))
                .and_then(|by_value| by_value.get_mut(value));
            if let Some(names) = names {
                names.remove(&key.1);
            }
        }
        self.selected.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::Pods;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn service(name: &str, selector: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid")},
            "spec": {"selector": selector, "ports": [{"port": 80}]},
        }))
        .unwrap()
    }

    fn pod_in(namespace: &str, name: &str, labels: serde_json::Value, ready: bool) -> PodSummary {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "uid": format!("{name}-uid"),
                         "labels": labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"podIP": format!("10.0.1.{}", name.len() + 1),
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap();
        PodSummary::from(&pod)
    }

    fn pod(name: &str, labels: serde_json::Value, ready: bool) -> PodSummary {
        pod_in("default", name, labels, ready)
    }

    fn key(name: &str) -> Key {
        ("default".into(), name.into())
    }

    /// The index and the pod cache, changed together as the controller's
    /// loop changes them.
    #[derive(Default)]
    struct World {
        index: Index,
        pods: Pods,
    }

    impl World {
        fn pod(&mut self, pod: PodSummary) -> Vec<Key> {
            let k = (pod.namespace.clone(), pod.name.clone());
            let before = self.pods.get(&k.0, &k.1);
            self.pods.apply(k, Some(pod.clone()));
            self.index.apply_pod(before.as_deref(), Some(&pod))
        }

        fn delete(&mut self, name: &str) -> Vec<Key> {
            let before = self.pods.get("default", name);
            self.pods.apply(("default".into(), name.into()), None);
            self.index.apply_pod(before.as_deref(), None)
        }

        fn service(&mut self, service: Service) {
            let state = self.pods.read();
            self.index.apply_service(service, &state);
        }

        fn addresses(&self, service: &str) -> Vec<String> {
            let state = self.pods.read();
            self.index
                .desired(&key(service), &state)
                .and_then(|d| d.endpoints.subsets)
                .into_iter()
                .flatten()
                .flat_map(|s| s.addresses.unwrap_or_default())
                .filter_map(|a| a.target_ref?.name)
                .collect()
        }
    }

    #[test]
    fn a_pod_touches_only_the_services_that_select_it() {
        let mut world = World::default();
        world.service(service("web", json!({"app": "web"})));
        world.service(service("web-v2", json!({"app": "web", "track": "v2"})));
        world.service(service("db", json!({"app": "db"})));

        assert_eq!(
            world.pod(pod("w1", json!({"app": "web"}), true)),
            [key("web")]
        );
        assert_eq!(
            world.pod(pod("w2", json!({"app": "web", "track": "v2"}), true)),
            [key("web"), key("web-v2")]
        );
        assert_eq!(world.addresses("web"), ["w1", "w2"]);
        assert_eq!(world.addresses("web-v2"), ["w2"]);

        // A change endpoints are not made of touches nothing; a readiness
        // flip touches only its services.
        let mut moved = pod("w1", json!({"app": "web"}), true);
        moved.resource_version = "99".into();
        assert!(world.pod(moved).is_empty());
        assert_eq!(
            world.pod(pod("w1", json!({"app": "web"}), false)),
            [key("web")]
        );
        assert_eq!(world.addresses("web"), ["w2"]);
    }

    #[test]
    fn relabelling_moves_a_pod_between_services_and_touches_both() {
        let mut world = World::default();
        world.service(service("web", json!({"app": "web"})));
        world.service(service("db", json!({"app": "db"})));
        world.pod(pod("p", json!({"app": "web"}), true));
        assert_eq!(
            world.pod(pod("p", json!({"app": "db"}), true)),
            [key("db"), key("web")]
        );
        assert_eq!(
            (world.addresses("web").len(), world.addresses("db").len()),
            (0, 1)
        );
        assert_eq!(world.delete("p"), [key("db")]);
        assert!(world.addresses("db").is_empty());
        assert!(world.delete("p").is_empty(), "already gone");
    }

    #[test]
    fn a_service_selects_existing_pods_and_a_new_selector_reselects() {
        let mut world = World::default();
        world.pod(pod("a", json!({"app": "web"}), true));
        world.pod(pod("b", json!({"app": "db"}), true));
        world.service(service("svc", json!({"app": "web"})));
        assert_eq!(world.addresses("svc"), ["a"]);

        world.service(service("svc", json!({"app": "db"})));
        assert_eq!(world.addresses("svc"), ["b"]);
        // The old selection is gone both ways: a's change touches nothing.
        assert!(world.pod(pod("a", json!({"app": "web"}), false)).is_empty());

        world.index.delete_service(&key("svc"));
        assert!(
            world
                .index
                .desired(&key("svc"), &world.pods.read())
                .is_none()
        );
        assert!(world.pod(pod("b", json!({"app": "db"}), false)).is_empty());
    }

    #[test]
    fn pods_of_other_namespaces_are_never_selected() {
        let mut world = World::default();
        world.service(service("web", json!({"app": "web"})));
        assert!(
            world
                .pod(pod_in("other", "w", json!({"app": "web"}), true))
                .is_empty()
        );
        assert!(world.addresses("web").is_empty());
    }
}

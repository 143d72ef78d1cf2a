//! The endpoints controller's picture of the cluster: every Service, every
//! pod (as a [`PodView`]), and which Services select which pods, kept up to
//! date change by change. A pod's change costs work in proportion to the
//! Services that select it and a Service's in proportion to its
//! namespace's pods, never to the whole cluster: that is what keeps a
//! readiness flip fast with ten thousand Services.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;

use super::desired::{Desired, desired, managed_selector, selects};
use super::pods::PodView;
use crate::cache::key_of;
use crate::queue::Key;

/// Service names of a namespace by one `key=value` pair of their
/// selectors: namespace → key → value → names.
type PairIndex = HashMap<String, HashMap<String, HashMap<String, BTreeSet<String>>>>;

/// Services, pods and the selection between them.
#[derive(Debug, Default)]
pub struct Index {
    services: HashMap<Key, Service>,
    /// Every managed Service under the first pair of its selector: a pod
    /// can only be selected by Services found under one of its own labels.
    by_pair: PairIndex,
    /// Pods by namespace, then name.
    pods: HashMap<String, HashMap<Box<str>, PodView>>,
    /// The pods each Service selects, by name. (Which Services select a
    /// pod is found again from its labels through `by_pair`, which costs
    /// less than keeping it for every pod.)
    selected: HashMap<Key, BTreeSet<Box<str>>>,
}

impl Index {
    /// The pod at `key`, if known.
    pub fn pod(&self, (namespace, name): &Key) -> Option<&PodView> {
        self.pods.get(namespace)?.get(name.as_str())
    }

    /// Keys of every known pod.
    pub fn pod_keys(&self) -> Vec<Key> {
        self.pods
            .iter()
            .flat_map(|(ns, pods)| pods.keys().map(|name| (ns.clone(), name.to_string())))
            .collect()
    }

    /// Keys of every known Service.
    pub fn service_keys(&self) -> Vec<Key> {
        self.services.keys().cloned().collect()
    }

    /// Records `pod` and returns the Services whose endpoints it may
    /// change: those selecting it now or before. A change that alters
    /// nothing endpoints are made of returns none.
    pub fn apply_pod(&mut self, pod: PodView) -> Vec<Key> {
        let namespace = pod.namespace.to_string();
        let old = self.pods.get(&namespace).and_then(|p| p.get(&pod.name));
        if old == Some(&pod) {
            return Vec::new();
        }
        let before = old.map(|old| self.selecting(old)).unwrap_or_default();
        let now = self.selecting(&pod);
        for gone in before.difference(&now) {
            if let Some(pods) = self.selected.get_mut(&(namespace.clone(), gone.clone())) {
                pods.remove(&pod.name);
            }
        }
        for new in now.difference(&before) {
            self.selected
                .entry((namespace.clone(), new.clone()))
                .or_default()
                .insert(pod.name.clone());
        }
        let touched = before
            .union(&now)
            .map(|service| (namespace.clone(), service.clone()))
            .collect();
        self.pods
            .entry(namespace)
            .or_default()
            .insert(pod.name.clone(), pod);
        touched
    }

    /// Forgets the pod at `key`; returns the Services that selected it.
    pub fn delete_pod(&mut self, (namespace, name): &Key) -> Vec<Key> {
        let Some(pods) = self.pods.get_mut(namespace) else {
            return Vec::new();
        };
        let Some(old) = pods.remove(name.as_str()) else {
            return Vec::new();
        };
        if pods.is_empty() {
            self.pods.remove(namespace);
        }
        self.selecting(&old)
            .into_iter()
            .map(|service| {
                let service = (namespace.clone(), service);
                if let Some(pods) = self.selected.get_mut(&service) {
                    pods.remove(name.as_str());
                }
                service
            })
            .collect()
    }

    /// Records `service`, re-selecting its pods when its selector changed,
    /// and returns its key (its endpoints always need a look).
    pub fn apply_service(&mut self, service: Service) -> Key {
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
            self.select(&key, &selector);
        }
        key
    }

    /// Forgets the Service at `key`.
    pub fn delete_service(&mut self, key: &Key) {
        self.unselect(key);
        self.services.remove(key);
    }

    /// What should exist for the Service at `key`, or `None` when the
    /// controller leaves its endpoints alone (no such Service, no selector,
    /// ExternalName).
    pub fn desired(&self, key: &Key) -> Option<Desired> {
        let service = self.services.get(key)?;
        let pods = self.pods.get(&key.0);
        let selected = self.selected.get(key).into_iter().flatten();
        desired(
            service,
            selected.filter_map(|name| pods.and_then(|pods| pods.get(name))),
        )
    }

    /// Names of the Services in the pod's namespace that select it.
    fn selecting(&self, pod: &PodView) -> BTreeSet<String> {
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
    fn select(&mut self, key: &Key, selector: &BTreeMap<String, String>) {
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
        let picked: BTreeSet<Box<str>> = self
            .pods
            .get(&key.0)
            .into_iter()
            .flatten()
            .filter(|(_, pod)| selects(selector, &pod.labels))
            .map(|(name, _)| name.clone())
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
    use serde_json::json;

    fn service(name: &str, selector: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid")},
            "spec": {"selector": selector, "ports": [{"port": 80}]},
        }))
        .unwrap()
    }

    fn pod(name: &str, labels: &[(&str, &str)], ready: bool) -> PodView {
        PodView {
            namespace: "default".into(),
            name: name.into(),
            labels: labels.iter().copied().collect(),
            ip: Some(format!("10.0.1.{}", name.len() + 1).into()),
            ready,
            ..PodView::default()
        }
    }

    fn key(name: &str) -> Key {
        ("default".into(), name.into())
    }

    fn addresses(index: &Index, service: &str) -> usize {
        index
            .desired(&key(service))
            .and_then(|d| d.endpoints.subsets)
            .into_iter()
            .flatten()
            .map(|s| s.addresses.map_or(0, |a| a.len()))
            .sum()
    }

    #[test]
    fn a_pod_touches_only_the_services_that_select_it() {
        let mut index = Index::default();
        index.apply_service(service("web", json!({"app": "web"})));
        index.apply_service(service("web-v2", json!({"app": "web", "track": "v2"})));
        index.apply_service(service("db", json!({"app": "db"})));

        let touched = index.apply_pod(pod("w1", &[("app", "web")], true));
        assert_eq!(touched, [key("web")]);
        let touched = index.apply_pod(pod("w2", &[("app", "web"), ("track", "v2")], true));
        assert_eq!(touched, [key("web"), key("web-v2")]);
        assert_eq!(
            (addresses(&index, "web"), addresses(&index, "web-v2")),
            (2, 1)
        );

        // The same view again changes nothing; a readiness flip touches
        // only its services.
        assert!(
            index
                .apply_pod(pod("w1", &[("app", "web")], true))
                .is_empty()
        );
        assert_eq!(
            index.apply_pod(pod("w1", &[("app", "web")], false)),
            [key("web")]
        );
        assert_eq!(addresses(&index, "web"), 1);
    }

    #[test]
    fn relabelling_moves_a_pod_between_services_and_touches_both() {
        let mut index = Index::default();
        index.apply_service(service("web", json!({"app": "web"})));
        index.apply_service(service("db", json!({"app": "db"})));
        index.apply_pod(pod("p", &[("app", "web")], true));
        let touched = index.apply_pod(pod("p", &[("app", "db")], true));
        assert_eq!(touched, [key("db"), key("web")]);
        assert_eq!((addresses(&index, "web"), addresses(&index, "db")), (0, 1));
        assert_eq!(index.delete_pod(&key("p")), [key("db")]);
        assert_eq!(addresses(&index, "db"), 0);
        assert!(index.delete_pod(&key("p")).is_empty(), "already gone");
    }

    #[test]
    fn a_service_selects_existing_pods_and_a_new_selector_reselects() {
        let mut index = Index::default();
        index.apply_pod(pod("a", &[("app", "web")], true));
        index.apply_pod(pod("b", &[("app", "db")], true));
        index.apply_service(service("svc", json!({"app": "web"})));
        assert_eq!(addresses(&index, "svc"), 1);
        let desired = index.desired(&key("svc")).unwrap();
        let target = desired.endpoints.subsets.unwrap()[0]
            .addresses
            .clone()
            .unwrap()[0]
            .target_ref
            .clone()
            .unwrap();
        assert_eq!(target.name.as_deref(), Some("a"));

        index.apply_service(service("svc", json!({"app": "db"})));
        let desired = index.desired(&key("svc")).unwrap();
        let target = desired.endpoints.subsets.unwrap()[0]
            .addresses
            .clone()
            .unwrap()[0]
            .target_ref
            .clone()
            .unwrap();
        assert_eq!(target.name.as_deref(), Some("b"));
        // The old selection is gone both ways: a's change touches nothing.
        assert!(
            index
                .apply_pod(pod("a", &[("app", "web")], false))
                .is_empty()
        );

        index.delete_service(&key("svc"));
        assert!(index.desired(&key("svc")).is_none());
        assert!(
            index
                .apply_pod(pod("b", &[("app", "db")], false))
                .is_empty()
        );
    }

    #[test]
    fn pods_of_other_namespaces_are_never_selected() {
        let mut index = Index::default();
        index.apply_service(service("web", json!({"app": "web"})));
        let mut elsewhere = pod("w", &[("app", "web")], true);
        elsewhere.namespace = "other".into();
        assert!(index.apply_pod(elsewhere).is_empty());
        assert_eq!(addresses(&index, "web"), 0);
    }
}

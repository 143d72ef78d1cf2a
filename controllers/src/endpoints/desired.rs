//! The pure core of the endpoints controller: what Endpoints object and
//! EndpointSlices a Service should have, given the pods it selects, and a
//! signature of each so that the controller can tell whether what the API
//! holds is already that.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::pods::{Labels, PodSummary};

use super::{MANAGED_BY_LABEL, MANAGER, MAX_SLICE_ENDPOINTS, SERVICE_NAME_LABEL};

/// What should exist for one Service.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub endpoints: Endpoints,
    pub slices: Vec<EndpointSlice>,
}

/// One resolved port: the Service port's name, the pod's port, the protocol.
type ResolvedPort = (String, i32, String);

/// A selected pod's entry, before it is grouped by its ports.
struct Backend {
    ip: String,
    ready: bool,
    terminating: bool,
    node: Option<String>,
    hostname: Option<String>,
    target: ObjectReference,
}

/// Whether `selector` (a Service's) picks a pod with `labels`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &Labels) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v.as_str()))
}

/// The Service's selector, if the controller manages its endpoints (a
/// Service without one has user-written Endpoints; ExternalName has none).
pub fn managed_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// The pod's port for one Service port: a number is taken as it is, a
/// name is looked up among the containers' ports (the pod is skipped for
/// that port when none has it).
fn resolve(
    target: Option<&IntOrString>,
    service_port: i32,
    protocol: &str,
    pod: &PodSummary,
) -> Option<i32> {
    match target {
        None => Some(service_port),
        Some(IntOrString::Int(port)) => Some(*port),
        Some(IntOrString::String(name)) => match name.parse() {
            Ok(number) => Some(number),
            Err(_) => pod.named_port(name, protocol),
        },
    }
}

fn owner(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.name_any(),
        uid: service.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What should exist for `service` given pods (of any namespace; only
/// those it selects count), or `None` when the controller leaves its
/// endpoints alone.
pub fn desired<'a>(
    service: &Service,
    pods: impl IntoIterator<Item = &'a PodSummary>,
) -> Option<Desired> {
    let selector = managed_selector(service)?;
    let spec = service.spec.as_ref()?;
    let namespace = service.namespace().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let service_ports = spec.ports.clone().unwrap_or_default();

    // Pods grouped by the ports they resolve to, as Endpoints subsets are.
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<Backend>> = BTreeMap::new();
    for pod in pods {
        if *pod.namespace != *namespace || !selects(selector, &pod.labels) || pod.finished {
            continue;
        }
        let Some(ip) = pod.ip.as_deref().map(str::to_owned) else {
            continue;
        };
        let ports: Vec<ResolvedPort> = service_ports
            .iter()
            .filter_map(|p| {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                let port = resolve(p.target_port.as_ref(), p.port, &protocol, pod)?;
                Some((p.name.clone().unwrap_or_default(), port, protocol))
            })
            .collect();
        if ports.is_empty() && !service_ports.is_empty() {
            continue;
        }
        let subdomain_matches = pod.subdomain.as_deref() == Some(service.name_any().as_str());
        let text = |s: &Option<Box<str>>| s.as_deref().map(str::to_owned);
        let uid = Some(pod.uid.to_string()).filter(|u| !u.is_empty());
        groups.entry(ports).or_default().push(Backend {
            ip,
            ready: pod.ready(),
            terminating: pod.deleting,
            node: text(&pod.node),
            hostname: text(&pod.hostname).filter(|_| subdomain_matches),
            target: ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.name.to_string()),
                namespace: Some(namespace.clone()),
                uid,
                ..ObjectReference::default()
            },
        });
    }

    let mut subsets = Vec::new();
    let mut slices = Vec::new();
    for (ports, mut backends) in groups {
        backends.sort_by(|a, b| a.ip.cmp(&b.ip));
        let address = |b: &Backend| EndpointAddress {
            ip: b.ip.clone(),
            hostname: b.hostname.clone(),
            node_name: b.node.clone(),
            target_ref: Some(b.target.clone()),
        };
        // Endpoints leave terminating pods out unless not-ready ones are published.
        let (ready, not_ready): (Vec<&Backend>, Vec<&Backend>) = backends
            .iter()
            .filter(|b| publish_not_ready || !b.terminating)
            .partition(|b| publish_not_ready || b.ready);
        let subset = EndpointSubset {
            addresses: (!ready.is_empty()).then(|| ready.iter().map(|b| address(b)).collect()),
            not_ready_addresses: (!not_ready.is_empty())
                .then(|| not_ready.iter().map(|b| address(b)).collect()),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: (!name.is_empty()).then(|| name.clone()),
                        port: *port,
                        protocol: Some(protocol.clone()),
                        app_protocol: None,
                    })
                    .collect()
            }),
        };
        if subset.addresses.is_some() || subset.not_ready_addresses.is_some() {
            subsets.push(subset);
        }
        for chunk in backends.chunks(MAX_SLICE_ENDPOINTS) {
            slices.push(slice(
                service,
                &ports,
                chunk,
                publish_not_ready,
                slices.len(),
            ));
        }
    }
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some(service.name_any()),
            namespace: Some(namespace),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.into(),
                service.name_any(),
            )])),
            owner_references: Some(vec![owner(service)]),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    Some(Desired { endpoints, slices })
}

fn slice(
    service: &Service,
    ports: &[ResolvedPort],
    backends: &[Backend],
    publish_not_ready: bool,
    index: usize,
) -> EndpointSlice {
    let ipv6 = backends.first().is_some_and(|b| b.ip.contains(':'));
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{}-{index}", service.name_any())),
            namespace: service.namespace(),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.into(), service.name_any()),
                (MANAGED_BY_LABEL.into(), MANAGER.into()),
            ])),
            owner_references: Some(vec![owner(service)]),
            ..ObjectMeta::default()
        },
        address_type: if ipv6 { "IPv6" } else { "IPv4" }.into(),
        endpoints: backends
            .iter()
            .map(|b| Endpoint {
                addresses: vec![b.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some((b.ready || publish_not_ready) && !b.terminating),
                    serving: Some(b.ready || publish_not_ready),
                    terminating: Some(b.terminating),
                }),
                node_name: b.node.clone(),
                hostname: b.hostname.clone(),
                target_ref: Some(b.target.clone()),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(name, port, protocol)| SlicePort {
                    name: Some(name.clone()),
                    port: Some(*port),
                    protocol: Some(protocol.clone()),
                    app_protocol: None,
                })
                .collect(),
        ),
    }
}

/// A fingerprint of what an Endpoints object says (its subsets and
/// labels): equal for equal content, whatever the metadata around it.
pub fn endpoints_signature(endpoints: &Endpoints) -> u64 {
    fingerprint(&(&endpoints.subsets, &endpoints.metadata.labels))
}

/// A fingerprint of what an EndpointSlice says (address type, endpoints,
/// ports, labels).
pub fn slice_signature(slice: &EndpointSlice) -> u64 {
    fingerprint(&(
        &slice.address_type,
        &slice.endpoints,
        &slice.ports,
        &slice.metadata.labels,
    ))
}

fn fingerprint(value: &impl serde::Serialize) -> u64 {
    let bytes = serde_json::to_vec(value).expect("API types always serialize");
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "service-test", "namespace": "default", "uid": "svc-uid"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> PodSummary {
        let mut pod = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"),
                         "labels": {"app": "service_test_pod"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "simple-http", "image": "python:2.7",
                     "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if let Some(ip) = ip {
            pod["status"]["podIP"] = json!(ip);
        }
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
        PodSummary::from(&pod)
    }

    fn article_service() -> Service {
        service(
            json!({"selector": {"app": "service_test_pod"}, "ports": [{"port": 80, "targetPort": "http"}]}),
        )
    }

    fn ips(addresses: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        addresses.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn the_articles_service_lists_both_pods_on_the_named_port() {
        let pods = [
            pod("b", Some("10.0.2.2"), true),
            pod("a", Some("10.0.1.2"), true),
        ];
        let want = desired(&article_service(), &pods).unwrap();
        let subsets = want.endpoints.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.1.2", "10.0.2.2"]);
        let ports = subsets[0].ports.as_ref().unwrap();
        assert_eq!(
            (ports[0].port, ports[0].protocol.as_deref()),
            (8080, Some("TCP"))
        );
        let target = subsets[0].addresses.as_ref().unwrap()[0]
            .target_ref
            .as_ref()
            .unwrap();
        assert_eq!(target.name.as_deref(), Some("a"));

        assert_eq!(want.slices.len(), 1);
        let slice = &want.slices[0];
        assert_eq!(slice.labels()[SERVICE_NAME_LABEL], "service-test");
        assert_eq!(slice.endpoints.len(), 2);
        assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-1"));
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
        assert_eq!(slice.owner_references()[0].uid, "svc-uid");
    }

    #[test]
    fn readiness_moves_an_address_between_the_lists_and_the_conditions() {
        let pods = [
            pod("a", Some("10.0.1.2"), true),
            pod("b", Some("10.0.2.2"), false),
        ];
        let want = desired(&article_service(), &pods).unwrap();
        let subset = &want.endpoints.subsets.unwrap()[0];
        assert_eq!(ips(&subset.addresses), ["10.0.1.2"]);
        assert_eq!(ips(&subset.not_ready_addresses), ["10.0.2.2"]);
        let conditions = want.slices[0].endpoints[1].conditions.clone().unwrap();
        assert_eq!(
            (conditions.ready, conditions.serving),
            (Some(false), Some(false))
        );

        // publishNotReadyAddresses lists every pod as an address.
        let mut published = article_service();
        published.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let want = desired(&published, &pods).unwrap();
        let subset = &want.endpoints.subsets.unwrap()[0];
        assert_eq!(ips(&subset.addresses), ["10.0.1.2", "10.0.2.2"]);
        assert!(subset.not_ready_addresses.is_none());
    }

    #[test]
    fn pods_without_an_ip_other_labels_or_the_named_port_are_left_out() {
        let mut other = pod("other", Some("10.0.3.2"), true);
        other.labels = [("app", "db")].into_iter().collect();
        let mut unnamed = pod("unnamed", Some("10.0.4.2"), true);
        unnamed.named_ports = Box::default();
        let mut finished = pod("done", Some("10.0.5.2"), true);
        finished.finished = true;
        let pods = [pod("no-ip", None, true), other, unnamed, finished];
        let want = desired(&article_service(), &pods).unwrap();
        assert!(want.endpoints.subsets.is_none());
        assert!(want.slices.is_empty());
    }

    #[test]
    fn terminating_pods_leave_endpoints_but_stay_in_slices_as_terminating() {
        let mut going = pod("a", Some("10.0.1.2"), true);
        going.deleting = true;
        let want = desired(&article_service(), [&going]).unwrap();
        assert!(want.endpoints.subsets.is_none());
        let conditions = want.slices[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );
    }

    #[test]
    fn slices_hold_at_most_a_hundred_endpoints() {
        let pods: Vec<PodSummary> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    Some(&format!("10.0.{}.{}", i / 200 + 1, i % 200 + 2)),
                    true,
                )
            })
            .collect();
        let want = desired(&article_service(), &pods).unwrap();
        let sizes: Vec<usize> = want.slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let names: Vec<String> = want.slices.iter().map(ResourceExt::name_any).collect();
        assert_eq!(
            names,
            ["service-test-0", "service-test-1", "service-test-2"]
        );
    }

    #[test]
    fn services_without_a_selector_and_external_names_are_left_alone() {
        let pods = [pod("a", Some("10.0.1.2"), true)];
        assert!(desired(&service(json!({"ports": [{"port": 80}]})), &pods).is_none());
        let external = service(
            json!({"type": "ExternalName", "externalName": "db.example.com",
                                      "selector": {"app": "service_test_pod"}}),
        );
        assert!(desired(&external, &pods).is_none());
    }
}

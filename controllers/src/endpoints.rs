//! The endpoints controller: for every Service with a selector, an
//! Endpoints object and EndpointSlices listing the pods it selects — ready
//! ones in `addresses`, the others in `notReadyAddresses` (all in
//! `addresses` with `publishNotReadyAddresses`), target ports resolved per
//! pod (`targetPort: http` is the container port named `http`), slices of
//! at most [`MAX_SLICE_ENDPOINTS`] with `ready`/`serving`/`terminating`.
//!
//! [`desired`] is the pure core; [`run`] keeps reflector caches of Services
//! and Pods, queues the Services an event concerns, and [`reconcile`]s each
//! by writing what differs (server-side apply) and deleting what is left
//! over. A Service that is gone takes its Endpoints and slices with it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::cache::{self, key_of};
use crate::queue::{Key, Queue};
use crate::unless_gone;

/// Endpoints in one EndpointSlice at most, as Kubernetes' default.
pub const MAX_SLICE_ENDPOINTS: usize = 100;
/// The field manager of every write, and the slices' `managed-by` label.
pub const MANAGER: &str = "endpointslice-controller.knit";
/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// When the change an Endpoints object or slice reflects was seen.
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// How long a failed reconcile waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

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

/// Whether `selector` (a Service's) picks `pod`.
fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.labels();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The Service's selector, if the controller manages its endpoints (a
/// Service without one has user-written Endpoints; ExternalName has none).
fn managed_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The pod's port for one Service port: a number is taken as it is, a
/// name is looked up among the containers' ports (the pod is skipped for
/// that port when none has it).
fn resolve(
    target: Option<&IntOrString>,
    service_port: i32,
    protocol: &str,
    pod: &Pod,
) -> Option<i32> {
    match target {
        None => Some(service_port),
        Some(IntOrString::Int(port)) => Some(*port),
        Some(IntOrString::String(name)) => {
            if let Ok(number) = name.parse() {
                return Some(number);
            }
            pod.spec.as_ref()?.containers.iter().find_map(|container| {
                container.ports.as_ref()?.iter().find_map(|port| {
                    let same_protocol = port.protocol.as_deref().unwrap_or("TCP") == protocol;
                    (port.name.as_deref() == Some(name.as_str()) && same_protocol)
                        .then_some(port.container_port)
                })
            })
        }
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

/// What should exist for `service` given the pods (of any namespace; only
/// those it selects count), or `None` when the controller leaves its
/// endpoints alone.
pub fn desired(service: &Service, pods: &[Arc<Pod>]) -> Option<Desired> {
    let selector = managed_selector(service)?;
    let spec = service.spec.as_ref()?;
    let namespace = service.namespace().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let service_ports = spec.ports.clone().unwrap_or_default();

    // Pods grouped by the ports they resolve to, as Endpoints subsets are.
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<Backend>> = BTreeMap::new();
    for pod in pods {
        if pod.namespace().as_deref() != Some(namespace.as_str()) || !selects(selector, pod) {
            continue;
        }
        let status = pod.status.as_ref();
        let Some(ip) = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
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
        let pod_spec = pod.spec.as_ref();
        let subdomain_matches =
            pod_spec.and_then(|s| s.subdomain.as_deref()) == Some(service.name_any().as_str());
        groups.entry(ports).or_default().push(Backend {
            ip,
            ready: is_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            node: pod_spec.and_then(|s| s.node_name.clone()),
            hostname: pod_spec
                .and_then(|s| s.hostname.clone())
                .filter(|_| subdomain_matches),
            target: ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                namespace: Some(namespace.clone()),
                uid: pod.uid(),
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

/// Why a reconcile failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talking to the API server: {0}")]
    Api(#[from] kube::Error),
}

/// What the reconciler shares.
pub struct Context {
    pub client: Client,
    pub services: Store<Service>,
    pub pods: Store<Pod>,
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Makes the API match [`desired`] for the Service at `key`; a Service
/// that is gone loses the Endpoints and slices the controller made for it.
pub async fn reconcile(key: &Key, ctx: &Context) -> Result<(), Error> {
    let (namespace, name) = key;
    let endpoints_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), namespace);
    let slices_api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let service = ctx.services.get(&ObjectRef::new(name).within(namespace));
    let desired = service
        .as_deref()
        .and_then(|s| desired(s, &ctx.pods.state()));

    let current = endpoints_api.get_opt(name).await?;
    let ours = |e: &Endpoints| {
        e.owner_references()
            .iter()
            .any(|o| o.kind == "Service" && o.controller == Some(true))
    };
    match (&desired, current) {
        (Some(want), current) => {
            let changed = current
                .as_ref()
                .is_none_or(|c| c.subsets != want.endpoints.subsets);
            if changed {
                let mut endpoints = want.endpoints.clone();
                endpoints
                    .annotations_mut()
                    .insert(TRIGGER_TIME.into(), now());
                endpoints_api
                    .patch(name, &apply_params(), &Patch::Apply(&endpoints))
                    .await?;
            }
        }
        // Gone, or no longer selecting: remove what the controller made.
        (None, Some(current)) if service.is_none() || ours(&current) => {
            if ours(&current) {
                delete_ignoring_missing(&endpoints_api, name).await?;
            }
        }
        (None, _) => {}
    }

    let selector = format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGER}");
    let existing = slices_api
        .list(&ListParams::default().labels(&selector))
        .await?;
    let wanted = desired.map(|d| d.slices).unwrap_or_default();
    let wanted_names: HashSet<String> = wanted.iter().map(ResourceExt::name_any).collect();
    for slice in wanted {
        let slice_name = slice.name_any();
        let same = existing.items.iter().any(|e| {
            e.name_any() == slice_name
                && e.endpoints == slice.endpoints
                && e.ports == slice.ports
                && e.address_type == slice.address_type
        });
        if !same {
            let mut slice = slice;
            slice.annotations_mut().insert(TRIGGER_TIME.into(), now());
            slices_api
                .patch(&slice_name, &apply_params(), &Patch::Apply(&slice))
                .await?;
        }
    }
    for stale in existing
        .items
        .iter()
        .filter(|e| !wanted_names.contains(&e.name_any()))
    {
        delete_ignoring_missing(&slices_api, &stale.name_any()).await?;
    }
    Ok(())
}

async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(unless_gone(
        api.delete(name, &DeleteParams::default()).await,
    )?)
}

/// Runs the controller until dropped: reflects Services and Pods, queues
/// the Services each event concerns, and reconciles them one at a time.
pub async fn run(client: Client) {
    let queue = Queue::default();

    let (services, service_events) = cache::reflect::<Service>(&client);
    let (pods, pod_events) = cache::reflect::<Pod>(&client);

    let service_queue = queue.clone();
    let feed_services = service_events.for_each(move |event| {
        if let Ok(service) = event {
            service_queue.add(key_of(&service));
        }
        futures::future::ready(())
    });
    // A pod event concerns every Service of its namespace that selects
    // pods: the one that selects it now, and one that selected it before
    // its labels changed.
    let pod_queue = queue.clone();
    let service_cache = services.clone();
    let feed_pods = pod_events.for_each(move |event| {
        if let Ok(pod) = event {
            let namespace = pod.namespace();
            for service in service_cache.state() {
                if service.namespace() == namespace && managed_selector(&service).is_some() {
                    pod_queue.add(key_of(&*service));
                }
            }
        }
        futures::future::ready(())
    });

    let ctx = Context {
        client,
        services: services.clone(),
        pods: pods.clone(),
    };
    let work = async {
        // Reconciling before both caches are whole would drop endpoints.
        let _ = services.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
        loop {
            let key = queue.next().await;
            if let Err(err) = reconcile(&key, &ctx).await {
                tracing::warn!(namespace = %key.0, service = %key.1, error = %err, "endpoints reconcile failed; retrying");
                queue.add_after(key, RETRY);
            }
        }
    };
    tokio::select! {
        () = feed_services => {}
        () = feed_pods => {}
        () = work => {}
    }
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

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Arc<Pod> {
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
        Arc::new(serde_json::from_value(pod).unwrap())
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
        let mut other = (*pod("other", Some("10.0.3.2"), true)).clone();
        other.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
        let mut unnamed = (*pod("unnamed", Some("10.0.4.2"), true)).clone();
        unnamed.spec.as_mut().unwrap().containers[0]
            .ports
            .as_mut()
            .unwrap()[0]
            .name = None;
        let pods = [pod("no-ip", None, true), Arc::new(other), Arc::new(unnamed)];
        let want = desired(&article_service(), &pods).unwrap();
        assert!(want.endpoints.subsets.is_none());
        assert!(want.slices.is_empty());
    }

    #[test]
    fn terminating_pods_leave_endpoints_but_stay_in_slices_as_terminating() {
        let mut going = (*pod("a", Some("10.0.1.2"), true)).clone();
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let want = desired(&article_service(), &[Arc::new(going)]).unwrap();
        assert!(want.endpoints.subsets.is_none());
        let conditions = want.slices[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );
    }

    #[test]
    fn slices_hold_at_most_a_hundred_endpoints() {
        let pods: Vec<Arc<Pod>> = (0..250)
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

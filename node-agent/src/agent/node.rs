//! The agent's Node and Lease: the Node object it registers (addresses,
//! capacity, nodeInfo, conditions, the log endpoint's port), built as data
//! from [`HostFacts`], and the loops that keep the Lease renewed and the
//! Node's status current.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a Lease is good for without renewal, as the kubelet's.
pub const LEASE_SECONDS: i32 = 40;
/// The version the node reports as its kubelet's.
pub const KUBELET_VERSION: &str = "v1.35.0-knit";

/// What the host tells about itself, read once at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The host name.
    pub hostname: String,
    /// CPUs usable by the agent.
    pub cpus: u64,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os_image: String,
}

impl HostFacts {
    /// Reads the facts from `/proc` and `/etc`; what is missing stays empty.
    pub fn read() -> Self {
        let text = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_string();
        let memory_kib = text("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let os_image = text("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        HostFacts {
            hostname: text("/proc/sys/kernel/hostname"),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u64)
                .unwrap_or(1),
            memory_kib,
            machine_id: text("/etc/machine-id"),
            boot_id: text("/proc/sys/kernel/random/boot_id"),
            kernel: text("/proc/sys/kernel/osrelease"),
            os_image,
        }
    }
}

/// The labels the kubelet puts on its Node.
pub fn node_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch().to_string()),
    ])
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The Node's status: addresses, capacity, nodeInfo, the daemon endpoint
/// and the conditions (`Ready` per `network_ready`; the pressure
/// conditions are not measured and say so as the kubelet's healthy ones
/// do). Conditions keep their transition times from `old` while their
/// status stays.
pub fn node_status(
    name: &str,
    ip: Ipv4Addr,
    port: u16,
    host: &HostFacts,
    network_ready: Result<(), String>,
    old: Option<&NodeStatus>,
    now: &Time,
) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(host.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", host.memory_kib)),
        ),
        ("pods".to_string(), Quantity("110".into())),
        ("ephemeral-storage".to_string(), Quantity("0".into())),
    ]);
    let (ready, reason, message) = match &network_ready {
        Ok(()) => (
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_string(),
        ),
        Err(why) => ("False", "KubeletNotReady", why.clone()),
    };
    let conditions = [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available".to_string(),
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure".to_string(),
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available".to_string(),
        ),
        ("Ready", ready, reason, message),
    ]
    .into_iter()
    .map(|(kind, status, reason, message)| {
        let before = old
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == kind));
        let since = match before {
            Some(c) if c.status == status && c.reason.as_deref() == Some(reason) => {
                c.last_transition_time.clone()
            }
            _ => Some(now.clone()),
        };
        NodeCondition {
            type_: kind.to_string(),
            status: status.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: since,
        }
    })
    .collect();
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.to_string(),
            },
        ]),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: port.into() }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: arch().into(),
            boot_id: host.boot_id.clone(),
            container_runtime_version: format!("knit://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: host.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: host.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: host.os_image.clone(),
            system_uuid: host.machine_id.clone(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// Whether `new` says something `old` does not, heartbeat times aside.
pub fn status_moved(old: Option<&NodeStatus>, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        // Fields others own (volumes, images) do not count.
        NodeStatus {
            addresses: s.addresses,
            allocatable: s.allocatable,
            capacity: s.capacity,
            conditions: s.conditions,
            daemon_endpoints: s.daemon_endpoints,
            node_info: s.node_info,
            ..NodeStatus::default()
        }
    };
    match old {
        None => true,
        Some(old) => serde_json::to_value(strip(old)).ok() != serde_json::to_value(strip(new)).ok(),
    }
}

/// Creates the Node unless it exists (the kubelet's registration).
pub async fn register(client: &Client, name: &str) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    if let Some(node) = api.get_opt(name).await? {
        return Ok(node);
    }
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(node_labels(name)),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(node) => Ok(node),
        Err(kube::Error::Api(status)) if status.code == 409 => api.get(name).await,
        Err(err) => Err(err),
    }
}

/// Writes the Node's status, through the status subresource.
pub async fn write_status(
    client: &Client,
    name: &str,
    status: &NodeStatus,
) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
}

/// Renews the node's Lease (creating it if it is missing) once.
pub async fn renew_lease(
    client: &Client,
    name: &str,
    uid: Option<&str>,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let patch = json!({"spec": {
        "holderIdentity": name,
        "leaseDurationSeconds": LEASE_SECONDS,
        "renewTime": now,
    }});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            // As the kubelet does, the Node owns its Lease, so the Lease
            // goes with a deleted Node.
            let owner = uid.map(|uid| {
                vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.to_string(),
                        uid: uid.to_string(),
                        ..Default::default()
                    },
                ]
            });
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: owner,
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.to_string()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..LeaseSpec::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(err) => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

/// Renews the Lease every `every` forever, logging failures.
pub async fn keep_lease(client: Client, name: String, uid: Option<String>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = renew_lease(&client, &name, uid.as_deref()).await {
            tracing::warn!(node = %name, error = %err, "renewing the node lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            hostname: "h".into(),
            cpus: 4,
            memory_kib: 8_000_000,
            machine_id: "m".into(),
            boot_id: "b".into(),
            kernel: "6.1.0".into(),
            os_image: "Debian".into(),
        }
    }

    fn at(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn status_says_where_and_what_the_node_is() {
        let ip = "10.100.0.2".parse().unwrap();
        let t1 = at("2026-02-01T00:00:00Z");
        let s = node_status(
            "n1",
            ip,
            10250,
            &facts(),
            Err("no podCIDR yet".into()),
            None,
            &t1,
        );
        let addrs = s.addresses.as_ref().unwrap();
        assert_eq!(
            (addrs[0].type_.as_str(), addrs[0].address.as_str()),
            ("InternalIP", "10.100.0.2")
        );
        assert_eq!(addrs[1].address, "n1");
        assert_eq!(s.capacity.as_ref().unwrap()["cpu"].0, "4");
        assert_eq!(s.capacity.as_ref().unwrap()["memory"].0, "8000000Ki");
        assert_eq!(s.capacity.as_ref().unwrap()["pods"].0, "110");
        assert_eq!(
            s.daemon_endpoints
                .as_ref()
                .unwrap()
                .kubelet_endpoint
                .as_ref()
                .unwrap()
                .port,
            10250
        );
        let ready = |s: &NodeStatus| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .unwrap()
        };
        assert_eq!(ready(&s).status, "False");
        assert_eq!(ready(&s).message.as_deref(), Some("no podCIDR yet"));

        let t2 = at("2026-02-01T00:00:10Z");
        let same = node_status(
            "n1",
            ip,
            10250,
            &facts(),
            Err("no podCIDR yet".into()),
            Some(&s),
            &t2,
        );
        assert!(!status_moved(Some(&s), &same), "only heartbeats moved");
        let up = node_status("n1", ip, 10250, &facts(), Ok(()), Some(&s), &t2);
        assert!(status_moved(Some(&s), &up));
        assert_eq!(ready(&up).status, "True");
        assert_eq!(ready(&up).reason.as_deref(), Some("KubeletReady"));
        assert_eq!(ready(&up).last_transition_time, Some(t2));
        let memory = up
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "MemoryPressure")
            .unwrap();
        assert_eq!(
            memory.last_transition_time,
            Some(t1),
            "unchanged conditions keep their time"
        );
    }

    #[test]
    fn labels_name_the_host_and_platform() {
        let labels = node_labels("n1");
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
    }
}

//! The node printer: `Ready`/`NotReady` (and `SchedulingDisabled`), the
//! roles from `node-role.kubernetes.io/<role>` labels, the kubelet version
//! and, wide, the addresses and system info.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use super::{AGE, Column, Context, NAME, Row, typed};

const ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const ROLE_LABEL: &str = "kubernetes.io/role";

pub(super) const COLUMNS: &[Column] = &[
    NAME,
    Column::new("Status", "string", "The status of the node"),
    Column::new("Roles", "string", "The roles of the node"),
    AGE,
    Column::new("Version", "string", "Kubelet Version reported by the node."),
    Column::new("Internal-IP", "string", "List of addresses reachable to the node.").wide(),
    Column::new("External-IP", "string", "List of addresses reachable to the node.").wide(),
    Column::new("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).").wide(),
    Column::new("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).").wide(),
    Column::new("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).").wide(),
];

pub(super) fn row(object: &Value, context: &Context) -> Option<Row> {
    let node: Node = typed(object)?;
    let status = node.status.unwrap_or_default();
    let mut states: Vec<&str> = match status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .rfind(|c| c.type_ == "Ready")
    {
        Some(ready) if ready.status == "True" => vec!["Ready"],
        Some(_) => vec!["NotReady"],
        None => vec!["Unknown"],
    };
    if node.spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        states.push("SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    for (key, value) in node.metadata.labels.iter().flatten() {
        match key.strip_prefix(ROLE_PREFIX) {
            Some(role) if !role.is_empty() => {
                roles.insert(role.to_string());
            }
            _ if key == ROLE_LABEL && !value.is_empty() => {
                roles.insert(value.clone());
            }
            _ => {}
        }
    }
    let roles = super::or_none(roles.into_iter().collect::<Vec<_>>().join(","));
    let address = |kind: &str| {
        status
            .addresses
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|a| a.type_ == kind)
            .map_or_else(|| "<none>".to_string(), |a| a.address.clone())
    };
    let info = status.node_info.clone().unwrap_or_default();
    let known = |s: String| {
        if s.is_empty() {
            "<unknown>".to_string()
        } else {
            s
        }
    };
    Some(Row::new(vec![
        Value::from(node.metadata.name.unwrap_or_default()),
        Value::from(states.join(",")),
        Value::from(roles),
        context.age(object),
        Value::from(info.kubelet_version.clone()),
        Value::from(address("InternalIP")),
        Value::from(address("ExternalIP")),
        Value::from(known(info.os_image)),
        Value::from(known(info.kernel_version)),
        Value::from(known(info.container_runtime_version)),
    ]))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cells;
    use serde_json::json;

    #[test]
    fn a_ready_worker_node() {
        let node = json!({
            "metadata": {"name": "node-1", "creationTimestamp": "2024-04-20T12:00:00Z",
                         "labels": {"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/edge": "", "kubernetes.io/hostname": "node-1"}},
            "spec": {"podCIDR": "10.0.1.0/24"},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.56.11"}, {"type": "Hostname", "address": "node-1"}],
                "nodeInfo": {"kubeletVersion": "v1.35.0-knit", "osImage": "Debian GNU/Linux 13", "kernelVersion": "6.12.0",
                             "containerRuntimeVersion": "knit://0.1", "architecture": "amd64", "bootID": "", "kubeProxyVersion": "",
                             "machineID": "", "operatingSystem": "linux", "systemUUID": ""}
            }
        });
        assert_eq!(
            cells("Node", &node),
            [
                "node-1",
                "Ready",
                "edge,worker",
                "11d",
                "v1.35.0-knit",
                "192.168.56.11",
                "<none>",
                "Debian GNU/Linux 13",
                "6.12.0",
                "knit://0.1"
            ]
        );
    }

    #[test]
    fn not_ready_cordoned_and_unknown_nodes() {
        let mut node = json!({"metadata": {"name": "n", "labels": {"kubernetes.io/role": "master"}},
                              "spec": {"unschedulable": true},
                              "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let row = cells("Node", &node);
        assert_eq!(row[1], "NotReady,SchedulingDisabled");
        assert_eq!(row[2], "master");
        assert_eq!(row[7], "<unknown>");
        node["status"] = json!({});
        node["spec"] = json!({});
        assert_eq!(cells("Node", &node)[1], "Unknown");
    }
}

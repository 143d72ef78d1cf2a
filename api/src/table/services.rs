//! Printers of the service family: Services (`TYPE CLUSTER-IP EXTERNAL-IP
//! PORT(S)`), Endpoints (`10.0.1.2:8080,... + N more...`) and
//! EndpointSlices.

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use super::{AGE, Column, Context, NAME, Row, format_labels, join_with_more, typed};

/// Endpoint lists show this many entries, then `+ N more...`.
const SHOWN: usize = 3;

/// Load-balancer addresses are cut to this many bytes outside wide output.
const LOAD_BALANCER_WIDTH: usize = 16;

pub(super) const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer.",
    ),
    Column::new(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    Column::new(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    Column::new(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    Column::new(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
    )
    .wide(),
];

pub(super) const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share.",
    ),
    AGE,
];

pub(super) const SLICE_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type.",
    ),
    Column::new(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    Column::new(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

pub(super) fn service_row(object: &Value, context: &Context) -> Option<Row> {
    let service: Service = typed(object)?;
    let spec = service.spec.unwrap_or_default();
    let kind = spec.type_.clone().unwrap_or_default();
    let cluster_ip = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first().cloned())
        .or(spec.cluster_ip.clone())
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "<none>".into());
    let external_ips = spec.external_ips.clone().unwrap_or_default();
    let load_balancer: Vec<String> = service
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip.filter(|ip| !ip.is_empty()).or(i.hostname))
        .filter(|a| !a.is_empty())
        .collect();
    let external = external_ip(
        &kind,
        &external_ips,
        &load_balancer,
        &spec.external_name,
        context.wide,
    );
    let ports: Vec<String> = spec
        .ports
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port {
                Some(node_port) if node_port > 0 => format!("{}:{node_port}/{protocol}", p.port),
                _ => format!("{}/{protocol}", p.port),
            }
        })
        .collect();
    let selector = spec.selector.unwrap_or_default();
    Some(Row::new(vec![
        Value::from(service.metadata.name.unwrap_or_default()),
        Value::from(kind),
        Value::from(cluster_ip),
        Value::from(external),
        Value::from(super::or_none(ports.join(","))),
        context.age(object),
        Value::from(format_labels(&selector)),
    ]))
}

/// The EXTERNAL-IP cell: the external IPs, a load balancer's addresses
/// (`<pending>` until it has one), or the external name.
fn external_ip(
    kind: &str,
    external_ips: &[String],
    load_balancer: &[String],
    external_name: &Option<String>,
    wide: bool,
) -> String {
    match kind {
        "ClusterIP" | "NodePort" => super::or_none(external_ips.join(",")),
        "LoadBalancer" => {
            let mut addresses: Vec<String> = Vec::new();
            for address in load_balancer {
                if !addresses.contains(address) {
                    addresses.push(address.clone());
                }
            }
            let mut joined = addresses.join(",");
            if !wide && joined.len() > LOAD_BALANCER_WIDTH {
                joined.truncate(LOAD_BALANCER_WIDTH - 3);
                joined.push_str("...");
            }
            match (joined.is_empty(), external_ips.is_empty()) {
                (true, true) => "<pending>".into(),
                (false, true) => joined,
                (true, false) => external_ips.join(","),
                (false, false) => format!("{joined},{}", external_ips.join(",")),
            }
        }
        "ExternalName" => external_name.clone().unwrap_or_default(),
        _ => "<unknown>".into(),
    }
}

pub(super) fn endpoints_row(object: &Value, context: &Context) -> Option<Row> {
    let endpoints: Endpoints = typed(object)?;
    let subsets = endpoints.subsets.unwrap_or_default();
    let text = if subsets.is_empty() {
        "<none>".to_string()
    } else {
        let mut list = Vec::new();
        let mut total = 0;
        for subset in &subsets {
            let addresses = subset.addresses.as_deref().unwrap_or_default();
            let ports = subset.ports.as_deref().unwrap_or_default();
            if ports.is_empty() {
                // Headless services may have no ports: the bare IPs.
                total += addresses.len();
                list.extend(addresses.iter().take(SHOWN + 1).map(|a| a.ip.clone()));
                continue;
            }
            for port in ports {
                total += addresses.len();
                list.extend(
                    addresses
                        .iter()
                        .take(SHOWN + 1)
                        .map(|a| join_host_port(&a.ip, port.port)),
                );
            }
        }
        join_with_more(&list, total, SHOWN)
    };
    Some(Row::new(vec![
        Value::from(endpoints.metadata.name.unwrap_or_default()),
        Value::from(text),
        context.age(object),
    ]))
}

/// `10.0.1.2:8080`, `[fd00::2]:8080`.
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(super) fn slice_row(object: &Value, context: &Context) -> Option<Row> {
    let slice: EndpointSlice = typed(object)?;
    let ports: Vec<String> = slice
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| match (p.port, p.name) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name,
            (None, None) => "*".into(),
        })
        .collect();
    let addresses: Vec<String> = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    Some(Row::new(vec![
        Value::from(slice.metadata.name.unwrap_or_default()),
        Value::from(slice.address_type),
        Value::from(unset_if_empty(join_with_more(&ports, ports.len(), SHOWN))),
        Value::from(unset_if_empty(join_with_more(
            &addresses,
            addresses.len(),
            SHOWN,
        ))),
        context.age(object),
    ]))
}

fn unset_if_empty(text: String) -> String {
    if text.is_empty() {
        "<unset>".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cells;
    use serde_json::json;

    #[test]
    fn the_articles_service_prints_its_cluster_ip_and_port() {
        let service = json!({
            "metadata": {"name": "service-test", "namespace": "default", "creationTimestamp": "2024-05-01T09:00:00Z"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.3.241.152", "clusterIPs": ["10.3.241.152"],
                     "selector": {"app": "service_test_pod"},
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        });
        assert_eq!(
            cells("Service", &service),
            [
                "service-test",
                "ClusterIP",
                "10.3.241.152",
                "<none>",
                "80/TCP",
                "3h",
                "app=service_test_pod"
            ]
        );
    }

    #[test]
    fn node_ports_and_load_balancers() {
        let mut service = json!({
            "metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "clusterIPs": ["10.3.240.20"],
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}
        });
        let row = cells("Service", &service);
        assert_eq!(row[3], "<pending>");
        assert_eq!(row[4], "80:30080/TCP,53/UDP");
        assert_eq!(row[6], "<none>");
        service["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"hostname": "lb.example"}]}});
        assert_eq!(cells("Service", &service)[3], "192.0.2.10,lb.example");
        service["spec"]["externalIPs"] = json!(["198.51.100.1"]);
        assert_eq!(
            cells("Service", &service)[3],
            "192.0.2.10,lb.example,198.51.100.1"
        );

        let external = json!({"metadata": {"name": "db"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        let row = cells("Service", &external);
        assert_eq!(
            (row[2].as_str(), row[3].as_str(), row[4].as_str()),
            (Some("<none>"), Some("db.example.com"), Some("<none>"))
        );
    }

    #[test]
    fn endpoints_list_ip_and_port_pairs() {
        let endpoints = json!({
            "metadata": {"name": "service-test", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "subsets": [{"addresses": [{"ip": "10.0.1.2"}, {"ip": "10.0.2.2"}], "ports": [{"port": 8080, "protocol": "TCP"}]}]
        });
        assert_eq!(
            cells("Endpoints", &endpoints),
            ["service-test", "10.0.1.2:8080,10.0.2.2:8080", "60s"]
        );

        let empty = json!({"metadata": {"name": "none"}});
        assert_eq!(cells("Endpoints", &empty)[1], "<none>");

        let many = json!({
            "metadata": {"name": "many"},
            "subsets": [{"addresses": [{"ip": "10.0.1.2"}, {"ip": "10.0.1.3"}, {"ip": "10.0.2.2"}, {"ip": "10.0.2.3"}, {"ip": "fd00::5"}],
                         "ports": [{"port": 8080}]}]
        });
        assert_eq!(
            cells("Endpoints", &many)[1],
            "10.0.1.2:8080,10.0.1.3:8080,10.0.2.2:8080 + 2 more..."
        );
        let headless =
            json!({"metadata": {"name": "h"}, "subsets": [{"addresses": [{"ip": "fd00::5"}]}]});
        assert_eq!(cells("Endpoints", &headless)[1], "fd00::5");
        let v6 = json!({"metadata": {"name": "h"}, "subsets": [{"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 53}]}]});
        assert_eq!(cells("Endpoints", &v6)[1], "[fd00::5]:53");
    }

    #[test]
    fn endpoint_slices_list_ports_and_addresses() {
        let slice = json!({
            "metadata": {"name": "service-test-abcde"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.1.2"]}, {"addresses": ["10.0.2.2"]}]
        });
        let row = cells("EndpointSlice", &slice);
        assert_eq!(row[1..4], ["IPv4", "8080", "10.0.1.2,10.0.2.2"]);
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4", "endpoints": []});
        assert_eq!(cells("EndpointSlice", &empty)[2..4], ["<unset>", "<unset>"]);
    }
}

//! Printers of Ingresses (`CLASS HOSTS ADDRESS PORTS`) and IngressClasses
//! (`CONTROLLER PARAMETERS`).

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::Value;

use super::{AGE, Column, Context, NAME, Row, typed};

/// Hosts shown before `+ N more...`.
const SHOWN_HOSTS: usize = 3;

pub(super) const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    Column::new(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    Column::new(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    Column::new("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

pub(super) const CLASS_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    Column::new(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

pub(super) fn ingress_row(object: &Value, context: &Context) -> Option<Row> {
    let ingress: Ingress = typed(object)?;
    let spec = ingress.spec.unwrap_or_default();
    let class = spec
        .ingress_class_name
        .clone()
        .unwrap_or_else(|| "<none>".into());
    let rules = spec.rules.unwrap_or_default();
    // Rules without a host are left out, but counted in `+ N more...`.
    let hosts: Vec<&str> = rules
        .iter()
        .take(SHOWN_HOSTS)
        .filter_map(|r| r.host.as_deref().filter(|h| !h.is_empty()))
        .collect();
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if rules.len() > SHOWN_HOSTS {
        format!(
            "{} + {} more...",
            hosts.join(","),
            rules.len() - SHOWN_HOSTS
        )
    } else {
        hosts.join(",")
    };
    let mut addresses: Vec<String> = Vec::new();
    let ingress_points = ingress
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default();
    for point in ingress_points {
        let address = point.ip.filter(|ip| !ip.is_empty()).or(point.hostname);
        if let Some(address) = address.filter(|a| !a.is_empty())
            && !addresses.contains(&address)
        {
            addresses.push(address);
        }
    }
    let ports = if spec.tls.unwrap_or_default().is_empty() {
        "80"
    } else {
        "80, 443"
    };
    Some(Row::new(vec![
        Value::from(ingress.metadata.name.unwrap_or_default()),
        Value::from(class),
        Value::from(hosts),
        Value::from(addresses.join(",")),
        Value::from(ports),
        context.age(object),
    ]))
}

pub(super) fn class_row(object: &Value, context: &Context) -> Option<Row> {
    let class: IngressClass = typed(object)?;
    let spec = class.spec.unwrap_or_default();
    let parameters = match spec.parameters {
        Some(p) => match p.api_group {
            Some(group) => format!("{}.{group}/{}", p.kind, p.name),
            None => format!("{}/{}", p.kind, p.name),
        },
        None => "<none>".into(),
    };
    Some(Row::new(vec![
        Value::from(class.metadata.name.unwrap_or_default()),
        Value::from(spec.controller.unwrap_or_default()),
        Value::from(parameters),
        context.age(object),
    ]))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cells;
    use serde_json::json;

    #[test]
    fn ingresses_show_class_hosts_address_and_ports() {
        let ingress = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"ingressClassName": "knit",
                     "rules": [{"host": "a.example"}, {"host": "b.example"}],
                     "tls": [{"hosts": ["a.example"], "secretName": "tls"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.11"}, {"ip": "192.168.56.11"}]}}
        });
        assert_eq!(
            cells("Ingress", &ingress),
            [
                "web",
                "knit",
                "a.example,b.example",
                "192.168.56.11",
                "80, 443",
                "60m"
            ]
        );
        let bare = json!({"metadata": {"name": "any"}, "spec": {"defaultBackend": {"service": {"name": "s", "port": {"number": 80}}}}});
        assert_eq!(cells("Ingress", &bare)[1..5], ["<none>", "*", "", "80"]);
        let many = json!({"metadata": {"name": "m"}, "spec": {"rules": [
            {"host": "a"}, {}, {"host": "c"}, {"host": "d"}, {"host": "e"}]}});
        assert_eq!(cells("Ingress", &many)[2], "a,c + 2 more...");
    }

    #[test]
    fn ingress_classes_show_controller_and_parameters() {
        let class = json!({"metadata": {"name": "knit"},
                           "spec": {"controller": "knit.dev/ingress",
                                    "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
        assert_eq!(
            cells("IngressClass", &class)[..3],
            [
                "knit",
                "knit.dev/ingress",
                "IngressParameters.k8s.example.com/external-lb"
            ]
        );
        let plain = json!({"metadata": {"name": "p"}, "spec": {"controller": "c"}});
        assert_eq!(cells("IngressClass", &plain)[2], "<none>");
    }
}

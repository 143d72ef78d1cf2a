//! `knit describe`: an object as a readable report — name, namespace,
//! labels, annotations, then its spec and status as indented `key: value`
//! lines, and the Events that involve it. Services add the addresses of
//! their Endpoints, pods a summary of their containers; everything else
//! is described generically.

use std::fmt::Write as _;

use serde_json::Value;

use super::client::{ClientError, query};
use super::discovery::ApiResource;
use super::print::{self, age};
use super::{DescribeArgs, Outcome, Result, Session, split_resource_args};

/// Runs `knit describe`.
pub async fn run(args: &DescribeArgs) -> Result<Outcome> {
    let mut session = Session::open(&args.connection).await?;
    let mut outcome = Outcome::Ok;
    let mut first = true;
    for (kind, names) in split_resource_args(&args.resource, &args.names)? {
        let resource = session.resolve(&kind).await?;
        let namespace = resource.namespaced.then_some(session.namespace.as_str());
        let objects = if names.is_empty() {
            let list = session
                .client
                .get_json(&resource.path(namespace, None), "application/json")
                .await?;
            list["items"].as_array().cloned().unwrap_or_default()
        } else {
            let mut objects = Vec::new();
            for name in &names {
                match session
                    .client
                    .get_json(&resource.path(namespace, Some(name)), "application/json")
                    .await
                {
                    Ok(object) => objects.push(object),
                    Err(ClientError::Api(failure)) => {
                        eprintln!("{failure}");
                        outcome = Outcome::Failed;
                    }
                    Err(other) => return Err(other.into()),
                }
            }
            objects
        };
        for object in objects {
            if !first {
                println!("\n");
            }
            first = false;
            let extras = Extras::fetch(&session, &resource, &object).await?;
            print!(
                "{}",
                describe(&resource, &object, &extras, jiff::Timestamp::now())
            );
        }
    }
    Ok(outcome)
}

/// What a description needs besides the object itself.
#[derive(Debug)]
pub struct Extras {
    /// The Events about the object, or why they could not be listed.
    pub events: Result<Vec<Value>, String>,
    /// For a Service: its Endpoints object, if there is one.
    pub endpoints: Option<Value>,
}

impl Default for Extras {
    fn default() -> Self {
        Extras {
            events: Ok(Vec::new()),
            endpoints: None,
        }
    }
}

impl Extras {
    async fn fetch(session: &Session, resource: &ApiResource, object: &Value) -> Result<Self> {
        let metadata = &object["metadata"];
        let name = metadata["name"].as_str().unwrap_or_default();
        let namespace = metadata["namespace"].as_str().unwrap_or_default();
        let uid = metadata["uid"].as_str().unwrap_or_default();
        let mut selector =
            format!("involvedObject.name={name},involvedObject.namespace={namespace}");
        if !uid.is_empty() {
            selector.push_str(&format!(",involvedObject.uid={uid}"));
        }
        // Events of cluster-scoped objects may be in any namespace.
        let events_path = if namespace.is_empty() {
            "/api/v1/events".to_string()
        } else {
            format!("/api/v1/namespaces/{namespace}/events")
        };
        let path = format!("{events_path}{}", query(&[("fieldSelector", selector)]));
        let events = match session.client.get_json(&path, "application/json").await {
            Ok(list) => Ok(list["items"].as_array().cloned().unwrap_or_default()),
            Err(ClientError::Api(failure)) => Err(failure.message()),
            Err(other) => return Err(other.into()),
        };
        let endpoints = if resource.group.is_empty() && resource.kind == "Service" {
            let path = format!("/api/v1/namespaces/{namespace}/endpoints/{name}");
            match session.client.get_json(&path, "application/json").await {
                Ok(endpoints) => Some(endpoints),
                Err(ClientError::Api(_)) => None,
                Err(other) => return Err(other.into()),
            }
        } else {
            None
        };
        Ok(Extras { events, endpoints })
    }
}

/// The width of the label column of top-level lines.
const LABEL_WIDTH: usize = 14;

/// The width of the label column of a container's lines.
const CONTAINER_LABEL_WIDTH: usize = 16;

fn line(out: &mut String, indent: usize, label: &str, value: &str) {
    line_in(
        out,
        indent,
        LABEL_WIDTH.saturating_sub(indent),
        label,
        value,
    );
}

fn line_in(out: &mut String, indent: usize, width: usize, label: &str, value: &str) {
    let pad = width.max(label.len() + 3);
    let _ = writeln!(out, "{:indent$}{:<pad$}{value}", "", format!("{label}:"));
}

/// `k=v` pairs one per line, aligned under the first; `<none>` if empty.
fn map_lines(out: &mut String, label: &str, map: &Value, separator: &str) {
    let pairs: Vec<String> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            format!(
                "{k}{separator}{}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            )
        })
        .collect();
    match pairs.split_first() {
        None => line(out, 0, label, "<none>"),
        Some((first, rest)) => {
            line(out, 0, label, first);
            for pair in rest {
                let _ = writeln!(out, "{:LABEL_WIDTH$}{pair}", "");
            }
        }
    }
}

/// Nested JSON as indented `key: value` lines.
fn fields(out: &mut String, indent: usize, value: &Value) {
    match value {
        Value::Object(map) => {
            // Values of sibling scalars line up, as in kubectl's describe.
            let width = map
                .iter()
                .filter(|(_, v)| !is_nested(v))
                .map(|(k, _)| k.chars().count() + 1)
                .max()
                .unwrap_or(0);
            for (key, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{:indent$}{key}:", "");
                        fields(out, indent + 2, v);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{:indent$}{key}:", "");
                        fields(out, indent + 2, v);
                    }
                    scalar => {
                        let label = format!("{key}:");
                        let _ = writeln!(
                            out,
                            "{:indent$}{label:<width$}  {}",
                            "",
                            scalar_text(scalar)
                        );
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        let mut nested = String::new();
                        fields(&mut nested, 0, item);
                        for (i, text) in nested.lines().enumerate() {
                            let marker = if i == 0 { "- " } else { "  " };
                            let _ = writeln!(out, "{:indent$}{marker}{text}", "");
                        }
                    }
                    scalar => {
                        let _ = writeln!(out, "{:indent$}- {}", "", scalar_text(scalar));
                    }
                }
            }
        }
        scalar => {
            let _ = writeln!(out, "{:indent$}{}", "", scalar_text(scalar));
        }
    }
}

fn is_nested(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// `10.0.1.2:8080,10.0.2.2:8080` from an Endpoints object's subsets.
pub fn endpoint_addresses(endpoints: &Value) -> String {
    let mut addresses = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<String> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64().map(|p| p.to_string()))
            .collect();
        for address in subset["addresses"].as_array().into_iter().flatten() {
            let Some(ip) = address["ip"].as_str() else {
                continue;
            };
            if ports.is_empty() {
                addresses.push(ip.to_string());
            }
            for port in &ports {
                addresses.push(format!("{ip}:{port}"));
            }
        }
    }
    if addresses.is_empty() {
        "<none>".into()
    } else {
        addresses.join(",")
    }
}

/// The state of one container status: `Running (since ...)`, `Waiting
/// (reason)`, `Terminated (reason, exit code N)`.
fn container_state(state: &Value) -> String {
    if let Some(running) = state.get("running") {
        return format!(
            "Running (started {})",
            running["startedAt"].as_str().unwrap_or("?")
        );
    }
    if let Some(waiting) = state.get("waiting") {
        return format!(
            "Waiting ({})",
            waiting["reason"].as_str().unwrap_or("unknown")
        );
    }
    if let Some(done) = state.get("terminated") {
        return format!(
            "Terminated ({}, exit code {})",
            done["reason"].as_str().unwrap_or("unknown"),
            done["exitCode"]
        );
    }
    "<unknown>".into()
}

fn containers(out: &mut String, pod: &Value) {
    let statuses = pod["status"]["containerStatuses"].as_array();
    let list = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "Containers:");
    for container in &list {
        let name = container["name"].as_str().unwrap_or_default();
        let _ = writeln!(out, "  {name}:");
        line_in(
            out,
            4,
            CONTAINER_LABEL_WIDTH,
            "Image",
            container["image"].as_str().unwrap_or("<none>"),
        );
        let ports: Vec<String> = container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["containerPort"],
                    p["protocol"].as_str().unwrap_or("TCP")
                )
            })
            .collect();
        line_in(
            out,
            4,
            CONTAINER_LABEL_WIDTH,
            "Ports",
            &if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(", ")
            },
        );
        let status = statuses
            .into_iter()
            .flatten()
            .find(|s| s["name"].as_str() == Some(name));
        match status {
            Some(status) => {
                line_in(
                    out,
                    4,
                    CONTAINER_LABEL_WIDTH,
                    "State",
                    &container_state(&status["state"]),
                );
                line_in(
                    out,
                    4,
                    CONTAINER_LABEL_WIDTH,
                    "Ready",
                    &status["ready"].as_bool().unwrap_or(false).to_string(),
                );
                line_in(
                    out,
                    4,
                    CONTAINER_LABEL_WIDTH,
                    "Restart Count",
                    &status["restartCount"].as_i64().unwrap_or(0).to_string(),
                );
            }
            None => line_in(out, 4, CONTAINER_LABEL_WIDTH, "State", "<not reported yet>"),
        }
    }
}

fn events(out: &mut String, events: &Result<Vec<Value>, String>, now: jiff::Timestamp) {
    let events = match events {
        Err(why) => {
            line(out, 0, "Events", &format!("<unable to list: {why}>"));
            return;
        }
        Ok(events) if events.is_empty() => {
            line(out, 0, "Events", "<none>");
            return;
        }
        Ok(events) => events,
    };
    let mut rows = vec![
        vec![
            "Type".into(),
            "Reason".into(),
            "Age".into(),
            "From".into(),
            "Message".into(),
        ],
        vec![
            "----".into(),
            "------".into(),
            "----".into(),
            "----".into(),
            "-------".into(),
        ],
    ];
    for event in events {
        let last = [
            &event["lastTimestamp"],
            &event["eventTime"],
            &event["metadata"]["creationTimestamp"],
        ]
        .into_iter()
        .find(|t| t.is_string())
        .cloned()
        .unwrap_or(Value::Null);
        let mut when = age(&last, now);
        let count = event["count"].as_i64().unwrap_or(1);
        if count > 1 {
            when = format!(
                "{when} (x{count} over {})",
                age(&event["firstTimestamp"], now)
            );
        }
        let from = event["source"]["component"]
            .as_str()
            .or_else(|| event["reportingComponent"].as_str())
            .unwrap_or_default();
        rows.push(vec![
            event["type"].as_str().unwrap_or_default().to_string(),
            event["reason"].as_str().unwrap_or_default().to_string(),
            when,
            from.to_string(),
            event["message"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_string(),
        ]);
    }
    let _ = writeln!(out, "Events:");
    for text in print::align(&rows).lines() {
        let _ = writeln!(out, "  {text}");
    }
}

/// The whole description of `object`.
pub fn describe(
    resource: &ApiResource,
    object: &Value,
    extras: &Extras,
    now: jiff::Timestamp,
) -> String {
    let mut out = String::new();
    let metadata = &object["metadata"];
    line(
        &mut out,
        0,
        "Name",
        metadata["name"].as_str().unwrap_or_default(),
    );
    if resource.namespaced {
        line(
            &mut out,
            0,
            "Namespace",
            metadata["namespace"].as_str().unwrap_or_default(),
        );
    }
    map_lines(&mut out, "Labels", &metadata["labels"], "=");
    map_lines(&mut out, "Annotations", &metadata["annotations"], ": ");
    if let Some(created) = metadata["creationTimestamp"].as_str() {
        line(
            &mut out,
            0,
            "Created",
            &format!(
                "{created} ({} ago)",
                age(&metadata["creationTimestamp"], now)
            ),
        );
    }
    let mut spec = object["spec"].clone();
    match (resource.group.as_str(), resource.kind.as_str()) {
        ("", "Service") => {
            let spec = &object["spec"];
            map_lines(&mut out, "Selector", &spec["selector"], "=");
            line(
                &mut out,
                0,
                "Type",
                spec["type"].as_str().unwrap_or("ClusterIP"),
            );
            line(
                &mut out,
                0,
                "IP",
                spec["clusterIP"].as_str().unwrap_or("<none>"),
            );
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                .collect();
            line(
                &mut out,
                0,
                "Port(s)",
                &if ports.is_empty() {
                    "<none>".into()
                } else {
                    ports.join(", ")
                },
            );
            let endpoints = extras
                .endpoints
                .as_ref()
                .map_or_else(|| "<none>".to_string(), endpoint_addresses);
            line(&mut out, 0, "Endpoints", &endpoints);
        }
        ("", "Pod") => {
            line(
                &mut out,
                0,
                "Node",
                object["spec"]["nodeName"].as_str().unwrap_or("<none>"),
            );
            line(
                &mut out,
                0,
                "Status",
                object["status"]["phase"].as_str().unwrap_or("<unknown>"),
            );
            line(
                &mut out,
                0,
                "IP",
                object["status"]["podIP"].as_str().unwrap_or("<none>"),
            );
            containers(&mut out, object);
            // The containers were just summarised; keep the rest of the spec.
            if let Some(map) = spec.as_object_mut() {
                map.remove("containers");
            }
        }
        _ => {}
    }
    for (label, value) in [
        ("Spec", &spec),
        ("Status", &object["status"]),
        ("Data", &object["data"]),
    ] {
        if value.as_object().is_some_and(|m| !m.is_empty()) {
            let _ = writeln!(out, "{label}:");
            fields(&mut out, 2, value);
        }
    }
    events(&mut out, &extras.events, now);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn core(kind: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: String::new(),
            version: "v1".into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            short_names: vec![],
            namespaced: true,
        }
    }

    #[test]
    fn service_description_has_endpoints_and_events() {
        let now: jiff::Timestamp = "2025-01-01T01:00:00Z".parse().unwrap();
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                         "creationTimestamp": "2025-01-01T00:00:00Z",
                         "labels": {"app": "web", "tier": "front"}},
            "spec": {"selector": {"app": "web"}, "type": "ClusterIP", "clusterIP": "10.3.240.17",
                     "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]},
            "status": {"loadBalancer": {}}
        });
        let extras = Extras {
            endpoints: Some(json!({"subsets": [
                {"addresses": [{"ip": "10.0.1.2"}, {"ip": "10.0.2.2"}], "ports": [{"port": 8080}]}
            ]})),
            events: Ok(vec![json!({
                "type": "Normal", "reason": "Synced", "message": "ok\n", "count": 3,
                "firstTimestamp": "2025-01-01T00:50:00Z", "lastTimestamp": "2025-01-01T00:59:00Z",
                "source": {"component": "endpoints-controller"}
            })]),
        };
        let text = describe(&core("Service", "services"), &service, &extras, now);
        let expected_head = "Name:         web\nNamespace:    default\nLabels:       app=web\n              tier=front\nAnnotations:  <none>\n";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(
            text.contains("Endpoints:    10.0.1.2:8080,10.0.2.2:8080\n"),
            "{text}"
        );
        assert!(text.contains("IP:           10.3.240.17\n"), "{text}");
        assert!(
            text.contains("Spec:\n  clusterIP:  10.3.240.17\n  ports:\n    - port:        80\n      protocol:    TCP\n      targetPort:  8080\n  selector:\n    app:  web\n  type:       ClusterIP\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Events:\n  Type     Reason   Age                 From                   Message\n  \
                            ----     ------   ----                ----                   -------\n  \
                            Normal   Synced   60s (x3 over 10m)   endpoints-controller   ok\n"),
            "{text}"
        );
    }

    #[test]
    fn pod_description_lists_containers() {
        let now: jiff::Timestamp = "2025-01-01T01:00:00Z".parse().unwrap();
        let pod = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "node-1", "containers": [
                {"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "side", "image": "busybox"}
            ]},
            "status": {"phase": "Running", "podIP": "10.0.1.5", "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 2, "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}
            ]}
        });
        let text = describe(&core("Pod", "pods"), &pod, &Extras::default(), now);
        assert!(
            text.contains("Node:         node-1\nStatus:       Running\nIP:           10.0.1.5\n"),
            "{text}"
        );
        assert!(
            text.contains("  app:\n    Image:          nginx:1.27\n    Ports:          80/TCP\n    State:          Running (started 2025-01-01T00:00:00Z)\n    Ready:          true\n    Restart Count:  2\n"),
            "{text}"
        );
        assert!(
            text.contains("  side:\n    Image:          busybox\n    Ports:          <none>\n    State:          <not reported yet>\n"),
            "{text}"
        );
        assert!(!text.contains("containers:"), "{text}");
        assert!(text.ends_with("Events:       <none>\n"), "{text}");
    }

    #[test]
    fn endpoints_without_addresses_are_none() {
        assert_eq!(endpoint_addresses(&json!({})), "<none>");
        assert_eq!(
            endpoint_addresses(
                &json!({"subsets": [{"addresses": [{"ip": "10.0.1.2"}], "ports": [{"port": 80}, {"port": 443}]}]})
            ),
            "10.0.1.2:80,10.0.1.2:443"
        );
    }
}

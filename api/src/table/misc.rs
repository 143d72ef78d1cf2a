//! Printers of the small kinds: Namespaces, ConfigMaps, Secrets, Leases,
//! core Events (`LAST SEEN TYPE REASON OBJECT MESSAGE`), and the default
//! table (`Name`, `Created At`) of a kind without a printer.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use serde_json::Value;

use super::{AGE, AGE_DOC, Column, Context, NAME, Row, parse_time, since, typed};

pub(super) const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Status", "string", "The status of the namespace"),
    AGE,
];

pub(super) const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Data",
        "string",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
    ),
    AGE,
];

pub(super) const SECRET_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
    ),
    Column::new(
        "Data",
        "string",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
    ),
    AGE,
];

pub(super) const LEASE_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
    ),
    AGE,
];

pub(super) const EVENT_COLUMNS: &[Column] = &[
    Column::new("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    Column::new("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    Column::new("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    Column::new("Object", "string", "The object that this event is about."),
    Column::new("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].").wide(),
    Column::new("Source", "string", "The component reporting this event. Should be a short machine understandable string.").wide(),
    Column::new("Message", "string", "A human-readable description of the status of this operation."),
    Column::new("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)").wide(),
    Column::new("Count", "string", "The number of times this event has occurred.").wide(),
    NAME.wide(),
];

pub(super) const DEFAULT_COLUMNS: &[Column] = &[NAME, Column::new("Created At", "date", AGE_DOC)];

pub(super) fn namespace_row(object: &Value, context: &Context) -> Option<Row> {
    let namespace: Namespace = typed(object)?;
    let phase = namespace.status.and_then(|s| s.phase).unwrap_or_default();
    Some(Row::new(vec![
        Value::from(namespace.metadata.name.unwrap_or_default()),
        Value::from(phase),
        context.age(object),
    ]))
}

pub(super) fn config_map_row(object: &Value, context: &Context) -> Option<Row> {
    let config_map: ConfigMap = typed(object)?;
    let count =
        config_map.data.map_or(0, |d| d.len()) + config_map.binary_data.map_or(0, |d| d.len());
    Some(Row::new(vec![
        Value::from(config_map.metadata.name.unwrap_or_default()),
        Value::from(count),
        context.age(object),
    ]))
}

pub(super) fn secret_row(object: &Value, context: &Context) -> Option<Row> {
    let secret: Secret = typed(object)?;
    Some(Row::new(vec![
        Value::from(secret.metadata.name.unwrap_or_default()),
        Value::from(secret.type_.unwrap_or_default()),
        Value::from(secret.data.map_or(0, |d| d.len())),
        context.age(object),
    ]))
}

pub(super) fn lease_row(object: &Value, context: &Context) -> Option<Row> {
    let lease: Lease = typed(object)?;
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    Some(Row::new(vec![
        Value::from(lease.metadata.name.unwrap_or_default()),
        Value::from(holder),
        context.age(object),
    ]))
}

pub(super) fn event_row(object: &Value, context: &Context) -> Option<Row> {
    let event: Event = typed(object)?;
    let ago = |t: Option<k8s_openapi::jiff::Timestamp>| since(t, context.now);
    // Events of the newer API have an eventTime instead of timestamps, and
    // a series instead of a count.
    let first = match &event.first_timestamp {
        Some(t) => ago(Some(t.0)),
        None => ago(event.event_time.as_ref().map(|t| t.0)),
    };
    let mut last = match &event.last_timestamp {
        Some(t) => ago(Some(t.0)),
        None => first.clone(),
    };
    let mut count = event.count.unwrap_or(0);
    if let Some(series) = &event.series {
        last = ago(series.last_observed_time.as_ref().map(|t| t.0));
        count = series.count.unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let involved = &event.involved_object;
    let kind = involved.kind.clone().unwrap_or_default().to_lowercase();
    let target = match involved.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => format!("{kind}/{name}"),
        None => kind,
    };
    let source = event.source.clone().unwrap_or_default();
    let component = source
        .component
        .filter(|c| !c.is_empty())
        .or(event.reporting_component.clone())
        .unwrap_or_default();
    let instance = source
        .host
        .filter(|h| !h.is_empty())
        .or(event.reporting_instance.clone())
        .unwrap_or_default();
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    Some(Row::new(vec![
        Value::from(last),
        Value::from(event.type_.unwrap_or_default()),
        Value::from(event.reason.unwrap_or_default()),
        Value::from(target),
        Value::from(involved.field_path.clone().unwrap_or_default()),
        Value::from(source),
        Value::from(event.message.unwrap_or_default().trim()),
        Value::from(first),
        Value::from(count),
        Value::from(event.metadata.name.unwrap_or_default()),
    ]))
}

/// The default table: the name and the creation time in RFC 3339.
pub(super) fn default_row(object: &Value, _context: &Context) -> Option<Row> {
    let created = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_time)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Some(Row::new(vec![
        Value::from(super::name_of(object)),
        Value::from(created),
    ]))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cells;
    use serde_json::json;

    #[test]
    fn namespaces_config_maps_secrets_and_leases() {
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2024-05-01T11:59:30Z"}, "status": {"phase": "Active"}});
        assert_eq!(cells("Namespace", &ns), ["default", "Active", "30s"]);
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("ConfigMap", &cm)[..2], [json!("cfg"), json!(3)]);
        let secret = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "AA==", "tls.key": "AA=="}});
        assert_eq!(
            cells("Secret", &secret)[..3],
            [json!("tls"), json!("kubernetes.io/tls"), json!(2)]
        );
        let lease = json!({"metadata": {"name": "node-1", "namespace": "kube-node-lease"}, "spec": {"holderIdentity": "node-1"}});
        assert_eq!(cells("Lease", &lease)[..2], ["node-1", "node-1"]);
        let free = json!({"metadata": {"name": "free"}, "spec": {}});
        assert_eq!(cells("Lease", &free)[1], "");
    }

    #[test]
    fn events_name_the_object_and_their_source() {
        let event = json!({
            "metadata": {"name": "web.17c", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "reason": "Started", "message": "Started container app\n", "type": "Normal",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-05-01T11:50:00Z", "lastTimestamp": "2024-05-01T11:58:00Z", "count": 3
        });
        assert_eq!(
            cells("Event", &event),
            [
                json!("2m"),
                json!("Normal"),
                json!("Started"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("Started container app"),
                json!("10m"),
                json!(3),
                json!("web.17c")
            ]
        );
        let new_style = json!({
            "metadata": {"name": "n"},
            "involvedObject": {"kind": "Node"},
            "eventTime": "2024-05-01T11:59:00.000000Z",
            "reportingComponent": "knit-controller", "reason": "Registered", "type": "Normal"
        });
        let row = cells("Event", &new_style);
        assert_eq!(row[0], "60s");
        assert_eq!(row[3], "node");
        assert_eq!(row[5], "knit-controller");
        assert_eq!(row[8], 1);
    }

    #[test]
    fn the_default_table_prints_the_creation_time() {
        let object =
            json!({"metadata": {"name": "x", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        assert_eq!(cells("Widget", &object), ["x", "2024-05-01T11:00:00Z"]);
    }
}

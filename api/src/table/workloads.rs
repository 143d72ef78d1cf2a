//! Printers of Deployments (`READY UP-TO-DATE AVAILABLE`) and ReplicaSets
//! (`DESIRED CURRENT READY`), both with the wide `CONTAINERS IMAGES
//! SELECTOR` columns.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use super::{AGE, Column, Context, NAME, Row, typed};
use crate::selector::LabelSelector;

const CONTAINERS: Column = Column::new(
    "Containers",
    "string",
    "Names of each container in the template.",
)
.wide();
const IMAGES: Column = Column::new(
    "Images",
    "string",
    "Images referenced by each container in the template.",
)
.wide();

pub(super) const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Ready", "string", "Number of the pod with ready state"),
    Column::new("Up-to-date", "string", "Total number of non-terminating pods targeted by this deployment that have the desired template spec."),
    Column::new("Available", "string", "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    CONTAINERS,
    IMAGES,
    Column::new("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.").wide(),
];

pub(super) const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Desired", "integer", "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1."),
    Column::new("Current", "integer", "Replicas is the most recently observed number of non-terminating pods."),
    Column::new("Ready", "integer", "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
    AGE,
    CONTAINERS,
    IMAGES,
    Column::new("Selector", "string", "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels.").wide(),
];

/// The container names and images of a pod template, comma-joined.
fn containers(template: &PodTemplateSpec) -> (Value, Value) {
    let containers = template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or_default())
        .collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

/// A `metav1.LabelSelector` in its string form, or `Err` when it is
/// malformed.
fn selector_text(object: &Value) -> Result<String, ()> {
    LabelSelector::from_label_selector(&object["spec"]["selector"])
        .map(|s| s.to_string())
        .map_err(|_| ())
}

pub(super) fn deployment_row(object: &Value, context: &Context) -> Option<Row> {
    let deployment: Deployment = typed(object)?;
    let spec = deployment.spec.unwrap_or_default();
    let status = deployment.status.unwrap_or_default();
    let desired = spec.replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let (names, images) = containers(&spec.template);
    Some(Row::new(vec![
        Value::from(deployment.metadata.name.unwrap_or_default()),
        Value::from(format!("{ready}/{desired}")),
        Value::from(status.updated_replicas.unwrap_or(0)),
        Value::from(status.available_replicas.unwrap_or(0)),
        context.age(object),
        names,
        images,
        Value::from(selector_text(object).unwrap_or_else(|()| "<invalid>".into())),
    ]))
}

pub(super) fn replica_set_row(object: &Value, context: &Context) -> Option<Row> {
    let replica_set: ReplicaSet = typed(object)?;
    let spec = replica_set.spec.unwrap_or_default();
    let status = replica_set.status.unwrap_or_default();
    let (names, images) = spec
        .template
        .as_ref()
        .map(containers)
        .unwrap_or_else(|| (Value::from(""), Value::from("")));
    // `metav1.FormatLabelSelector`: `<none>` for an empty one.
    let selector = match selector_text(object) {
        Ok(text) if text.is_empty() => "<none>".to_string(),
        Ok(text) => text,
        Err(()) => "<error>".to_string(),
    };
    Some(Row::new(vec![
        Value::from(replica_set.metadata.name.unwrap_or_default()),
        Value::from(spec.replicas.unwrap_or(0)),
        Value::from(status.replicas),
        Value::from(status.ready_replicas.unwrap_or(0)),
        context.age(object),
        names,
        images,
        Value::from(selector),
    ]))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cells;
    use serde_json::{Value, json};

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "service_test_pod"}},
               "spec": {"containers": [{"name": "simple-http", "image": "python:3.6-alpine"}, {"name": "log", "image": "busybox"}]}})
    }

    #[test]
    fn deployments_show_ready_of_desired() {
        let deployment = json!({
            "metadata": {"name": "service-test", "creationTimestamp": "2024-04-29T12:00:00Z"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "service_test_pod"}}, "template": template()},
            "status": {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}
        });
        assert_eq!(
            cells("Deployment", &deployment),
            [
                json!("service-test"),
                json!("1/2"),
                json!(2),
                json!(1),
                json!("2d"),
                json!("simple-http,log"),
                json!("python:3.6-alpine,busybox"),
                json!("app=service_test_pod")
            ]
        );
    }

    #[test]
    fn replica_sets_show_desired_current_ready() {
        let replica_set = json!({
            "metadata": {"name": "service-test-7d4c9"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                     "template": template()},
            "status": {"replicas": 3, "readyReplicas": 2}
        });
        let row = cells("ReplicaSet", &replica_set);
        assert_eq!(row[1..4], [json!(3), json!(3), json!(2)]);
        assert_eq!(row[7], "app=web,tier in (a,b)");
        let bare = json!({"metadata": {"name": "rs"}, "spec": {"selector": {}}, "status": {"replicas": 0}});
        assert_eq!(cells("ReplicaSet", &bare)[7], "<none>");
    }
}

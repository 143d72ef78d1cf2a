use serde_json::{Value, json};

use super::unknown_fields::{duplicate_fields, prune_unknown};
use super::*;

fn core() -> &'static GroupVersion {
    group_version("", "v1").expect("core/v1")
}

fn apps() -> &'static GroupVersion {
    group_version("apps", "v1").expect("apps/v1")
}

fn property<'a>(gv: &'a GroupVersion, schema: &str, field: &str) -> &'a Value {
    &gv.schemas[schema]["properties"][field]
}

#[test]
fn every_served_kind_has_a_schema_with_its_gvk() {
    for (group, version) in registry::group_versions() {
        let gv = group_version(group, version).expect("group/version built");
        let served = registry::all()
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .count();
        assert_eq!(gv.kinds.len(), served, "{group}/{version}");
        for (resource, name) in &gv.kinds {
            let schema = &gv.schemas[name];
            assert_eq!(
                schema["x-kubernetes-group-version-kind"],
                json!([{"group": group, "version": version, "kind": resource.kind}]),
            );
            let required = schema["required"].as_array().cloned().unwrap_or_default();
            assert!(!required.contains(&json!("metadata")), "{name}");
            let list = &gv.schemas[&format!("{name}List")];
            assert_eq!(
                list["x-kubernetes-group-version-kind"][0]["kind"],
                json!(resource.list_kind())
            );
        }
    }
    assert_eq!(core().schema_name("Pod"), Some("io.k8s.api.core.v1.Pod"));
    assert_eq!(
        by_index_key("apis/apps/v1").map(|gv| gv.group),
        Some("apps")
    );
    assert_eq!(core().index_key(), "api/v1");
}

#[test]
fn every_reference_resolves_inside_its_document() {
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    for gv in group_versions() {
        let doc = gv.document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r.strip_prefix(SCHEMA_REF_PREFIX).expect("component ref");
            assert!(gv.schemas.contains_key(name), "{r} in {}", gv.index_key());
        }
    }
}

#[test]
fn keyed_lists_carry_patch_strategies() {
    let containers = property(core(), "io.k8s.api.core.v1.PodSpec", "containers");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));

    let ports = property(core(), "io.k8s.api.core.v1.Container", "ports");
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(
        ports["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    let svc_ports = property(core(), "io.k8s.api.core.v1.ServiceSpec", "ports");
    assert_eq!(svc_ports["x-kubernetes-patch-merge-key"], "port");
    let mounts = property(core(), "io.k8s.api.core.v1.Container", "volumeMounts");
    assert_eq!(mounts["x-kubernetes-patch-merge-key"], "mountPath");
    let volumes = property(core(), "io.k8s.api.core.v1.PodSpec", "volumes");
    assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");

    let meta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
    let finalizers = property(apps(), meta, "finalizers");
    assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(finalizers["x-kubernetes-list-type"], "set");
    assert!(finalizers.get("x-kubernetes-patch-merge-key").is_none());
    let owners = property(apps(), meta, "ownerReferences");
    assert_eq!(owners["x-kubernetes-patch-merge-key"], "uid");

    let conditions = property(apps(), "io.k8s.api.apps.v1.DeploymentStatus", "conditions");
    assert_eq!(conditions["x-kubernetes-patch-merge-key"], "type");
    let strategy = property(apps(), "io.k8s.api.apps.v1.DeploymentSpec", "strategy");
    assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    // Lists without a strategy say nothing.
    let tolerations = property(core(), "io.k8s.api.core.v1.PodSpec", "tolerations");
    assert!(tolerations.get("x-kubernetes-patch-strategy").is_none());
}

#[test]
fn special_types_are_schemad_as_kubernetes_does() {
    let int_or_string = &core().schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(int_or_string["x-kubernetes-int-or-string"], true);
    let quantity = &core().schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"];
    assert_eq!(quantity["x-kubernetes-int-or-string"], true);
    let time = &core().schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Time"];
    assert_eq!(time["type"], "string");
    assert_eq!(time["format"], "date-time");
    // A reference with a description is wrapped in allOf, as Kubernetes
    // publishes it (and as kubectl resolves it).
    let spec = property(core(), "io.k8s.api.core.v1.Pod", "spec");
    assert_eq!(
        spec["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.PodSpec"
    );
    assert!(spec["description"].as_str().is_some_and(|d| !d.is_empty()));
}

#[test]
fn patch_operations_take_field_validation_and_strategic_merge() {
    let doc = apps().document();
    let paths = doc["paths"].as_object().unwrap();
    let item = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    let patch = &item["patch"];
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "version": "v1", "kind": "Deployment"})
    );
    let params: Vec<&str> = patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for wanted in ["fieldValidation", "dryRun", "fieldManager", "force"] {
        assert!(params.contains(&wanted), "{wanted} in {params:?}");
    }
    assert!(
        patch["requestBody"]["content"]
            .get("application/strategic-merge-patch+json")
            .is_some()
    );
    // Every PATCH of the kind (kubectl looks at whichever it meets first).
    for (path, ops) in paths {
        if ops["patch"]["x-kubernetes-group-version-kind"]["kind"] == "Deployment" {
            let has = ops["patch"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation");
            assert!(has, "{path}");
        }
    }
    assert!(paths.contains_key("/apis/apps/v1/namespaces/{namespace}/deployments"));
    assert!(paths.contains_key("/apis/apps/v1/deployments"));
    assert!(paths.contains_key("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"));
    let core_doc = core().document();
    assert_eq!(
        core_doc["paths"]["/api/v1/nodes/{name}"]["get"]["operationId"],
        "readCoreV1Node"
    );
    assert_eq!(
        core_doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"]["operationId"],
        "createCoreV1NamespacedPod"
    );
}

fn prune(gv: &GroupVersion, kind: &str, mut object: Value) -> (Vec<String>, Value) {
    let name = gv.schema_name(kind).unwrap();
    let found = prune_unknown(&gv.schemas, name, &mut object);
    (found, object)
}

#[test]
fn unknown_fields_are_found_at_any_depth_and_dropped() {
    let deploy = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"any": "label"}, "bogus": 1},
        "spec": {
            "foo": true,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [
                {"name": "a", "image": "a", "ports": [{"containerPort": 80, "nope": 1}]},
                {"name": "b", "image": "b", "foo": {"deep": 1}},
            ]}},
        },
    });
    let (found, pruned) = prune(apps(), "Deployment", deploy);
    assert_eq!(
        found,
        vec![
            "metadata.bogus",
            "spec.foo",
            "spec.template.spec.containers[0].ports[0].nope",
            "spec.template.spec.containers[1].foo",
        ]
    );
    assert!(pruned["spec"].get("foo").is_none());
    assert!(
        pruned["spec"]["template"]["spec"]["containers"][1]
            .get("foo")
            .is_none()
    );
    assert_eq!(pruned["metadata"]["labels"], json!({"any": "label"}));
}

#[test]
fn known_shapes_pass_untouched() {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "creationTimestamp": null,
            "annotations": {"a/b": "c"},
            "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {"f:x": {}}}}],
        },
        "spec": {
            "containers": [{
                "name": "c",
                "image": "i",
                "resources": {"limits": {"cpu": "1", "memory": 128}},
                "readinessProbe": {"httpGet": {"port": "http", "path": "/"}},
                "livenessProbe": {"tcpSocket": {"port": 80}},
                "env": [{"name": "E", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
            }],
            "nodeSelector": {"disk": "ssd"},
            "affinity": null,
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    });
    let (found, pruned) = prune(core(), "Pod", pod.clone());
    assert_eq!(found, Vec::<String>::new());
    assert_eq!(pruned, pod);

    let cm = json!({"kind": "ConfigMap", "data": {"k": "v"}, "binaryData": {}});
    assert!(prune(core(), "ConfigMap", cm).0.is_empty());
}

#[test]
fn duplicate_keys_are_found_in_json() {
    let body = br#"{"spec": {"replicas": 1, "replicas": 2, "template": {"spec": {"containers": [{"name": "a", "name": "b"}]}}}, "kind": "x"}"#;
    let found = duplicate_fields(&mut serde_json::Deserializer::from_slice(body));
    assert_eq!(
        found,
        vec!["spec.replicas", "spec.template.spec.containers[0].name"]
    );
    let clean = br#"{"a": {"b": 1}, "c": {"b": 2}}"#;
    assert!(duplicate_fields(&mut serde_json::Deserializer::from_slice(clean)).is_empty());
    assert!(duplicate_fields(&mut serde_json::Deserializer::from_slice(b"{bad")).is_empty());
}

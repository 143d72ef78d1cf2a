//! Deployments and ReplicaSets: the selector and the template it must
//! match, replicas, the rollout strategy and the progress deadline.

use serde_json::{Map, Value, json};

use crate::status::Cause;

use super::common::{annotations, immutable, label_map, non_negative, one_of, report};
use super::format::regex_error;
use super::path::{NULL, Path, get, int_of, list, map_of, set_str, spec_of, str_of};
use super::pod::pod_spec;
use super::{NON_NEGATIVE, label_value_problems, qualified_name_problems};

pub(super) fn workload(
    object: &Value,
    old: Option<&Value>,
    deployment: bool,
    errs: &mut Vec<Cause>,
) {
    let spec = spec_of(object);
    let path = Path::new("spec");
    non_negative(spec, "replicas", &path, errs);
    non_negative(spec, "minReadySeconds", &path, errs);
    let selector = get(spec, "selector");
    let matchable = workload_selector(selector, &path.child("selector"), errs);
    let template = get(spec, "template");
    pod_template(template, selector, matchable, &path.child("template"), errs);
    if deployment {
        deployment_strategy(spec, &path, errs);
        non_negative(spec, "revisionHistoryLimit", &path, errs);
        progress_deadline(spec, &path, errs);
    }
    if let Some(old) = old {
        immutable(
            selector,
            get(spec_of(old), "selector"),
            &path.child("selector"),
            errs,
        );
    }
}

/// Checks the selector and tells whether it can be matched against the
/// template's labels.
fn workload_selector(selector: Option<&Value>, path: &Path, errs: &mut Vec<Cause>) -> bool {
    let Some(selector) = selector else {
        errs.push(Cause::required(path, ""));
        // A missing selector selects nothing, so the template check still runs.
        return true;
    };
    let before = errs.len();
    label_selector(selector, path, errs);
    let clauses = map_of(selector, "matchLabels").map_or(0, Map::len)
        + list(selector, "matchExpressions").len();
    if clauses == 0 {
        errs.push(Cause::invalid(
            path,
            selector,
            "empty selector is invalid for deployment",
        ));
    }
    errs.len() == before
}

fn label_selector(selector: &Value, path: &Path, errs: &mut Vec<Cause>) {
    label_map(
        map_of(selector, "matchLabels"),
        &path.child("matchLabels"),
        errs,
    );
    for (i, expr) in list(selector, "matchExpressions").iter().enumerate() {
        selector_requirement(expr, &path.child("matchExpressions").index(i), errs);
    }
}

fn selector_requirement(expr: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let values = list(expr, "values");
    match str_of(expr, "operator").unwrap_or_default() {
        "In" | "NotIn" if values.is_empty() => errs.push(Cause::required(
            path.child("values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(Cause::forbidden(
            path.child("values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
        other => errs.push(Cause::invalid(
            path.child("operator"),
            &json!(other),
            "not a valid selector operator",
        )),
    }
    let key = str_of(expr, "key").unwrap_or_default();
    report(errs, &path.child("key"), key, qualified_name_problems(key));
    for (i, value) in values.iter().enumerate() {
        let value = value.as_str().unwrap_or_default();
        report(
            errs,
            &path.child("values").index(i),
            value,
            label_value_problems(value),
        );
    }
}

/// Whether a (valid) label selector selects an object with `labels`; a
/// missing selector selects nothing, an empty one everything.
fn selector_matches(selector: Option<&Value>, labels: &Map<String, Value>) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let labels_ok = map_of(selector, "matchLabels")
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && list(selector, "matchExpressions")
            .iter()
            .all(|expr| requirement_matches(expr, labels))
}

fn requirement_matches(expr: &Value, labels: &Map<String, Value>) -> bool {
    let value = str_of(expr, "key").and_then(|k| labels.get(k));
    let listed = value.is_some_and(|v| list(expr, "values").contains(v));
    match str_of(expr, "operator") {
        Some("In") => listed,
        Some("NotIn") => !listed,
        Some("Exists") => value.is_some(),
        Some("DoesNotExist") => value.is_none(),
        _ => false,
    }
}

/// A workload's pod template; its labels must be selected by the
/// workload's selector when that is `matchable` (valid or missing).
fn pod_template(
    template: Option<&Value>,
    selector: Option<&Value>,
    matchable: bool,
    path: &Path,
    errs: &mut Vec<Cause>,
) {
    let Some(template) = template else {
        errs.push(Cause::required(path, ""));
        return;
    };
    let meta = template.get("metadata").unwrap_or(&NULL);
    let labels_path = path.child("metadata").child("labels");
    let empty = Map::new();
    let labels = map_of(meta, "labels").unwrap_or(&empty);
    let everything = selector.is_some_and(|s| {
        map_of(s, "matchLabels").is_none_or(Map::is_empty) && list(s, "matchExpressions").is_empty()
    });
    if matchable && !everything && !selector_matches(selector, labels) {
        errs.push(Cause::invalid(
            &labels_path,
            &Value::Object(labels.clone()),
            "`selector` does not match template `labels`",
        ));
    }
    label_map(Some(labels), &labels_path, errs);
    annotations(
        map_of(meta, "annotations"),
        &path.child("metadata").child("annotations"),
        errs,
    );
    let spec = template.get("spec").unwrap_or(&NULL);
    let spec_path = path.child("spec");
    pod_spec(spec, &spec_path, errs);
    one_of(spec, "restartPolicy", &spec_path, &["Always"], errs);
    if get(spec, "activeDeadlineSeconds").is_some() {
        errs.push(Cause::forbidden(
            spec_path.child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
}

fn deployment_strategy(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let Some(strategy) = get(spec, "strategy") else {
        return;
    };
    let path = path.child("strategy");
    let rolling = get(strategy, "rollingUpdate");
    match set_str(strategy, "type") {
        Some("Recreate") if rolling.is_some() => errs.push(Cause::forbidden(
            path.child("rollingUpdate"),
            "may not be specified when strategy `type` is 'Recreate'",
        )),
        Some("RollingUpdate") | None => {
            if let Some(rolling) = rolling {
                rolling_update(rolling, &path.child("rollingUpdate"), errs);
            }
        }
        Some("Recreate") => {}
        Some(other) => errs.push(Cause::not_supported(
            path.child("type"),
            &json!(other),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

fn rolling_update(rolling: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let unavailable = get(rolling, "maxUnavailable");
    let surge = get(rolling, "maxSurge");
    let unavailable_path = path.child("maxUnavailable");
    int_or_percent(unavailable, &unavailable_path, errs);
    int_or_percent(surge, &path.child("maxSurge"), errs);
    // Unset values default to 25%.
    let amount = |v: Option<&Value>| v.map_or(25, int_or_percent_amount);
    if let Some(value) = unavailable
        && amount(unavailable) == 0
        && amount(surge) == 0
    {
        errs.push(Cause::invalid(
            &unavailable_path,
            value,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    if let Some(value @ Value::String(_)) = unavailable
        && int_or_percent_amount(value) > 100
    {
        errs.push(Cause::invalid(
            &unavailable_path,
            value,
            "must not be greater than 100%",
        ));
    }
}

fn int_or_percent(value: Option<&Value>, path: &Path, errs: &mut Vec<Cause>) {
    match value {
        Some(Value::String(s)) if !is_percent(s) => errs.push(Cause::invalid(
            path,
            &json!(s),
            regex_error(
                "a valid percent string must be a numeric string followed by an ending '%'",
                "[0-9]+%",
                &["1%", "93%"],
            ),
        )),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {
            errs.push(Cause::invalid(path, &json!(n), NON_NEGATIVE));
        }
        _ => {}
    }
}

fn is_percent(s: &str) -> bool {
    s.strip_suffix('%')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The number of an int-or-percent (`25` of `"25%"`); unreadable is 0.
fn int_or_percent_amount(value: &Value) -> i64 {
    match value {
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        other => other.as_i64().unwrap_or(0),
    }
}

fn progress_deadline(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    non_negative(spec, "progressDeadlineSeconds", path, errs);
    let min_ready = int_of(spec, "minReadySeconds").unwrap_or(0);
    if let Some(deadline) = int_of(spec, "progressDeadlineSeconds")
        && deadline <= min_ready
    {
        errs.push(Cause::invalid(
            path.child("progressDeadlineSeconds"),
            &json!(deadline),
            "must be greater than minReadySeconds",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{check, check_update, fields, meta, with};

    fn deployment() -> Value {
        json!({
            "metadata": meta("web"),
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]}
                }
            }
        })
    }

    #[test]
    fn a_good_deployment_is_valid() {
        assert_eq!(check("apps", "Deployment", &deployment()), vec![]);
        let expressions = json!({"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["web", "api"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "tier", "operator": "Exists"},
            {"key": "env", "operator": "NotIn", "values": ["prod"]}
        ]});
        assert_eq!(
            check(
                "apps",
                "Deployment",
                &with(deployment(), "/spec/selector", expressions)
            ),
            vec![]
        );
    }

    #[test]
    fn deployments_need_a_selector_matching_the_template() {
        let mut object = deployment();
        object["spec"].as_object_mut().unwrap().remove("selector");
        let errs = check("apps", "Deployment", &object);
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.selector", "FieldValueRequired"),
                ("spec.template.metadata.labels", "FieldValueInvalid")
            ]
        );
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/selector", json!({})),
        );
        assert_eq!(fields(&errs), vec![("spec.selector", "FieldValueInvalid")]);
        assert_eq!(
            errs[0].message,
            "Invalid value: {}: empty selector is invalid for deployment"
        );
        let other = json!({"matchLabels": {"app": "api"}});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/selector", other),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.template.metadata.labels", "FieldValueInvalid")]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: {\"app\":\"web\",\"tier\":\"front\"}: `selector` does not match template `labels`"
        );
        let not_in = json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/selector", not_in),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.template.metadata.labels", "FieldValueInvalid")]
        );
    }

    #[test]
    fn selector_expressions_are_checked() {
        let selector = json!({"matchExpressions": [
            {"key": "app", "operator": "Like", "values": ["web"]},
            {"key": "tier", "operator": "In"},
            {"key": "x", "operator": "Exists", "values": ["y"]},
            {"key": "bad key", "operator": "In", "values": ["-v"]}
        ]});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/selector", selector),
        );
        assert_eq!(
            fields(&errs),
            vec![
                (
                    "spec.selector.matchExpressions[0].operator",
                    "FieldValueInvalid"
                ),
                (
                    "spec.selector.matchExpressions[1].values",
                    "FieldValueRequired"
                ),
                (
                    "spec.selector.matchExpressions[2].values",
                    "FieldValueForbidden"
                ),
                ("spec.selector.matchExpressions[3].key", "FieldValueInvalid"),
                (
                    "spec.selector.matchExpressions[3].values[0]",
                    "FieldValueInvalid"
                ),
            ]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"Like\": not a valid selector operator"
        );
    }

    #[test]
    fn deployment_templates_are_pod_specs() {
        let object = with(
            deployment(),
            "/spec/template/spec/containers/0/image",
            json!(""),
        );
        let object = with(object, "/spec/template/spec/restartPolicy", json!("Never"));
        let object = with(object, "/spec/replicas", json!(-1));
        let errs = check("apps", "Deployment", &object);
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.replicas", "FieldValueInvalid"),
                (
                    "spec.template.spec.containers[0].image",
                    "FieldValueRequired"
                ),
                ("spec.template.spec.restartPolicy", "FieldValueNotSupported"),
            ]
        );
        assert_eq!(
            errs[2].message,
            "Unsupported value: \"Never\": supported values: \"Always\""
        );
        let mut object = deployment();
        object["spec"].as_object_mut().unwrap().remove("template");
        let errs = check("apps", "Deployment", &object);
        assert_eq!(fields(&errs), vec![("spec.template", "FieldValueRequired")]);
    }

    #[test]
    fn deployment_strategies_are_checked() {
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/strategy", json!({"type": "BlueGreen"})),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.strategy.type", "FieldValueNotSupported")]
        );
        let recreate = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/strategy", recreate),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.strategy.rollingUpdate", "FieldValueForbidden")]
        );
        let zero = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/strategy", zero),
        );
        assert_eq!(
            fields(&errs),
            vec![(
                "spec.strategy.rollingUpdate.maxUnavailable",
                "FieldValueInvalid"
            )]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"
        );
        let bad = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "lots", "maxUnavailable": "120%"}});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/strategy", bad),
        );
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.strategy.rollingUpdate.maxSurge", "FieldValueInvalid"),
                (
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "FieldValueInvalid"
                ),
            ]
        );
        assert!(
            errs[0].message.contains(
                "a valid percent string must be a numeric string followed by an ending '%'"
            )
        );
        assert_eq!(
            errs[1].message,
            "Invalid value: \"120%\": must not be greater than 100%"
        );
        let good =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
        assert!(
            check(
                "apps",
                "Deployment",
                &with(deployment(), "/spec/strategy", good)
            )
            .is_empty()
        );
    }

    #[test]
    fn deployment_progress_deadline_exceeds_min_ready() {
        let object = with(deployment(), "/spec/minReadySeconds", json!(30));
        let object = with(object, "/spec/progressDeadlineSeconds", json!(30));
        let errs = check("apps", "Deployment", &object);
        assert_eq!(
            fields(&errs),
            vec![("spec.progressDeadlineSeconds", "FieldValueInvalid")]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: 30: must be greater than minReadySeconds"
        );
    }

    #[test]
    fn workload_selectors_are_immutable() {
        let old = deployment();
        let new = with(
            deployment(),
            "/spec/selector/matchLabels/tier",
            json!("front"),
        );
        let errs = check_update("apps", "Deployment", &new, &old);
        assert_eq!(fields(&errs), vec![("spec.selector", "FieldValueInvalid")]);
        assert!(errs[0].message.ends_with(": field is immutable"));
        assert!(
            check_update(
                "apps",
                "Deployment",
                &with(old.clone(), "/spec/replicas", json!(5)),
                &old
            )
            .is_empty()
        );
        let errs = check_update("apps", "ReplicaSet", &new, &old);
        assert_eq!(fields(&errs), vec![("spec.selector", "FieldValueInvalid")]);
    }

    #[test]
    fn replica_sets_are_checked_like_deployments() {
        assert_eq!(check("apps", "ReplicaSet", &deployment()), vec![]);
        // No strategy on a ReplicaSet: the field is not looked at.
        let object = with(deployment(), "/spec/strategy", json!({"type": "BlueGreen"}));
        assert_eq!(check("apps", "ReplicaSet", &object), vec![]);
        let object = with(deployment(), "/spec/template/metadata/labels", json!({}));
        let errs = check("apps", "ReplicaSet", &object);
        assert_eq!(
            fields(&errs),
            vec![("spec.template.metadata.labels", "FieldValueInvalid")]
        );
    }
}

//! Fixtures the validation tests share: running `validate` on an object,
//! reading back the causes, building objects by JSON pointer, and the
//! metadata and Service that several kinds' tests build on.

use serde_json::{Value, json};

use crate::registry::by_kind;
use crate::status::Cause;

use super::validate;

pub(super) fn check(group: &str, kind: &str, object: &Value) -> Vec<Cause> {
    validate(by_kind(group, kind).unwrap(), object, None)
}

pub(super) fn check_update(group: &str, kind: &str, object: &Value, old: &Value) -> Vec<Cause> {
    validate(by_kind(group, kind).unwrap(), object, Some(old))
}

/// (field, reason) of each cause, the part tests pin exactly.
pub(super) fn fields(causes: &[Cause]) -> Vec<(&str, &str)> {
    causes
        .iter()
        .map(|c| (c.field.as_str(), c.reason))
        .collect()
}

pub(super) fn has(causes: &[Cause], field: &str, reason: &str) -> bool {
    causes
        .iter()
        .any(|c| c.field == field && c.reason == reason)
}

/// Sets the value at a JSON pointer, creating objects on the way.
pub(super) fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let mut at = &mut object;
    for part in pointer.trim_start_matches('/').split('/') {
        at = match at {
            Value::Array(items) => {
                let i = part.parse::<usize>().unwrap();
                if i == items.len() {
                    items.push(Value::Null);
                }
                &mut items[i]
            }
            other => other
                .as_object_mut()
                .unwrap()
                .entry(part)
                .or_insert(Value::Null),
        };
    }
    *at = value;
    object
}

pub(super) fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default"})
}

pub(super) fn service() -> Value {
    json!({
        "metadata": meta("web"),
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    })
}

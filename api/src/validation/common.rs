//! Causes shared by many kinds: the `Not found`, `Too long` and `Too many`
//! causes, one cause per problem, and the checks of enums, ports,
//! protocols, immutable fields, label maps and annotations.

use serde_json::{Map, Value, json};

use crate::status::Cause;

use super::format::port_name_problems;
use super::path::{Path, int_of, str_of};
use super::{IMMUTABLE, NON_NEGATIVE, PORT_RANGE, label_value_problems, qualified_name_problems};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const ANNOTATIONS_MAX: usize = 256 * 1024;

/// One `Invalid value` cause per problem.
pub(super) fn report(errs: &mut Vec<Cause>, path: &Path, value: &str, problems: Vec<String>) {
    let value = json!(value);
    errs.extend(
        problems
            .into_iter()
            .map(|p| Cause::invalid(path, &value, p)),
    );
}

/// `Not found: "x"`, for a reference to something the object lacks.
pub(super) fn not_found(path: &Path, value: &str) -> Cause {
    Cause {
        reason: "FieldValueNotFound",
        field: path.into(),
        message: format!("Not found: {}", json!(value)),
    }
}

pub(super) fn too_long(path: &Path, max_bytes: usize) -> Cause {
    Cause {
        reason: "FieldValueTooLong",
        field: path.into(),
        message: format!("Too long: may not be more than {max_bytes} bytes"),
    }
}

pub(super) fn too_many(path: &Path, count: usize, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooMany",
        field: path.into(),
        message: format!("Too many: {count}: must have at most {max} items"),
    }
}

/// A string field with a fixed set of values, checked when present.
pub(super) fn one_of(v: &Value, key: &str, path: &Path, allowed: &[&str], errs: &mut Vec<Cause>) {
    if let Some(s) = str_of(v, key)
        && !allowed.contains(&s)
    {
        errs.push(Cause::not_supported(path.child(key), &json!(s), allowed));
    }
}

pub(super) fn non_negative(v: &Value, key: &str, path: &Path, errs: &mut Vec<Cause>) {
    if let Some(n) = int_of(v, key)
        && n < 0
    {
        errs.push(Cause::invalid(path.child(key), &json!(n), NON_NEGATIVE));
    }
}

pub(super) fn port_number(n: i64, path: &Path, errs: &mut Vec<Cause>) {
    if !(1..=65535).contains(&n) {
        errs.push(Cause::invalid(path, &json!(n), PORT_RANGE));
    }
}

/// An int-or-string port: a number in 1..65535 or an IANA service name.
pub(super) fn port_number_or_name(port: Option<&Value>, path: &Path, errs: &mut Vec<Cause>) {
    match port {
        None | Some(Value::Null) => errs.push(Cause::required(path, "")),
        Some(Value::String(name)) => report(errs, path, name, port_name_problems(name)),
        Some(v) => port_number(v.as_i64().unwrap_or(0), path, errs),
    }
}

pub(super) fn protocol(port: &Value, path: &Path, errs: &mut Vec<Cause>) {
    one_of(port, "protocol", path, PROTOCOLS, errs);
}

/// The `field is immutable` check: only a value the update gives is
/// compared, since the caller carries over what a client omits.
pub(super) fn immutable(
    new: Option<&Value>,
    old: Option<&Value>,
    path: &Path,
    errs: &mut Vec<Cause>,
) {
    if let Some(new) = new.filter(|v| !v.is_null())
        && Some(new) != old
    {
        errs.push(Cause::invalid(path, new, IMMUTABLE));
    }
}

/// A map of label keys to label values (labels, selectors).
pub(super) fn label_map(labels: Option<&Map<String, Value>>, path: &Path, errs: &mut Vec<Cause>) {
    for (key, value) in labels.into_iter().flatten() {
        report(errs, path, key, qualified_name_problems(key));
        let value = value.as_str().unwrap_or_default();
        report(errs, path, value, label_value_problems(value));
    }
}

pub(super) fn annotations(
    annotations: Option<&Map<String, Value>>,
    path: &Path,
    errs: &mut Vec<Cause>,
) {
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        report(
            errs,
            path,
            key,
            qualified_name_problems(&key.to_lowercase()),
        );
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > ANNOTATIONS_MAX {
        errs.push(too_long(path, ANNOTATIONS_MAX));
    }
}

//! ConfigMaps and Secrets: data keys, the 1 MiB size limit, the secret
//! type, and data that stays fixed once `immutable` is set.

use serde_json::{Value, json};

use crate::status::Cause;

use super::common::{immutable, report, too_long};
use super::format::config_key_problems;
use super::path::{Path, get, map_of, str_of};

/// Kubernetes' limit on the data of one ConfigMap or Secret.
const DATA_MAX: usize = 1024 * 1024;

pub(super) fn config_map(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let data = map_of(object, "data");
    let binary = map_of(object, "binaryData");
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        let at = Path::new("data").key(key);
        report(errs, &at, key, config_key_problems(key));
        if binary.is_some_and(|b| b.contains_key(key)) {
            let detail = "duplicate of key present in binaryData";
            errs.push(Cause::invalid(&at, &json!(key), detail));
        }
        total += value.as_str().map_or(0, str::len);
    }
    for (key, value) in binary.into_iter().flatten() {
        report(
            errs,
            &Path::new("binaryData").key(key),
            key,
            config_key_problems(key),
        );
        total += decoded_len(value);
    }
    if total > DATA_MAX {
        errs.push(too_long(&Path::new("data"), DATA_MAX));
    }
    if let Some(old) = old {
        immutable_data(object, old, &["data", "binaryData"], errs);
    }
}

pub(super) fn secret(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let data = map_of(object, "data");
    let string_data = map_of(object, "stringData");
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        report(
            errs,
            &Path::new("data").key(key),
            key,
            config_key_problems(key),
        );
        total += decoded_len(value);
    }
    for (key, value) in string_data.into_iter().flatten() {
        report(
            errs,
            &Path::new("stringData").key(key),
            key,
            config_key_problems(key),
        );
        total += value.as_str().map_or(0, str::len);
    }
    if total > DATA_MAX {
        errs.push(too_long(&Path::new("data"), DATA_MAX));
    }
    if str_of(object, "type") == Some("kubernetes.io/tls") {
        let has = |key: &str| {
            [data, string_data]
                .into_iter()
                .flatten()
                .any(|m| m.contains_key(key))
        };
        for key in ["tls.crt", "tls.key"] {
            if !has(key) {
                errs.push(Cause::required(Path::new("data").key(key), ""));
            }
        }
    }
    if let Some(old) = old {
        immutable(
            object.get("type"),
            old.get("type"),
            &Path::new("type"),
            errs,
        );
        immutable_data(object, old, &["data", "stringData"], errs);
    }
}

/// Once `immutable: true` is stored, neither the data nor the flag change.
fn immutable_data(object: &Value, old: &Value, fields: &[&str], errs: &mut Vec<Cause>) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    let detail = "field is immutable when `immutable` is set";
    if object.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(Cause::forbidden(Path::new("immutable"), detail));
    }
    for field in fields {
        if get(object, field) != get(old, field) {
            errs.push(Cause::forbidden(Path::new(field), detail));
        }
    }
}

/// The decoded size of a base64 value, without decoding it.
fn decoded_len(value: &Value) -> usize {
    let text = value.as_str().unwrap_or_default();
    let padding = text.bytes().rev().take_while(|b| *b == b'=').count();
    (text.len() / 4 * 3).saturating_sub(padding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{check, check_update, fields, meta, with};

    #[test]
    fn config_map_keys_are_file_names() {
        let good = json!({"metadata": meta("cfg"), "data": {"app.conf": "x", "KEY_1": "y"}, "binaryData": {"blob.bin": "AAEC"}});
        assert_eq!(check("", "ConfigMap", &good), vec![]);
        let bad = json!({"metadata": meta("cfg"), "data": {"a b": "x", "..hidden": "y", "dup": "z"}, "binaryData": {"dup": "AAEC"}});
        let errs = check("", "ConfigMap", &bad);
        assert_eq!(
            fields(&errs),
            vec![
                ("data[..hidden]", "FieldValueInvalid"),
                ("data[a b]", "FieldValueInvalid"),
                ("data[dup]", "FieldValueInvalid"),
            ]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"..hidden\": must not start with '..'"
        );
        assert!(
            errs[1]
                .message
                .contains("a valid config key must consist of alphanumeric characters")
        );
        assert_eq!(
            errs[2].message,
            "Invalid value: \"dup\": duplicate of key present in binaryData"
        );
    }

    #[test]
    fn immutable_config_maps_keep_their_data() {
        let old = json!({"metadata": meta("cfg"), "immutable": true, "data": {"a": "1"}});
        assert!(
            check_update(
                "",
                "ConfigMap",
                &with(old.clone(), "/metadata/labels", json!({"x": "y"})),
                &old
            )
            .is_empty()
        );
        let new = with(old.clone(), "/data/a", json!("2"));
        let new = with(new, "/immutable", json!(false));
        let errs = check_update("", "ConfigMap", &new, &old);
        assert_eq!(
            fields(&errs),
            vec![
                ("immutable", "FieldValueForbidden"),
                ("data", "FieldValueForbidden")
            ]
        );
        assert_eq!(
            errs[1].message,
            "Forbidden: field is immutable when `immutable` is set"
        );
    }

    #[test]
    fn secrets_are_checked() {
        let good = json!({"metadata": meta("s"), "type": "Opaque", "data": {"password": "cGFzcw=="}, "stringData": {"user": "me"}});
        assert_eq!(check("", "Secret", &good), vec![]);
        let bad = json!({"metadata": meta("s"), "data": {"a/b": "eA=="}, "stringData": {"": "x"}});
        let errs = check("", "Secret", &bad);
        assert_eq!(
            fields(&errs),
            vec![
                ("data[a/b]", "FieldValueInvalid"),
                ("stringData[]", "FieldValueInvalid")
            ]
        );
        let tls = json!({"metadata": meta("s"), "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        let errs = check("", "Secret", &tls);
        assert_eq!(fields(&errs), vec![("data[tls.key]", "FieldValueRequired")]);
        let huge = json!({"metadata": meta("s"), "stringData": {"big": "x".repeat(DATA_MAX + 1)}});
        assert_eq!(
            fields(&check("", "Secret", &huge)),
            vec![("data", "FieldValueTooLong")]
        );
    }

    #[test]
    fn secret_type_is_immutable() {
        let old = json!({"metadata": meta("s"), "type": "Opaque"});
        let errs = check_update(
            "",
            "Secret",
            &with(old.clone(), "/type", json!("kubernetes.io/basic-auth")),
            &old,
        );
        assert_eq!(fields(&errs), vec![("type", "FieldValueInvalid")]);
        assert_eq!(
            errs[0].message,
            "Invalid value: \"kubernetes.io/basic-auth\": field is immutable"
        );
        assert!(
            check_update(
                "",
                "Secret",
                &with(old.clone(), "/data", json!({"a": "eA=="})),
                &old
            )
            .is_empty()
        );
    }
}

//! Unknown and duplicate fields of an object, for `fieldValidation`.
//!
//! kube-apiserver decodes a request body into the kind's Go struct: fields
//! the struct does not have are dropped (and, with `fieldValidation=Strict`
//! or `Warn`, reported), and a key given twice in one JSON object is a
//! duplicate. This module finds both: unknown fields by walking the object
//! along the kind's schema in the OpenAPI documents (so what `kubectl
//! explain` shows and what the server accepts are the same thing), and
//! duplicates by walking the raw body, since a parsed `Value` has already
//! kept only the last of them. Paths are written as kube writes them:
//! `spec.template.spec.containers[0].foo`.

use std::collections::HashSet;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::SCHEMA_REF_PREFIX;

/// Removes from `object` every field its schema (`schema_name` in
/// `schemas`) does not have, at any depth, and returns their paths in
/// document order. Free-form parts (`labels`, a `RawExtension`, a schema
/// with `x-kubernetes-preserve-unknown-fields`) keep everything.
pub fn prune_unknown(
    schemas: &Map<String, Value>,
    schema_name: &str,
    object: &mut Value,
) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(schema) = schemas.get(schema_name) {
        walk(schemas, schema, object, &mut String::new(), &mut found);
    }
    found
}

/// Follows `$ref` and single-element `allOf` wrappers to the schema that
/// describes a value.
fn resolve<'a>(schemas: &'a Map<String, Value>, mut schema: &'a Value) -> Option<&'a Value> {
    // A bound on the hops guards against a malformed cycle of references.
    for _ in 0..16 {
        if let Some(name) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(SCHEMA_REF_PREFIX))
        {
            schema = schemas.get(name)?;
        } else if let Some(Value::Array(all_of)) = schema.get("allOf")
            && schema.get("properties").is_none()
            && let [only] = all_of.as_slice()
        {
            schema = only;
        } else {
            return Some(schema);
        }
    }
    None
}

fn walk(
    schemas: &Map<String, Value>,
    schema: &Value,
    value: &mut Value,
    path: &mut String,
    found: &mut Vec<String>,
) {
    let Some(schema) = resolve(schemas, schema) else {
        return;
    };
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = schema.get("properties") {
                let unknown: Vec<String> = map
                    .keys()
                    .filter(|k| !properties.contains_key(*k))
                    .cloned()
                    .collect();
                for key in unknown {
                    found.push(join(path, &key));
                    map.remove(&key);
                }
                for (key, child) in map.iter_mut() {
                    if let Some(child_schema) = properties.get(key) {
                        descend(schemas, child_schema, child, path, key, found);
                    }
                }
            } else if let Some(values @ Value::Object(_)) = schema.get("additionalProperties") {
                for (key, child) in map.iter_mut() {
                    descend(schemas, values, child, path, key, found);
                }
            }
            // An object schema with neither is free-form (RawExtension,
            // FieldsV1): anything goes.
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(schemas, item_schema, item, path, found);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}

fn descend(
    schemas: &Map<String, Value>,
    schema: &Value,
    value: &mut Value,
    path: &mut String,
    key: &str,
    found: &mut Vec<String>,
) {
    if !(value.is_object() || value.is_array()) {
        return;
    }
    let len = path.len();
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
    walk(schemas, schema, value, path, found);
    path.truncate(len);
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The paths of keys given more than once in one object of a JSON or YAML
/// document, read from `deserializer` (a `serde_json` or `serde_norway`
/// one). A document that does not parse has none; its parse error is the
/// decoder's to report.
pub fn duplicate_fields<'de, D: Deserializer<'de>>(deserializer: D) -> Vec<String> {
    let mut found = Vec::new();
    let seed = Duplicates {
        path: String::new(),
        found: &mut found,
    };
    match seed.deserialize(deserializer) {
        Ok(()) => found,
        Err(_) => Vec::new(),
    }
}

/// Walks any document, noting repeated keys.
struct Duplicates<'a> {
    path: String,
    found: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Duplicates<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Duplicates<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON or YAML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let seed = Duplicates {
                path: format!("{}[{i}]", self.path),
                found: &mut *self.found,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<KeyText>()? {
            let path = match &key.0 {
                Some(key) => join(&self.path, key),
                None => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if !seen.insert(path.clone()) && !self.found.contains(&path) {
                self.found.push(path.clone());
            }
            map.next_value_seed(Duplicates {
                path,
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

/// A map key as text; YAML keys that are not strings (numbers, booleans)
/// are read as their text too, anything else is skipped.
struct KeyText(Option<String>);

impl<'de> serde::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyText, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyText, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
        }
        d.deserialize_any(Text)
    }
}

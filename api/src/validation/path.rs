//! Field paths as kube-apiserver prints them (`spec.ports[0].port`) and
//! access to JSON fields that may be missing, null or of another type.

use std::fmt;

use serde_json::{Map, Value};

pub(super) static NULL: Value = Value::Null;

/// A field path as kube-apiserver prints it: `spec.ports[0].port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Path(String);

impl Path {
    pub(super) fn new(root: &str) -> Self {
        Self(root.to_string())
    }

    /// `spec` → `spec.ports`.
    pub(super) fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self::new(name)
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// `spec.ports` → `spec.ports[0]`.
    pub(super) fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// `data` → `data[key]`.
    pub(super) fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Path> for String {
    fn from(path: &Path) -> Self {
        path.0.clone()
    }
}

impl From<Path> for String {
    fn from(path: Path) -> Self {
        path.0
    }
}

/// A present, non-null field.
pub(super) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

pub(super) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

/// A string field that is present and not empty (Go reads `""` as unset).
pub(super) fn set_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    str_of(v, key).filter(|s| !s.is_empty())
}

pub(super) fn int_of(v: &Value, key: &str) -> Option<i64> {
    v.get(key)?.as_i64()
}

pub(super) fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub(super) fn map_of<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key)?.as_object()
}

pub(super) fn spec_of(object: &Value) -> &Value {
    object.get("spec").unwrap_or(&NULL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_as_kubernetes_prints_them() {
        let path = Path::new("spec").child("ports").index(0).child("port");
        assert_eq!(path.to_string(), "spec.ports[0].port");
        assert_eq!(Path::new("data").key("a.b").to_string(), "data[a.b]");
        assert_eq!(Path::new("").child("x").to_string(), "x");
    }
}

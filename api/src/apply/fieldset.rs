//! Sets of field paths, as structured-merge-diff keeps them for each field
//! manager, and their `FieldsV1` JSON encoding (`{"f:spec":{"f:replicas":{}}}`).
//!
//! A set is a tree: every node is one step of a path (a field name, the keys
//! of an associative-list element, a set value or a list index) and knows
//! whether the path ending there is itself a member. Building a set from an
//! object needs the kind's list types, which `walk` reads from the schema
//! table of [`crate::patch`].

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::{ApplyError, Result};
use crate::patch::{ListType, SchemaNode};

/// One step of a field path. The order (fields, then keys, values and
/// indices) is the order of `FieldsV1` encodings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of a struct or a key of a map: `f:name`.
    Field(String),
    /// An associative-list element, by its key fields as a JSON object with
    /// the keys sorted: `k:{"name":"web"}`.
    Key(String),
    /// An element of a set, as JSON: `v:"example.com/finalizer"`.
    Value(String),
    /// A list element by position: `i:0` (only read, never built).
    Index(usize),
}

impl PathElement {
    /// The element of an associative list keyed by `keys`. A missing
    /// `protocol` key defaults to `TCP`, as the schemas of ports declare.
    pub fn key_of(item: &Value, keys: &[&str]) -> Result<PathElement> {
        let Value::Object(map) = item else {
            return Err(ApplyError::Invalid(format!(
                "associative list with keys {keys:?} has an element that is not a map: {item}"
            )));
        };
        let mut sorted: Vec<&str> = keys.to_vec();
        sorted.sort_unstable();
        let mut key = Map::new();
        for name in sorted {
            let value = match map.get(name) {
                Some(v) if !v.is_null() => v.clone(),
                _ if name == "protocol" => Value::from("TCP"),
                _ => {
                    return Err(ApplyError::Invalid(format!(
                        "associative list with keys has an element that omits key field {name:?} (and doesn't have default value)"
                    )));
                }
            };
            key.insert(name.to_string(), value);
        }
        Ok(PathElement::Key(Value::Object(key).to_string()))
    }

    /// The element of a set list.
    pub fn value_of(item: &Value) -> PathElement {
        PathElement::Value(item.to_string())
    }

    /// The `FieldsV1` key of this step.
    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(key) => format!("k:{key}"),
            PathElement::Value(value) => format!("v:{value}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(key: &str) -> Result<PathElement> {
        let bad = || ApplyError::ManagedFields(format!("invalid path element {key:?}"));
        let (prefix, rest) = key.split_once(':').ok_or_else(bad)?;
        Ok(match prefix {
            "f" => PathElement::Field(rest.to_string()),
            // Re-encoded, so that equal keys compare equal however they
            // were spaced or ordered.
            "k" => {
                let Value::Object(fields) = serde_json::from_str(rest).map_err(|_| bad())? else {
                    return Err(bad());
                };
                let sorted: BTreeMap<String, Value> = fields.into_iter().collect();
                let mut key = Map::new();
                key.extend(sorted);
                PathElement::Key(Value::Object(key).to_string())
            }
            "v" => {
                let value: Value = serde_json::from_str(rest).map_err(|_| bad())?;
                PathElement::Value(value.to_string())
            }
            "i" => PathElement::Index(rest.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for PathElement {
    /// As structured-merge-diff prints paths in conflict messages:
    /// `.spec`, `[name="web"]`, `[="a"]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(key) => {
                let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(value) => write!(f, "[={value}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A whole path, printed as `.spec.containers[name="web"].image`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Path(pub Vec<PathElement>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|pe| write!(f, "{pe}"))
    }
}

/// A set of field paths, as a tree of path elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// Whether the path leading to this node is itself in the set.
    pub(crate) member: bool,
    pub(crate) children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set whose only member is the node itself.
    pub(crate) fn leaf() -> Self {
        Self {
            member: true,
            children: BTreeMap::new(),
        }
    }

    /// Whether the set holds no path.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path.
    pub fn insert(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether `path` is a member.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((first, rest)) => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// The subtree under one step, if any.
    pub fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    /// Puts `child` under `pe` unless it is empty.
    pub(crate) fn put(&mut self, pe: PathElement, child: FieldSet) {
        if !child.is_empty() {
            match self.children.get_mut(&pe) {
                Some(existing) => *existing = existing.union(&child),
                None => {
                    self.children.insert(pe, child);
                }
            }
        }
    }

    /// Every path in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (pe, child) in &other.children {
            match out.children.get_mut(pe) {
                Some(mine) => *mine = mine.union(child),
                None => {
                    out.children.insert(pe.clone(), child.clone());
                }
            }
        }
        out.prune();
        out
    }

    /// The paths of `self` that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            let rest = match other.children.get(pe) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            out.put(pe.clone(), rest);
        }
        out
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                out.put(pe.clone(), child.intersection(theirs));
            }
        }
        out
    }

    /// Drops empty subtrees.
    fn prune(&mut self) {
        self.children.retain(|_, child| {
            child.prune();
            !child.is_empty()
        });
    }

    /// Every member path, in order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        if self.member {
            out.push(Path(prefix.clone()));
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, child) in &self.children {
            if !child.is_empty() {
                map.insert(pe.encode(), child.to_fields_v1());
            }
        }
        Value::Object(map)
    }

    /// Reads a `fieldsV1` JSON value.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet> {
        let mut set = FieldSet::new();
        set.read(value)?;
        // `{}` at the top is the empty set, not a member root.
        set.member = false;
        Ok(set)
    }

    fn read(&mut self, value: &Value) -> Result<()> {
        let Value::Object(map) = value else {
            return Err(ApplyError::ManagedFields(format!(
                "fieldsV1 must hold objects, got {value}"
            )));
        };
        if map.is_empty() {
            self.member = true;
        }
        for (key, child) in map {
            if key == "." {
                self.member = true;
                continue;
            }
            let pe = PathElement::decode(key)?;
            let mut node = FieldSet::new();
            node.read(child)?;
            self.children.insert(pe, node);
        }
        Ok(())
    }
}

/// How [`walk`] records a value's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// What an applied configuration sets, as structured-merge-diff's
    /// `ToFieldSet`: scalars, atomic values, list elements and empty maps
    /// are members; a non-empty map is only the way to its fields.
    Config,
    /// A value that appears or disappears as a whole: every node is a
    /// member, except the structs Go objects always carry (`spec`,
    /// `template`, ...), which are never added or removed themselves.
    Subtree,
}

/// Structs (and the one list without `omitempty`, `containers`) that are
/// present, if empty, in every Go object of their kind, so that
/// kube-apiserver never sees them added: their own path is not recorded in
/// [`Mode::Subtree`].
pub(crate) fn always_present(name: &str) -> bool {
    matches!(
        name,
        "metadata"
            | "spec"
            | "status"
            | "template"
            | "strategy"
            | "updateStrategy"
            | "jobTemplate"
            | "containers"
    )
}

/// The paths of `value` below a node at `schema` (the node itself is not
/// included; the caller decides whether it is a member).
pub(crate) fn walk(
    value: &Value,
    schema: SchemaNode,
    list: ListType,
    mode: Mode,
) -> Result<FieldSet> {
    let mut set = FieldSet::new();
    match value {
        Value::Object(map) if !schema.is_atomic() => {
            for (name, child) in map {
                let (child_list, child_schema) = schema.field(name);
                let mut node = walk(child, child_schema, child_list, mode)?;
                node.member = match mode {
                    Mode::Config => match child {
                        Value::Object(m) => m.is_empty() || child_schema.is_atomic(),
                        Value::Array(_) => child_list == ListType::Atomic,
                        _ => true,
                    },
                    Mode::Subtree => {
                        !((child.is_object() || child.is_array()) && always_present(name))
                    }
                };
                set.put(PathElement::Field(name.clone()), node);
            }
        }
        Value::Array(items) => match list {
            ListType::Atomic => {}
            ListType::Set => {
                for item in items {
                    set.put(PathElement::value_of(item), FieldSet::leaf());
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    let pe = PathElement::key_of(item, keys)?;
                    let mut node = walk(item, schema, ListType::Atomic, mode)?;
                    node.member = true;
                    set.put(pe, node);
                }
            }
        },
        _ => {}
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    #[test]
    fn fieldset_encodes_members_and_children() {
        let mut set = FieldSet::new();
        set.insert(&[f("metadata"), f("labels"), f("app")]);
        let web = PathElement::key_of(&json!({"name": "web"}), &["name"]).unwrap();
        set.insert(&[f("spec"), f("containers"), web.clone()]);
        set.insert(&[f("spec"), f("containers"), web.clone(), f("image")]);
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}},
            })
        );
        let back = FieldSet::from_fields_v1(&set.to_fields_v1()).unwrap();
        assert_eq!(back, set);
    }

    #[test]
    fn fieldset_keys_are_sorted_and_protocol_defaults() {
        let pe = PathElement::key_of(
            &json!({"containerPort": 80}),
            &["containerPort", "protocol"],
        )
        .unwrap();
        assert_eq!(
            pe,
            PathElement::Key(r#"{"containerPort":80,"protocol":"TCP"}"#.into())
        );
        assert_eq!(pe.to_string(), r#"[containerPort=80,protocol="TCP"]"#);
        let spaced = PathElement::decode(r#"k:{"protocol": "TCP", "containerPort": 80}"#).unwrap();
        assert_eq!(spaced, pe);
        assert!(PathElement::key_of(&json!({"image": "x"}), &["name"]).is_err());
    }

    #[test]
    fn fieldset_path_display() {
        let path = Path(vec![
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            PathElement::key_of(&json!({"name": "web"}), &["name"]).unwrap(),
            f("image"),
        ]);
        assert_eq!(
            path.to_string(),
            r#".spec.template.spec.containers[name="web"].image"#
        );
        assert_eq!(
            Path(vec![
                f("metadata"),
                f("finalizers"),
                PathElement::value_of(&json!("a"))
            ])
            .to_string(),
            r#".metadata.finalizers[="a"]"#
        );
    }

    #[test]
    fn fieldset_set_algebra() {
        let mut a = FieldSet::new();
        a.insert(&[f("a")]);
        a.insert(&[f("b"), f("c")]);
        let mut b = FieldSet::new();
        b.insert(&[f("b"), f("c")]);
        b.insert(&[f("d")]);
        assert_eq!(a.intersection(&b).paths(), vec![Path(vec![f("b"), f("c")])]);
        assert_eq!(a.difference(&b).paths(), vec![Path(vec![f("a")])]);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert!(a.difference(&a).is_empty());
        assert!(a.contains(&[f("b"), f("c")]) && !a.contains(&[f("b")]));
    }

    #[test]
    fn fieldset_config_walk_of_a_deployment() {
        let deploy = json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web", "image": "nginx",
                        "ports": [{"containerPort": 80}],
                        "args": ["a", "b"],
                        "resources": {},
                    }]},
                },
            },
        });
        let set = walk(
            &deploy,
            SchemaNode::root("Deployment"),
            ListType::Atomic,
            Mode::Config,
        )
        .unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {},
                            "f:args": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                ".": {},
                                "f:containerPort": {},
                            }},
                            "f:resources": {},
                        }}},
                    },
                },
            })
        );
    }

    #[test]
    fn fieldset_subtree_walk_marks_nodes_but_not_go_structs() {
        let deploy = json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}}});
        let set = walk(
            &deploy,
            SchemaNode::root("Deployment"),
            ListType::Atomic,
            Mode::Subtree,
        )
        .unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:spec": {"f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}}}})
        );
    }

    #[test]
    fn fieldset_finalizers_are_a_set() {
        let pod = json!({"metadata": {"finalizers": ["a", "b"]}});
        let set = walk(
            &pod,
            SchemaNode::root("Pod"),
            ListType::Atomic,
            Mode::Config,
        )
        .unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}}})
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn element() -> impl Strategy<Value = PathElement> {
            prop_oneof![
                "[a-z]{1,3}".prop_map(PathElement::Field),
                "[a-z]{1,3}"
                    .prop_map(|n| PathElement::key_of(&json!({"name": n}), &["name"]).unwrap()),
                "[a-z]{0,3}".prop_map(|v| PathElement::value_of(&json!(v))),
                (0usize..5).prop_map(PathElement::Index),
            ]
        }

        fn set() -> impl Strategy<Value = FieldSet> {
            prop::collection::vec(prop::collection::vec(element(), 1..4), 0..8).prop_map(|paths| {
                let mut set = FieldSet::new();
                for p in paths {
                    set.insert(&p);
                }
                set
            })
        }

        proptest! {
            #[test]
            fn fieldset_json_round_trip(s in set()) {
                let json = s.to_fields_v1();
                let back = FieldSet::from_fields_v1(&json).unwrap();
                prop_assert_eq!(back.paths(), s.paths());
                prop_assert_eq!(back.to_fields_v1(), json);
            }

            #[test]
            fn fieldset_difference_and_intersection_partition(a in set(), b in set()) {
                let both = a.intersection(&b);
                let only = a.difference(&b);
                prop_assert_eq!(both.union(&only).paths(), a.paths());
                prop_assert!(both.intersection(&only).is_empty());
            }
        }
    }
}

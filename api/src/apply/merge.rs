//! The value side of server-side apply: merging an applied configuration
//! into a live object, removing the fields an applier gave up, and
//! comparing two versions of an object field by field. Maps merge key by
//! key, associative lists element by element (by their keys), sets value by
//! value; atomic lists and structs are replaced whole.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::Result;
use super::fieldset::{FieldSet, Mode, PathElement, walk};
use crate::patch::{ListType, SchemaNode};

/// The live object with `config` merged in. Explicit nulls in the config
/// remove the field.
pub(crate) fn merge(live: &Value, config: &Value, schema: SchemaNode) -> Result<Value> {
    match (live, config) {
        (Value::Object(live), Value::Object(config)) if !schema.is_atomic() => {
            Ok(Value::Object(merge_map(live.clone(), config, schema)?))
        }
        _ => Ok(without_nulls(config)),
    }
}

fn merge_map(
    mut live: Map<String, Value>,
    config: &Map<String, Value>,
    schema: SchemaNode,
) -> Result<Map<String, Value>> {
    for (name, value) in config {
        let (list, child) = schema.field(name);
        let merged = match (live.remove(name), value) {
            (_, Value::Null) => continue,
            (Some(Value::Object(old)), Value::Object(new)) if !child.is_atomic() => {
                Value::Object(merge_map(old, new, child)?)
            }
            (Some(Value::Array(old)), Value::Array(new)) if list != ListType::Atomic => {
                Value::Array(merge_list(&old, new, list, child)?)
            }
            (_, new) => without_nulls(new),
        };
        // Go drops empty lists (`omitempty`), so a stored object never
        // holds one.
        if merged.as_array().is_some_and(Vec::is_empty) {
            continue;
        }
        live.insert(name.clone(), merged);
    }
    Ok(live)
}

/// The path element of each list item, for lists that have them.
fn elements(items: &[Value], list: ListType) -> Result<Vec<PathElement>> {
    items
        .iter()
        .map(|item| match list {
            ListType::Map(keys) => PathElement::key_of(item, keys),
            _ => Ok(PathElement::value_of(item)),
        })
        .collect()
}

/// Merges two granular lists the way structured-merge-diff orders them:
/// elements of both lists follow the configuration's order, and elements
/// only the live list has stay where they were relative to those.
fn merge_list(
    live: &[Value],
    config: &[Value],
    list: ListType,
    schema: SchemaNode,
) -> Result<Vec<Value>> {
    let lpes = elements(live, list)?;
    let rpes = elements(config, list)?;
    let in_config: HashSet<&PathElement> = rpes.iter().collect();
    let in_live: HashSet<&PathElement> = lpes.iter().collect();
    let mut shared = rpes.iter().filter(|pe| in_live.contains(pe));
    let mut next_shared = shared.next();
    let mut done: HashSet<&PathElement> = HashSet::new();
    let find_live = |pe: &PathElement| lpes.iter().position(|l| l == pe).map(|i| &live[i]);
    let combine = |pe: &PathElement, new: &Value| -> Result<Value> {
        match (list, find_live(pe)) {
            (ListType::Map(_), Some(old)) => merge(old, new, schema),
            _ => Ok(without_nulls(new)),
        }
    };
    let mut out = Vec::with_capacity(live.len().max(config.len()));
    let (mut l, mut r) = (0, 0);
    while l < live.len() || r < config.len() {
        if l < live.len() && r < config.len() {
            if lpes[l] == rpes[r] {
                out.push(combine(&rpes[r], &config[r])?);
                done.insert(&rpes[r]);
                next_shared = shared.next();
                l += 1;
                r += 1;
                continue;
            }
            if in_config.contains(&lpes[l]) && next_shared != Some(&lpes[l]) {
                l += 1;
                continue;
            }
        }
        if l < live.len() {
            if !in_config.contains(&lpes[l]) {
                out.push(live[l].clone());
                l += 1;
                continue;
            }
            if done.contains(&lpes[l]) {
                l += 1;
                continue;
            }
        }
        if r < config.len() {
            if !done.insert(&rpes[r]) {
                // A duplicate in the configuration: the first one counts.
                r += 1;
                continue;
            }
            out.push(combine(&rpes[r], &config[r])?);
            if next_shared == Some(&rpes[r]) {
                next_shared = shared.next();
            }
            r += 1;
        }
    }
    Ok(out)
}

/// A configuration with its empty lists dropped: Go omits them
/// (`omitempty`), so kube-apiserver never sees one applied.
pub(crate) fn without_empty_lists(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.as_array().is_some_and(Vec::is_empty))
                .map(|(k, v)| (k.clone(), without_empty_lists(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_empty_lists).collect()),
        other => other.clone(),
    }
}

/// A configuration value with its nulls dropped, as stored objects never
/// carry them.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Removes from `value` the paths of `remove` that nobody keeps: a path of
/// `keep` (or below one) survives, and so do the key fields of list
/// elements that keep anything. Maps and lists emptied by the removal go
/// too.
pub(crate) fn prune(
    value: &mut Value,
    remove: &FieldSet,
    keep: &FieldSet,
    schema: SchemaNode,
    list: ListType,
) -> Result<()> {
    prune_in(value, remove, keep, schema, list, &[])
}

/// [`prune`] in a value whose `key_fields` (of a list element) stay.
fn prune_in(
    value: &mut Value,
    remove: &FieldSet,
    keep: &FieldSet,
    schema: SchemaNode,
    list: ListType,
    key_fields: &[&str],
) -> Result<()> {
    let empty = FieldSet::new();
    match value {
        Value::Object(map) if !schema.is_atomic() => {
            let names: Vec<String> = map.keys().cloned().collect();
            for name in names {
                if key_fields.contains(&name.as_str()) {
                    continue;
                }
                let pe = PathElement::Field(name.clone());
                let Some(gone) = remove.child(&pe) else {
                    continue;
                };
                let kept = keep.child(&pe).unwrap_or(&empty);
                let (child_list, child_schema) = schema.field(&name);
                let entry = map.get_mut(&name).expect("listed key");
                if prune_node(entry, gone, kept, child_schema, child_list, &[])? {
                    map.remove(&name);
                }
            }
        }
        Value::Array(items) if list != ListType::Atomic => {
            let pes = elements(items, list)?;
            let keys: &[&str] = match list {
                ListType::Map(keys) => keys,
                _ => &[],
            };
            let mut drop = Vec::new();
            for (index, pe) in pes.iter().enumerate() {
                if let Some(gone) = remove.child(pe) {
                    let kept = keep.child(pe).unwrap_or(&empty);
                    if prune_node(
                        &mut items[index],
                        gone,
                        kept,
                        schema,
                        ListType::Atomic,
                        keys,
                    )? {
                        drop.push(index);
                    }
                }
            }
            for i in drop.into_iter().rev() {
                items.remove(i);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Prunes one node; true when the node itself should go.
fn prune_node(
    value: &mut Value,
    gone: &FieldSet,
    kept: &FieldSet,
    schema: SchemaNode,
    list: ListType,
    key_fields: &[&str],
) -> Result<bool> {
    // Owning a map or an element as such (`.`) keeps it, but not the
    // fields in it that nobody owns.
    let was_empty = is_empty_container(value);
    if gone.member && !kept.member {
        if kept.is_empty() {
            return Ok(true);
        }
        retain_only(value, kept, schema, list, key_fields)?;
        return Ok(false);
    }
    prune_in(value, gone, kept, schema, list, key_fields)?;
    Ok(!kept.member && !was_empty && is_empty_container(value))
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Keeps only the paths of `kept` in `value` (and the key fields of a list
/// element).
fn retain_only(
    value: &mut Value,
    kept: &FieldSet,
    schema: SchemaNode,
    list: ListType,
    key_fields: &[&str],
) -> Result<()> {
    match value {
        Value::Object(map) if !schema.is_atomic() => {
            let names: Vec<String> = map.keys().cloned().collect();
            for name in names {
                if key_fields.contains(&name.as_str()) {
                    continue;
                }
                match kept.child(&PathElement::Field(name.clone())) {
                    None => {
                        map.remove(&name);
                    }
                    Some(k) if k.member => {}
                    Some(k) => {
                        let (child_list, child_schema) = schema.field(&name);
                        let entry = map.get_mut(&name).expect("listed key");
                        retain_only(entry, k, child_schema, child_list, &[])?;
                    }
                }
            }
        }
        Value::Array(items) if list != ListType::Atomic => {
            let pes = elements(items, list)?;
            let keys: &[&str] = match list {
                ListType::Map(keys) => keys,
                _ => &[],
            };
            let mut out = Vec::new();
            for (mut item, pe) in std::mem::take(items).into_iter().zip(&pes) {
                match kept.child(pe) {
                    None => {}
                    Some(k) if k.member => out.push(item),
                    Some(k) => {
                        retain_only(&mut item, k, schema, ListType::Atomic, keys)?;
                        out.push(item);
                    }
                }
            }
            *items = out;
        }
        _ => {}
    }
    Ok(())
}

/// What differs between two versions of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Comparison {
    /// Paths whose value changed or that appeared.
    pub changed: FieldSet,
    /// Paths that disappeared.
    pub removed: FieldSet,
}

/// Compares two versions of a value below a node at `schema`, as
/// structured-merge-diff's `Compare` does: a changed scalar or atomic value
/// is one path; a value that appears or disappears brings all its paths.
pub(crate) fn compare(
    old: &Value,
    new: &Value,
    schema: SchemaNode,
    list: ListType,
) -> Result<Comparison> {
    let mut out = Comparison::default();
    match (old, new) {
        (Value::Object(a), Value::Object(b)) if !schema.is_atomic() => {
            for (name, new_child) in b {
                let (child_list, child_schema) = schema.field(name);
                let pe = PathElement::Field(name.clone());
                match a.get(name) {
                    Some(old_child) => {
                        let sub = compare_node(old_child, new_child, child_schema, child_list)?;
                        out.changed.put(pe.clone(), sub.changed);
                        out.removed.put(pe, sub.removed);
                    }
                    None => {
                        let mut node = walk(new_child, child_schema, child_list, Mode::Subtree)?;
                        node.member = present_node(name, new_child);
                        out.changed.put(pe, node);
                    }
                }
            }
            for (name, old_child) in a {
                if !b.contains_key(name) {
                    let (child_list, child_schema) = schema.field(name);
                    let mut node = walk(old_child, child_schema, child_list, Mode::Subtree)?;
                    node.member = present_node(name, old_child);
                    out.removed.put(PathElement::Field(name.clone()), node);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if list != ListType::Atomic => {
            let apes = elements(a, list)?;
            let bpes = elements(b, list)?;
            for (item, pe) in b.iter().zip(&bpes) {
                match apes.iter().position(|x| x == pe) {
                    Some(i) if matches!(list, ListType::Map(_)) => {
                        let sub = compare(&a[i], item, schema, ListType::Atomic)?;
                        out.changed.put(pe.clone(), sub.changed);
                        out.removed.put(pe.clone(), sub.removed);
                    }
                    Some(_) => {}
                    None => {
                        let mut node = walk(item, schema, ListType::Atomic, Mode::Subtree)?;
                        node.member = true;
                        out.changed.put(pe.clone(), node);
                    }
                }
            }
            for (item, pe) in a.iter().zip(&apes) {
                if !bpes.contains(pe) {
                    let mut node = walk(item, schema, ListType::Atomic, Mode::Subtree)?;
                    node.member = true;
                    out.removed.put(pe.clone(), node);
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Whether a node that appears or disappears counts itself (not only its
/// fields), see [`Mode::Subtree`].
fn present_node(name: &str, value: &Value) -> bool {
    !((value.is_object() || value.is_array()) && super::fieldset::always_present(name))
}

/// Compares one field present in both versions.
fn compare_node(
    old: &Value,
    new: &Value,
    schema: SchemaNode,
    list: ListType,
) -> Result<Comparison> {
    let granular = match (old, new) {
        (Value::Object(_), Value::Object(_)) => !schema.is_atomic(),
        (Value::Array(_), Value::Array(_)) => list != ListType::Atomic,
        _ => false,
    };
    if granular {
        compare(old, new, schema, list)
    } else if old != new {
        Ok(Comparison {
            changed: FieldSet::leaf(),
            removed: FieldSet::new(),
        })
    } else {
        Ok(Comparison::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn root(kind: &str) -> SchemaNode {
        SchemaNode::root(kind)
    }

    #[test]
    fn merge_maps_and_keyed_lists() {
        let live = json!({
            "metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [
                {"name": "web", "image": "web:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "log", "image": "log:1"},
            ], "tolerations": [{"key": "x"}]},
        });
        let config = json!({
            "metadata": {"labels": {"b": "3", "a": null}},
            "spec": {"containers": [
                {"name": "web", "image": "web:2", "ports": [{"containerPort": 80}]},
                {"name": "new", "image": "new:1"},
            ], "tolerations": [{"key": "y"}]},
        });
        let out = merge(&live, &config, root("Pod")).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "3"}));
        let containers = &out["spec"]["containers"];
        assert_eq!(containers[0]["image"], "web:2");
        assert_eq!(
            containers[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}]),
            "a port without protocol matches the TCP one"
        );
        assert_eq!(containers[1]["name"], "log");
        assert_eq!(containers[2]["name"], "new");
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "y"}]),
            "atomic list"
        );
    }

    #[test]
    fn merge_orders_shared_elements_as_the_config() {
        let live = json!({"metadata": {"finalizers": ["a", "x", "b", "c"]}});
        let config = json!({"metadata": {"finalizers": ["c", "b", "d"]}});
        let out = merge(&live, &config, root("Pod")).unwrap();
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["a", "x", "c", "b", "d"])
        );
    }

    #[test]
    fn merge_replaces_atomic_selector() {
        let live = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
        let config = json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}});
        let out = merge(&live, &config, root("Deployment")).unwrap();
        assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"b": "2"}}));
    }

    #[test]
    fn compare_reports_changes_additions_and_removals() {
        let old = json!({"spec": {"replicas": 1, "paused": false, "template": {"spec": {
            "containers": [{"name": "web", "image": "a"}],
        }}}});
        let new = json!({"spec": {"replicas": 2, "minReadySeconds": 5, "template": {"spec": {
            "containers": [{"name": "web", "image": "a"}, {"name": "side", "image": "b"}],
        }}}});
        let c = compare(&old, &new, root("Deployment"), ListType::Atomic).unwrap();
        assert_eq!(
            c.changed.to_fields_v1(),
            json!({"f:spec": {
                "f:minReadySeconds": {},
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"side\"}": {
                    ".": {}, "f:image": {}, "f:name": {},
                }}}},
            }})
        );
        assert_eq!(
            c.removed.to_fields_v1(),
            json!({"f:spec": {"f:paused": {}}})
        );
        assert!(
            compare(&new, &new, root("Deployment"), ListType::Atomic)
                .unwrap()
                .changed
                .is_empty()
        );
    }

    #[test]
    fn prune_removes_unkept_fields_and_emptied_maps() {
        let mut value = json!({
            "metadata": {"labels": {"a": "1"}, "annotations": {"x": "y"}},
            "spec": {"containers": [
                {"name": "web", "image": "w"},
                {"name": "side", "image": "s", "args": ["x"]},
            ]},
        });
        let config_old = json!({
            "metadata": {"labels": {"a": "1"}, "annotations": {"x": "y"}},
            "spec": {"containers": [{"name": "web"}, {"name": "side", "image": "s", "args": ["x"]}]},
        });
        let remove = walk(&config_old, root("Pod"), ListType::Atomic, Mode::Config).unwrap();
        // Someone else owns the sidecar's image, and the web container.
        let mut keep = FieldSet::new();
        let side = PathElement::key_of(&json!({"name": "side"}), &["name"]).unwrap();
        let web = PathElement::key_of(&json!({"name": "web"}), &["name"]).unwrap();
        let f = |n: &str| PathElement::Field(n.into());
        keep.insert(&[f("spec"), f("containers"), side, f("image")]);
        keep.insert(&[f("spec"), f("containers"), web]);
        keep.insert(&[f("metadata"), f("annotations"), f("x")]);
        prune(&mut value, &remove, &keep, root("Pod"), ListType::Atomic).unwrap();
        assert_eq!(
            value,
            json!({
                "metadata": {"annotations": {"x": "y"}},
                "spec": {"containers": [
                    {"name": "web", "image": "w"},
                    {"name": "side", "image": "s"},
                ]},
            })
        );
    }
}

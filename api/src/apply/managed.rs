//! `metadata.managedFields`: which manager owns which fields of an object,
//! and how apply and ordinary writes (`Update`) change that.
//!
//! An entry is one manager × operation × subresource (× apiVersion for
//! updates). An apply sets its entry to exactly the fields of its
//! configuration; an update adds the fields it changed to its entry. Either
//! way the fields that changed are taken from every other entry, and an
//! entry left empty goes. Fields the server owns (`metadata.uid`,
//! `resourceVersion`, ...) and, for kinds with a status subresource, the
//! `status` of main-resource writes are never recorded.

use serde_json::{Map, Value, json};

use super::fieldset::{FieldSet, Mode, PathElement, walk};
use super::merge::{compare, merge, prune, without_empty_lists};
use super::{ApplyError, Conflict, Result};
use crate::patch::{ListType, SchemaNode};

/// How an entry's fields were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    /// RFC 3339, when the manager last changed the object.
    pub time: Option<String>,
    /// `status`, `scale`, ... for writes to a subresource.
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl Entry {
    /// Whether two entries are the same manager, as kube-apiserver keys
    /// them (appliers regardless of the apiVersion).
    fn same_owner(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// The manager as conflict messages name it.
    pub fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    fn decode(value: &Value) -> Result<Entry> {
        let bad =
            |what: &str| ApplyError::ManagedFields(format!("invalid managedFields entry: {what}"));
        let Value::Object(map) = value else {
            return Err(bad("not an object"));
        };
        let text = |name: &str| {
            map.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let operation = match text("operation") {
            Some("Apply") => Operation::Apply,
            Some("Update") => Operation::Update,
            other => return Err(bad(&format!("operation {other:?}"))),
        };
        if let Some(kind) = text("fieldsType")
            && kind != "FieldsV1"
        {
            return Err(bad(&format!("fieldsType {kind:?}")));
        }
        let fields = match map.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(v) => FieldSet::from_fields_v1(v)?,
        };
        Ok(Entry {
            manager: text("manager").unwrap_or_default().to_string(),
            operation,
            api_version: text("apiVersion").unwrap_or_default().to_string(),
            time: text("time").map(str::to_string),
            subresource: text("subresource").map(str::to_string),
            fields,
        })
    }

    fn encode(&self) -> Value {
        let mut map = Map::new();
        map.insert("manager".into(), json!(self.manager));
        map.insert("operation".into(), json!(self.operation.as_str()));
        map.insert("apiVersion".into(), json!(self.api_version));
        if let Some(time) = &self.time {
            map.insert("time".into(), json!(time));
        }
        map.insert("fieldsType".into(), json!("FieldsV1"));
        map.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(sub) = &self.subresource {
            map.insert("subresource".into(), json!(sub));
        }
        Value::Object(map)
    }
}

/// All the entries of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedFields(pub Vec<Entry>);

impl ManagedFields {
    /// Reads `metadata.managedFields` (a list of entries, or absent).
    pub fn decode(value: Option<&Value>) -> Result<ManagedFields> {
        match value {
            None | Some(Value::Null) => Ok(ManagedFields::default()),
            Some(Value::Array(items)) => {
                let mut out = ManagedFields::default();
                for item in items {
                    out.merge_entry(Entry::decode(item)?);
                }
                Ok(out)
            }
            Some(other) => Err(ApplyError::ManagedFields(format!(
                "managedFields must be a list, got {other}"
            ))),
        }
    }

    /// The entries in kube-apiserver's order (appliers first, then by time,
    /// manager, apiVersion and subresource); `None` when there are none.
    pub fn encode(&self) -> Option<Value> {
        let mut entries: Vec<&Entry> = self.0.iter().filter(|e| !e.fields.is_empty()).collect();
        if entries.is_empty() {
            return None;
        }
        entries.sort_by(|a, b| {
            (
                a.operation,
                &a.time,
                &a.manager,
                &a.api_version,
                &a.subresource,
            )
                .cmp(&(
                    b.operation,
                    &b.time,
                    &b.manager,
                    &b.api_version,
                    &b.subresource,
                ))
        });
        Some(Value::Array(
            entries.into_iter().map(Entry::encode).collect(),
        ))
    }

    /// Adds an entry, merged into one of the same owner if there is one.
    fn merge_entry(&mut self, entry: Entry) {
        match self.0.iter_mut().find(|e| e.same_owner(&entry)) {
            Some(existing) => {
                existing.fields = existing.fields.union(&entry.fields);
                if entry.time > existing.time {
                    existing.time = entry.time;
                }
            }
            None => self.0.push(entry),
        }
    }

    /// Takes `fields` away from every entry but `except`'s owner; drops
    /// entries left empty.
    fn take_from_others(&mut self, fields: &FieldSet, except: &Entry) {
        for entry in &mut self.0 {
            if !entry.same_owner(except) {
                entry.fields = entry.fields.difference(fields);
            }
        }
        self.0
            .retain(|e| e.same_owner(except) || !e.fields.is_empty());
    }
}

/// Who writes, and where.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// `?fieldManager=`, or what the User-Agent gives.
    pub manager: &'a str,
    /// The apiVersion of the request, `apps/v1`.
    pub api_version: &'a str,
    /// The subresource written (`status`, `scale`), if any.
    pub subresource: Option<&'a str>,
    /// Now, RFC 3339.
    pub time: &'a str,
    /// Whether the kind has a status subresource, so that main-resource
    /// writes do not own `status`.
    pub status_apart: bool,
}

impl Writer<'_> {
    fn entry(&self, operation: Operation, fields: FieldSet) -> Entry {
        Entry {
            manager: self.manager.to_string(),
            operation,
            api_version: self.api_version.to_string(),
            time: Some(self.time.to_string()),
            subresource: self.subresource.map(str::to_string),
            fields,
        }
    }

    /// The part of `set` this writer can own: never the server's metadata;
    /// only `status` through the status subresource, and never `status` of
    /// the main resource when it has one.
    fn ownable(&self, set: FieldSet) -> FieldSet {
        let field = |n: &str| PathElement::Field(n.to_string());
        let mut server = FieldSet::new();
        server.insert(&[field("apiVersion")]);
        server.insert(&[field("kind")]);
        for name in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            server.insert(&[field("metadata"), field(name)]);
        }
        let set = set.difference(&server);
        match self.subresource {
            Some("status") => {
                let mut only = FieldSet::new();
                if let Some(status) = set.child(&field("status")) {
                    only.put(field("status"), status.clone());
                }
                only
            }
            _ if self.status_apart => {
                let mut status = FieldSet::new();
                status.insert(&[field("status")]);
                let mut out = set;
                out.children.remove(&field("status"));
                out.difference(&status)
            }
            _ => set,
        }
    }
}

fn managed_fields_of(object: &Value) -> Option<&Value> {
    object.get("metadata").and_then(|m| m.get("managedFields"))
}

fn without_managed_fields(object: &Value) -> Value {
    let mut out = object.clone();
    take_managed_fields(&mut out);
    out
}

fn take_managed_fields(object: &mut Value) -> Option<Value> {
    object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove("managedFields"))
}

fn store_managed_fields(object: &mut Value, managed: &ManagedFields) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        match managed.encode() {
            Some(list) => metadata.insert("managedFields".into(), list),
            None => metadata.remove("managedFields"),
        };
    }
}

/// Whether a client sent `managedFields: []` or `[{}]`: a request to clear
/// them.
fn is_reset(value: &Value) -> bool {
    match value {
        Value::Array(items) => match items.as_slice() {
            [] => true,
            [only] => only.as_object().is_some_and(Map::is_empty),
            _ => false,
        },
        _ => false,
    }
}

/// Records an ordinary write (create, update, non-apply patch) of `new`
/// over `old` (`None` for a create) by `writer`: its `Update` entry gains
/// the fields it changed, which every other entry loses.
///
/// The entries start from what the client sent in `new` when it sent some
/// (an empty list clears them), else from `old`; a subresource write always
/// starts from `old`. Managed fields that cannot be read are dropped rather
/// than failing the write, as kube-apiserver does.
pub fn record_update(kind: &str, old: Option<&Value>, new: &mut Value, writer: &Writer<'_>) {
    let sent = take_managed_fields(new);
    let from_old = || ManagedFields::decode(old.and_then(managed_fields_of)).unwrap_or_default();
    let mut managed = match sent {
        Some(sent) if writer.subresource.is_none() => {
            if is_reset(&sent) {
                ManagedFields::default()
            } else {
                match ManagedFields::decode(Some(&sent)) {
                    Ok(m) if !m.0.is_empty() => m,
                    _ => from_old(),
                }
            }
        }
        _ => from_old(),
    };
    let empty = json!({});
    let before = old.map_or(empty, without_managed_fields);
    let Ok(diff) = compare(&before, new, SchemaNode::root(kind), ListType::Atomic) else {
        return;
    };
    let changed = writer.ownable(diff.changed);
    if !changed.is_empty() {
        let mine = writer.entry(Operation::Update, changed);
        managed.take_from_others(&mine.fields, &mine);
        managed.merge_entry(mine);
    }
    store_managed_fields(new, &managed);
}

/// Applies `config` for `writer` to `live` (`None` when the object does not
/// exist yet) and returns the object to store, its `managedFields` set.
///
/// The applier's fields become exactly those of its configuration; fields
/// it applied before and no longer does are removed unless another manager
/// owns them. A field whose value would change and that another manager
/// owns is a conflict, unless `force` takes it from that manager.
pub fn apply(
    kind: &str,
    live: Option<&Value>,
    config: &Value,
    writer: &Writer<'_>,
    force: bool,
) -> Result<Value> {
    if managed_fields_of(config).is_some_and(|v| !v.is_null()) {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let schema = SchemaNode::root(kind);
    let config = &without_empty_lists(config);
    let mut managed = ManagedFields::decode(live.and_then(managed_fields_of)).unwrap_or_default();
    let before = live.map_or_else(|| json!({}), without_managed_fields);

    let config_set = writer.ownable(walk(config, schema, ListType::Atomic, Mode::Config)?);
    let mine = writer.entry(Operation::Apply, config_set.clone());
    let last = managed
        .0
        .iter()
        .find(|e| e.same_owner(&mine))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others = managed
        .0
        .iter()
        .filter(|e| !e.same_owner(&mine))
        .fold(FieldSet::new(), |acc, e| acc.union(&e.fields));

    let mut merged = merge(&before, config, schema)?;
    prune(
        &mut merged,
        &last.difference(&config_set),
        &config_set.union(&others),
        schema,
        ListType::Atomic,
    )?;

    let changed = writer.ownable(compare(&before, &merged, schema, ListType::Atomic)?.changed);
    if !force {
        let mut conflicts = Vec::new();
        for entry in managed.0.iter().filter(|e| !e.same_owner(&mine)) {
            for path in entry.fields.intersection(&changed).paths() {
                conflicts.push(Conflict {
                    manager: entry.describe(),
                    path,
                });
            }
        }
        if !conflicts.is_empty() {
            conflicts.sort_by(|a, b| (&a.manager, &a.path).cmp(&(&b.manager, &b.path)));
            return Err(ApplyError::Conflicts(conflicts));
        }
    }
    managed.take_from_others(&changed, &mine);
    let unchanged = merged == before;
    match managed.0.iter_mut().find(|e| e.same_owner(&mine)) {
        Some(existing) => {
            existing.fields = config_set;
            // The time says when the manager last changed the object.
            if !unchanged {
                existing.time = mine.time;
            }
        }
        None => managed.0.push(mine),
    }
    store_managed_fields(&mut merged, &managed);
    Ok(merged)
}

/// Checks a field manager name as kube-apiserver does: at most 128 bytes
/// of printable characters. Returns the problem, if any.
pub fn check_manager_name(name: &str) -> Option<String> {
    if name.len() > 128 {
        Some("Too long: may not be more than 128 bytes".into())
    } else if name.chars().any(char::is_control) {
        Some(format!("Invalid value: {name:?}: invalid characters"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2025-01-01T00:00:00Z";
    const LATER: &str = "2025-01-01T00:05:00Z";

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "apps/v1",
            subresource: None,
            time: NOW,
            status_apart: true,
        }
    }

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]},
                },
            },
        })
    }

    fn entries(object: &Value) -> ManagedFields {
        ManagedFields::decode(managed_fields_of(object)).unwrap()
    }

    fn conflicts(err: ApplyError) -> Vec<Conflict> {
        match err {
            ApplyError::Conflicts(c) => c,
            other => panic!("expected conflicts, got {other:?}"),
        }
    }

    #[test]
    fn managed_apply_creates_with_the_config_fields() {
        let out = apply(
            "Deployment",
            None,
            &deploy(2, "nginx"),
            &writer("ssa"),
            false,
        )
        .unwrap();
        let list = managed_fields_of(&out).unwrap();
        assert_eq!(list.as_array().unwrap().len(), 1);
        let entry = &list[0];
        assert_eq!(entry["manager"], "ssa");
        assert_eq!(entry["operation"], "Apply");
        assert_eq!(entry["apiVersion"], "apps/v1");
        assert_eq!(entry["fieldsType"], "FieldsV1");
        assert_eq!(entry["time"], NOW);
        assert_eq!(
            entry["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                        }}},
                    },
                },
            })
        );
        assert_eq!(out["spec"]["replicas"], 2);
    }

    #[test]
    fn managed_update_takes_fields_and_apply_conflicts() {
        let live = apply(
            "Deployment",
            None,
            &deploy(2, "nginx"),
            &writer("ssa"),
            false,
        )
        .unwrap();
        // A scale by another manager takes spec.replicas.
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        let scaler = Writer {
            subresource: Some("scale"),
            time: LATER,
            ..writer("kubectl")
        };
        record_update("Deployment", Some(&live), &mut scaled, &scaler);
        let m = entries(&scaled);
        assert_eq!(m.0.len(), 2);
        let ssa = m.0.iter().find(|e| e.manager == "ssa").unwrap();
        assert!(!ssa.fields.contains(&[
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
        let scale = m.0.iter().find(|e| e.manager == "kubectl").unwrap();
        assert_eq!(
            scale.fields.to_fields_v1(),
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert_eq!(scale.subresource.as_deref(), Some("scale"));

        // Re-applying replicas: 2 conflicts with the scaler.
        let err = apply(
            "Deployment",
            Some(&scaled),
            &deploy(2, "nginx"),
            &writer("ssa"),
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
        );
        // The same value is no conflict: ownership is shared.
        let shared = apply(
            "Deployment",
            Some(&scaled),
            &deploy(5, "nginx"),
            &writer("ssa"),
            false,
        )
        .unwrap();
        let m = entries(&shared);
        assert!(m.0.iter().all(|e| e.fields.contains(&[
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ])));
        // Forced, the applier takes it back; the scaler's entry is empty and goes.
        let forced = apply(
            "Deployment",
            Some(&scaled),
            &deploy(2, "nginx"),
            &writer("ssa"),
            true,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        let m = entries(&forced);
        assert_eq!(m.0.len(), 1);
        assert_eq!(m.0[0].manager, "ssa");
    }

    #[test]
    fn managed_apply_conflict_lists_every_field() {
        let live = apply(
            "Deployment",
            None,
            &deploy(2, "nginx"),
            &writer("first"),
            false,
        )
        .unwrap();
        let err = apply(
            "Deployment",
            Some(&live),
            &deploy(3, "httpd"),
            &writer("second"),
            false,
        )
        .unwrap_err();
        let found = conflicts(err.clone());
        let paths: Vec<String> = found.iter().map(|c| c.path.to_string()).collect();
        assert_eq!(
            paths,
            vec![
                ".spec.replicas",
                ".spec.template.spec.containers[name=\"web\"].image"
            ]
        );
        assert!(found.iter().all(|c| c.manager == "\"first\""));
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"first\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn managed_apply_removes_fields_no_longer_applied() {
        let mut config = deploy(2, "nginx");
        config["metadata"]["labels"]["tier"] = json!("front");
        config["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "side", "image": "busybox"}));
        let live = apply("Deployment", None, &config, &writer("ssa"), false).unwrap();
        // Another manager shares the tier label.
        let mut labelled = live.clone();
        labelled["metadata"]["labels"]["owner"] = json!("ops");
        record_update(
            "Deployment",
            Some(&live),
            &mut labelled,
            &writer("kubectl-label"),
        );

        // Applying the original config drops the sidecar and the tier label
        // (only ssa owned them), but not the label ssa never applied.
        let out = apply(
            "Deployment",
            Some(&labelled),
            &deploy(2, "nginx"),
            &writer("ssa"),
            false,
        )
        .unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "owner": "ops"})
        );
        let containers = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
    }

    #[test]
    fn managed_apply_keeps_fields_another_manager_owns() {
        let mut config = deploy(2, "nginx");
        config["metadata"]["labels"]["tier"] = json!("front");
        let live = apply("Deployment", None, &config, &writer("a"), false).unwrap();
        // b applies the same label: shared ownership.
        let b_config = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"tier": "front"}},
        });
        let shared = apply("Deployment", Some(&live), &b_config, &writer("b"), false).unwrap();
        let out = apply(
            "Deployment",
            Some(&shared),
            &deploy(2, "nginx"),
            &writer("a"),
            false,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"]["tier"], "front");
    }

    #[test]
    fn managed_update_records_changed_fields_and_merges_entries() {
        let mut created = deploy(1, "nginx");
        record_update("Deployment", None, &mut created, &writer("kubectl-create"));
        let m = entries(&created);
        assert_eq!(m.0.len(), 1);
        assert_eq!(m.0[0].operation, Operation::Update);
        assert_eq!(
            m.0[0].fields.to_fields_v1()["f:metadata"],
            json!({"f:labels": {".": {}, "f:app": {}}})
        );

        let mut edited = created.clone();
        edited["spec"]["paused"] = json!(true);
        record_update(
            "Deployment",
            Some(&created),
            &mut edited,
            &writer("kubectl-create"),
        );
        let m = entries(&edited);
        assert_eq!(m.0.len(), 1, "one manager, one entry");
        assert!(m.0[0].fields.contains(&[
            PathElement::Field("spec".into()),
            PathElement::Field("paused".into())
        ]));
        assert!(m.0[0].fields.contains(&[
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
    }

    #[test]
    fn managed_update_ignores_server_fields_and_status() {
        let mut obj = deploy(1, "nginx");
        obj["metadata"]["uid"] = json!("u");
        obj["metadata"]["resourceVersion"] = json!("5");
        obj["status"] = json!({"replicas": 1});
        record_update("Deployment", None, &mut obj, &writer("x"));
        let fields = entries(&obj).0[0].fields.to_fields_v1();
        assert!(fields.get("f:status").is_none());
        assert_eq!(
            fields["f:metadata"],
            json!({"f:labels": {".": {}, "f:app": {}}})
        );
        assert!(fields.get("f:apiVersion").is_none() && fields.get("f:kind").is_none());

        // A status write owns status only.
        let mut status = obj.clone();
        status["status"]["replicas"] = json!(2);
        let w = Writer {
            subresource: Some("status"),
            ..writer("controller")
        };
        record_update("Deployment", Some(&obj), &mut status, &w);
        let m = entries(&status);
        let ctl = m.0.iter().find(|e| e.manager == "controller").unwrap();
        assert_eq!(
            ctl.fields.to_fields_v1(),
            json!({"f:status": {"f:replicas": {}}})
        );
    }

    #[test]
    fn managed_update_reset_and_explicit_entries() {
        let live = apply(
            "Deployment",
            None,
            &deploy(2, "nginx"),
            &writer("ssa"),
            false,
        )
        .unwrap();
        let mut reset = live.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        record_update("Deployment", Some(&live), &mut reset, &writer("x"));
        assert!(managed_fields_of(&reset).is_none());

        let mut cleared = live.clone();
        cleared["metadata"]["managedFields"] = json!([]);
        record_update("Deployment", Some(&live), &mut cleared, &writer("x"));
        assert!(managed_fields_of(&cleared).is_none());

        // Sending nothing keeps the live entries.
        let mut kept = without_managed_fields(&live);
        record_update("Deployment", Some(&live), &mut kept, &writer("x"));
        assert_eq!(managed_fields_of(&kept), managed_fields_of(&live));

        // Sending other entries replaces them.
        let mut replaced = live.clone();
        replaced["metadata"]["managedFields"] = json!([{
            "manager": "someone", "operation": "Update", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }]);
        record_update("Deployment", Some(&live), &mut replaced, &writer("x"));
        let m = entries(&replaced);
        assert_eq!(m.0.len(), 1);
        assert_eq!(m.0[0].manager, "someone");
    }

    #[test]
    fn managed_apply_rejects_managed_fields_in_config() {
        let mut config = deploy(1, "x");
        config["metadata"]["managedFields"] = json!([]);
        assert!(matches!(
            apply("Deployment", None, &config, &writer("a"), false),
            Err(ApplyError::Invalid(_))
        ));
    }

    #[test]
    fn managed_entries_sort_appliers_first() {
        let live = apply(
            "Deployment",
            None,
            &deploy(2, "nginx"),
            &writer("zz"),
            false,
        )
        .unwrap();
        let mut edited = live.clone();
        edited["spec"]["paused"] = json!(true);
        record_update("Deployment", Some(&live), &mut edited, &writer("aa"));
        let list = managed_fields_of(&edited).unwrap().as_array().unwrap();
        assert_eq!(list[0]["operation"], "Apply");
        assert_eq!(list[1]["operation"], "Update");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn config() -> impl Strategy<Value = Value> {
            (
                prop::collection::btree_map("[a-c]", "[a-z]{1,3}", 0..4),
                prop::collection::btree_map("[a-d]", "[a-z]{1,3}", 0..4),
                prop::option::of(0i64..5),
                prop::collection::btree_set("[f-h]", 0..3),
            )
                .prop_map(|(labels, containers, replicas, finalizers)| {
                    let containers: Vec<Value> = containers
                        .into_iter()
                        .map(|(n, i)| json!({"name": n, "image": i}))
                        .collect();
                    let mut spec = json!({"template": {"spec": {"containers": containers}}});
                    if let Some(r) = replicas {
                        spec["replicas"] = json!(r);
                    }
                    json!({
                        "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "labels": labels, "finalizers": finalizers},
                        "spec": spec,
                    })
                })
        }

        proptest! {
            #[test]
            fn managed_applying_the_same_config_twice_is_a_no_op(
                first in config(),
                second in config(),
            ) {
                let w = writer("a");
                let live = apply("Deployment", None, &first, &w, false).unwrap();
                let once = apply("Deployment", Some(&live), &second, &w, false).unwrap();
                let later = Writer { time: LATER, ..w };
                let twice = apply("Deployment", Some(&once), &second, &later, false).unwrap();
                prop_assert_eq!(&once, &twice);
            }

            #[test]
            fn managed_one_applier_gets_exactly_its_config(
                first in config(),
                second in config(),
            ) {
                // With a single manager, the object's labels and containers
                // are exactly the last config's.
                let w = writer("a");
                let live = apply("Deployment", None, &first, &w, false).unwrap();
                let out = apply("Deployment", Some(&live), &second, &w, false).unwrap();
                let labels = |v: &Value| v["metadata"]["labels"].as_object().cloned().unwrap_or_default();
                prop_assert_eq!(labels(&out), labels(&second));
                let names = |v: &Value| -> Vec<Value> {
                    let mut n: Vec<Value> = v["spec"]["template"]["spec"]["containers"]
                        .as_array().cloned().unwrap_or_default()
                        .iter().map(|c| c["name"].clone()).collect();
                    n.sort_by_key(|x| x.to_string());
                    n
                };
                prop_assert_eq!(names(&out), names(&second));
                prop_assert_eq!(&out["spec"]["replicas"], &second["spec"]["replicas"]);
            }
        }
    }
}

//! Server-side printing: the columns and rows of the `meta.k8s.io` `Table`
//! that kubectl asks for, one printer per kind, matching kube-apiserver's
//! printers (names, types, priorities and cell formats). Pure data: the
//! apiserver wraps it into the wire object and decides what each row's
//! `object` carries.
//!
//! Every printer computes all cells, the `-o wide` ones (priority 1)
//! included, as kube-apiserver does; kubectl hides those unless asked.
//! "Now" is passed in, so ages are testable.

mod age;
mod misc;
mod networking;
mod nodes;
mod pods;
mod services;
mod workloads;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::registry::Resource;

pub use age::{age, human_duration, parse_time, since};
pub use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// One column of a Table (`TableColumnDefinition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Shown upper-cased by kubectl: `Name`, `Cluster-IP`.
    pub name: &'static str,
    /// The OpenAPI type of the cells: `string`, `integer`, `date`.
    pub kind: &'static str,
    /// `name` for the column that names the object, else empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 is always shown; 1 only with `-o wide`.
    pub priority: i32,
}

impl Column {
    const fn new(name: &'static str, kind: &'static str, description: &'static str) -> Self {
        Column {
            name,
            kind,
            format: "",
            description,
            priority: 0,
        }
    }

    /// The same column, shown only with `-o wide`.
    const fn wide(self) -> Self {
        Column {
            priority: 1,
            ..self
        }
    }

    const fn named(self) -> Self {
        Column {
            format: "name",
            ..self
        }
    }
}

/// The `metadata.name` documentation kube-apiserver uses for NAME columns.
pub(crate) const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// The `metadata.creationTimestamp` documentation used for AGE columns.
pub(crate) const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

pub(crate) const NAME: Column = Column::new("Name", "string", NAME_DOC).named();
pub(crate) const AGE: Column = Column::new("Age", "string", AGE_DOC);

/// A row condition (`TableRowCondition`); pods that finished carry
/// `Completed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCondition {
    pub kind: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: &'static str,
}

/// One object's row: a cell per column (strings, or integers where
/// kube-apiserver prints numbers).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub cells: Vec<Value>,
    pub conditions: Vec<RowCondition>,
}

impl Row {
    fn new(cells: Vec<Value>) -> Self {
        Row {
            cells,
            conditions: Vec::new(),
        }
    }
}

/// What a printer sees besides the object.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// The time ages are measured to.
    pub now: Timestamp,
    /// Whether cells may be long (`-o wide`): the server always prints wide
    /// cells, as kube-apiserver does, and kubectl chooses the columns.
    pub wide: bool,
}

impl Context {
    /// The age of `object` now.
    fn age(&self, object: &Value) -> Value {
        Value::from(age(object, self.now))
    }
}

/// Builds the row of one object; `None` when it does not decode.
type RowFn = fn(&Value, &Context) -> Option<Row>;

/// The printer of one kind.
struct Printer {
    columns: &'static [Column],
    row: RowFn,
}

fn printer(kind: &str) -> Printer {
    let (columns, row): (&'static [Column], RowFn) = match kind {
        "Pod" => (pods::COLUMNS, pods::row),
        "Service" => (services::SERVICE_COLUMNS, services::service_row),
        "Endpoints" => (services::ENDPOINTS_COLUMNS, services::endpoints_row),
        "EndpointSlice" => (services::SLICE_COLUMNS, services::slice_row),
        "Deployment" => (workloads::DEPLOYMENT_COLUMNS, workloads::deployment_row),
        "ReplicaSet" => (workloads::REPLICA_SET_COLUMNS, workloads::replica_set_row),
        "Node" => (nodes::COLUMNS, nodes::row),
        "Ingress" => (networking::INGRESS_COLUMNS, networking::ingress_row),
        "IngressClass" => (networking::CLASS_COLUMNS, networking::class_row),
        "Namespace" => (misc::NAMESPACE_COLUMNS, misc::namespace_row),
        "ConfigMap" => (misc::CONFIG_MAP_COLUMNS, misc::config_map_row),
        "Secret" => (misc::SECRET_COLUMNS, misc::secret_row),
        "Lease" => (misc::LEASE_COLUMNS, misc::lease_row),
        "Event" => (misc::EVENT_COLUMNS, misc::event_row),
        _ => (misc::DEFAULT_COLUMNS, misc::default_row),
    };
    Printer { columns, row }
}

/// The columns kube-apiserver prints for `kind` (the default table's
/// `Name`/`Created At` for a kind without a printer).
pub fn columns(kind: &str) -> &'static [Column] {
    printer(kind).columns
}

/// The row of one object of `kind`. An object that does not decode as its
/// kind still gets a row: its name, and `<unknown>` in the other cells.
pub fn row(kind: &str, object: &Value, context: &Context) -> Row {
    let printer = printer(kind);
    (printer.row)(object, context).unwrap_or_else(|| {
        let mut cells = vec![Value::from(name_of(object))];
        cells.resize(printer.columns.len(), Value::from(age::UNKNOWN));
        Row::new(cells)
    })
}

/// A printed table: the columns of the resource and a row per object.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
}

/// Prints `objects` of `resource`. With `wide` false, the priority-1
/// columns and their cells are left out.
pub fn table_for<'a>(
    resource: &Resource,
    objects: impl IntoIterator<Item = &'a Value>,
    now: Timestamp,
    wide: bool,
) -> Table {
    let context = Context { now, wide };
    let all = columns(resource.kind);
    let keep: Vec<bool> = all.iter().map(|c| wide || c.priority == 0).collect();
    let rows = objects
        .into_iter()
        .map(|object| {
            let mut row = row(resource.kind, object, &context);
            let mut index = 0;
            row.cells.retain(|_| {
                index += 1;
                keep.get(index - 1).copied().unwrap_or(false)
            });
            row
        })
        .collect();
    Table {
        columns: all
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(c, _)| *c)
            .collect(),
        rows,
    }
}

/// Decodes an object into its typed form for a printer.
fn typed<T: DeserializeOwned>(object: &Value) -> Option<T> {
    T::deserialize(object).ok()
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// `value`, or `<none>` when it is empty.
fn or_none(value: impl Into<String>) -> String {
    let value = value.into();
    if value.is_empty() {
        "<none>".into()
    } else {
        value
    }
}

/// A label map as `labels.FormatLabels`: `a=b,c=d` sorted by key, `<none>`
/// when empty.
fn format_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<String> = labels
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.sort();
    or_none(pairs.join(","))
}

/// The first `max` items joined by `,`, then ` + N more...` for the rest,
/// as the endpoint printers shorten long lists.
fn join_with_more(items: &[String], total: usize, max: usize) -> String {
    let shown = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if total > max {
        format!("{shown} + {} more...", total - max)
    } else {
        shown
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// The moment the tests' ages are measured to.
    pub fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    /// The row of `object` of `kind`, wide, at [`now`].
    pub fn cells(kind: &str, object: &Value) -> Vec<Value> {
        row(
            kind,
            object,
            &Context {
                now: now(),
                wide: true,
            },
        )
        .cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;
    use serde_json::json;

    #[test]
    fn every_served_kind_has_a_row_per_column() {
        for resource in registry::all() {
            let object =
                json!({"metadata": {"name": "x", "creationTimestamp": "2024-05-01T11:00:00Z"}});
            let table = table_for(resource, [&object], test_support::now(), true);
            assert!(
                table.columns.iter().any(|c| c.format == "name"),
                "{} has a name column",
                resource.kind
            );
            assert_ne!(
                table.columns[0].name, "Created At",
                "{} has its own printer",
                resource.kind
            );
            assert_eq!(
                table.rows[0].cells.len(),
                table.columns.len(),
                "{}",
                resource.kind
            );
        }
    }

    #[test]
    fn narrow_tables_leave_out_wide_columns() {
        let pods = registry::lookup("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c"}]}});
        let narrow = table_for(pods, [&pod], test_support::now(), false);
        let names: Vec<&str> = narrow.columns.iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(narrow.rows[0].cells.len(), 5);
        let wide = table_for(pods, [&pod], test_support::now(), true);
        assert_eq!(wide.columns.len(), 9);
    }

    #[test]
    fn undecodable_objects_still_get_a_row() {
        let bad = json!({"metadata": {"name": "odd"}, "spec": {"ports": "eighty"}});
        let cells = test_support::cells("Service", &bad);
        assert_eq!(cells[0], "odd");
        assert_eq!(cells.len(), columns("Service").len());
    }

    #[test]
    fn lists_longer_than_the_limit_say_how_many_more() {
        let items: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(join_with_more(&items, 5, 3), "a,b,c + 2 more...");
        assert_eq!(join_with_more(&items[..2], 2, 3), "a,b");
    }
}

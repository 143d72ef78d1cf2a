//! Output of `knit get`: the server's `meta.k8s.io/v1` Table laid out as
//! kubectl lays it out (upper-case headers, columns padded to the widest
//! cell plus three spaces, `priority > 0` columns only with `-o wide`, a
//! leading `NAMESPACE` column for `-A`), a `NAME AGE` table built here for
//! servers that answer plain lists, and objects as YAML, JSON or names.

use serde_json::{Value, json};

/// Accept header asking for a Table, with plain JSON as fallback.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// One `columnDefinitions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Header text as the server sent it (`Name`, `Cluster-IP`).
    pub name: String,
    /// Format hint; `name` marks the column that holds object names.
    pub format: String,
    /// 0 for the default view, more for `-o wide` only.
    pub priority: i64,
}

/// One `rows` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The cells, one per column.
    pub cells: Vec<Value>,
    /// The row's object (or its metadata), for the namespace column.
    pub object: Value,
}

/// A Table: column definitions and rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column definitions (may be empty in watch events after the first).
    pub columns: Vec<Column>,
    /// Rows.
    pub rows: Vec<Row>,
}

impl Table {
    /// Reads a `meta.k8s.io/v1` Table; `None` when `value` is not one.
    pub fn from_json(value: &Value) -> Option<Table> {
        if value["kind"] != "Table" {
            return None;
        }
        let columns = value["columnDefinitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Column {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                format: c["format"].as_str().unwrap_or_default().to_string(),
                priority: c["priority"].as_i64().unwrap_or(0),
            })
            .collect();
        let rows = value["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Row {
                cells: r["cells"].as_array().cloned().unwrap_or_default(),
                object: r["object"].clone(),
            })
            .collect();
        Some(Table { columns, rows })
    }

    /// The `NAME AGE` table kubectl makes for objects when the server
    /// sent no Table.
    pub fn from_objects(objects: &[Value], now: jiff::Timestamp) -> Table {
        let columns = vec![
            Column {
                name: "Name".into(),
                format: "name".into(),
                priority: 0,
            },
            Column {
                name: "Age".into(),
                format: String::new(),
                priority: 0,
            },
        ];
        let rows = objects
            .iter()
            .map(|o| Row {
                cells: vec![
                    o["metadata"]["name"].clone(),
                    Value::String(age(&o["metadata"]["creationTimestamp"], now)),
                ],
                object: o.clone(),
            })
            .collect();
        Table { columns, rows }
    }
}

/// How to lay a table out.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// `-o wide`: include columns with priority > 0.
    pub wide: bool,
    /// `-A`: a leading NAMESPACE column.
    pub all_namespaces: bool,
    /// Prefix for names (`service/`) when several types are listed.
    pub kind_prefix: Option<String>,
    /// Print the header line.
    pub headers: bool,
}

/// The lines of `table` as kubectl prints them, each ending in `\n`.
/// `columns` overrides the table's own definitions (watch events after the
/// first may come without them).
pub fn render(table: &Table, columns: &[Column], options: &TableOptions) -> String {
    let shown: Vec<usize> = (0..columns.len())
        .filter(|&i| options.wide || columns[i].priority == 0)
        .collect();
    let name_column = columns.iter().position(|c| c.format == "name").unwrap_or(0);
    let mut lines: Vec<Vec<String>> = Vec::new();
    if options.headers {
        let mut header = Vec::new();
        if options.all_namespaces {
            header.push("NAMESPACE".to_string());
        }
        header.extend(shown.iter().map(|&i| columns[i].name.to_uppercase()));
        lines.push(header);
    }
    for row in &table.rows {
        let mut line = Vec::new();
        if options.all_namespaces {
            line.push(
                row.object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        for &i in &shown {
            let mut text = row.cells.get(i).map(cell_text).unwrap_or_default();
            if i == name_column
                && let Some(prefix) = &options.kind_prefix
            {
                text = format!("{prefix}{text}");
            }
            line.push(text);
        }
        lines.push(line);
    }
    align(&lines)
}

/// A cell as text: strings cut at the first line break (marked `...`),
/// numbers and booleans as written, null as nothing.
pub fn cell_text(cell: &Value) -> String {
    match cell {
        Value::Null => String::new(),
        Value::String(s) => match s.find(['\n', '\r', '\x0c']) {
            Some(at) => format!("{}...", &s[..at]),
            None => s.clone(),
        },
        other => other.to_string(),
    }
}

/// Pads every column but the last to its widest cell plus three spaces
/// (and at least six characters), as Go's tabwriter does for kubectl.
pub fn align(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for line in lines {
        // The last cell of a line is not part of a column.
        for (i, cell) in line.iter().enumerate().take(line.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in lines {
        for (i, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < line.len() {
                let width = (widths[i] + 3).max(6);
                out.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

/// The age of an RFC 3339 timestamp at `now`, `<unknown>` if unreadable:
/// the same cell the server's Tables print.
pub fn age(timestamp: &Value, now: jiff::Timestamp) -> String {
    let then = timestamp.as_str().and_then(knit_api::table::parse_time);
    knit_api::table::since(then, now)
}

/// Objects as one document: the object itself, or a `v1 List`.
pub fn document(mut objects: Vec<Value>, single: bool) -> Value {
    if single && objects.len() == 1 {
        return objects.remove(0);
    }
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects,
        "metadata": {"resourceVersion": ""},
    })
}

/// A value as kubectl's YAML (no leading `---`).
pub fn to_yaml(value: &Value) -> String {
    let text = serde_norway::to_string(value).unwrap_or_default();
    text.strip_prefix("---\n")
        .map(str::to_string)
        .unwrap_or(text)
}

/// A value as kubectl's JSON: indented by four spaces.
pub fn to_json(value: &Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(value, &mut serializer).expect("JSON values serialize");
    let mut text = String::from_utf8(out).expect("serde_json writes UTF-8");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Table as kube-apiserver sends for `kubectl get services`.
    fn services_table() -> Value {
        json!({
            "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "42"},
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique", "priority": 0},
                {"name": "Type", "type": "string", "format": "", "description": "type", "priority": 0},
                {"name": "Cluster-IP", "type": "string", "format": "", "description": "ip", "priority": 0},
                {"name": "External-IP", "type": "string", "format": "", "description": "ext", "priority": 0},
                {"name": "Port(s)", "type": "string", "format": "", "description": "ports", "priority": 0},
                {"name": "Age", "type": "string", "format": "", "description": "age", "priority": 0},
                {"name": "Selector", "type": "string", "format": "", "description": "sel", "priority": 1}
            ],
            "rows": [
                {"cells": ["kubernetes", "ClusterIP", "10.3.240.1", "<none>", "443/TCP", "5m", "<none>"],
                 "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "kubernetes", "namespace": "default"}}},
                {"cells": ["web", "NodePort", "10.3.240.17", "<none>", "80:30080/TCP", "12s", "app=web"],
                 "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "web", "namespace": "team-a"}}}
            ]
        })
    }

    #[test]
    fn table_is_aligned_like_kubectl() {
        let table = Table::from_json(&services_table()).unwrap();
        let out = render(
            &table,
            &table.columns,
            &TableOptions {
                headers: true,
                ..Default::default()
            },
        );
        assert_eq!(
            out,
            "NAME         TYPE        CLUSTER-IP    EXTERNAL-IP   PORT(S)        AGE\n\
             kubernetes   ClusterIP   10.3.240.1    <none>        443/TCP        5m\n\
             web          NodePort    10.3.240.17   <none>        80:30080/TCP   12s\n"
        );
    }

    #[test]
    fn wide_adds_priority_columns_and_all_namespaces_leads_with_namespace() {
        let table = Table::from_json(&services_table()).unwrap();
        let options = TableOptions {
            headers: true,
            wide: true,
            all_namespaces: true,
            kind_prefix: None,
        };
        let out = render(&table, &table.columns, &options);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "NAMESPACE   NAME         TYPE        CLUSTER-IP    EXTERNAL-IP   PORT(S)        AGE   SELECTOR"
        );
        assert_eq!(
            lines[2],
            "team-a      web          NodePort    10.3.240.17   <none>        80:30080/TCP   12s   app=web"
        );
    }

    #[test]
    fn kind_prefix_goes_on_the_name_column_and_headers_can_be_left_out() {
        let table = Table::from_json(&services_table()).unwrap();
        let options = TableOptions {
            kind_prefix: Some("service/".into()),
            ..Default::default()
        };
        let out = render(&table, &table.columns, &options);
        assert!(out.starts_with("service/kubernetes   ClusterIP"), "{out}");
        assert!(!out.contains("NAME"));
    }

    #[test]
    fn cells_of_every_type() {
        assert_eq!(cell_text(&json!("a\nb")), "a...");
        assert_eq!(cell_text(&json!(3)), "3");
        assert_eq!(cell_text(&json!(true)), "true");
        assert_eq!(cell_text(&Value::Null), "");
        // Short columns are still six wide, as tabwriter's minimum width.
        assert_eq!(align(&[vec!["A".into(), "B".into()]]), "A     B\n");
    }

    #[test]
    fn fallback_table_has_name_and_age() {
        let now: jiff::Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
        let objects = vec![
            json!({"metadata": {"name": "cfg", "creationTimestamp": "2025-01-01T00:09:15Z"}}),
            json!({"metadata": {"name": "longer-name", "creationTimestamp": "2024-12-30T00:00:00Z"}}),
        ];
        let table = Table::from_objects(&objects, now);
        let out = render(
            &table,
            &table.columns,
            &TableOptions {
                headers: true,
                ..Default::default()
            },
        );
        assert_eq!(
            out,
            "NAME          AGE\ncfg           45s\nlonger-name   2d\n"
        );
    }

    #[test]
    fn documents_and_serializations() {
        let one = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        assert_eq!(document(vec![one.clone()], true), one);
        let list = document(vec![one.clone(), one.clone()], false);
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        assert_eq!(
            to_yaml(&one),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
        );
        assert_eq!(
            to_json(&json!({"a": [1]})),
            "{\n    \"a\": [\n        1\n    ]\n}\n"
        );
    }
}

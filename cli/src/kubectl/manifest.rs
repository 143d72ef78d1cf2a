//! Reading manifests for `apply -f` and `delete -f`: files, directories
//! (their `.yaml`, `.yml` and `.json` files in name order, as kubectl does
//! without `-R`) and `-` for stdin; multi-document YAML and JSON streams
//! split into objects; `List` kinds unpacked into their items. Each object
//! remembers its file and document number for error messages.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// What is wrong with a manifest source.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{source_name} (document {document}): cannot parse it: {reason}")]
    Parse {
        source_name: String,
        document: usize,
        reason: String,
    },
    #[error("{source_name} (document {document}): {reason}")]
    Shape {
        source_name: String,
        document: usize,
        reason: String,
    },
    #[error("no objects found in {0}")]
    Empty(String),
}

/// One object out of a manifest source.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The file (or `stdin`) it came from.
    pub source: String,
    /// 1-based document number within the source.
    pub document: usize,
    /// The object.
    pub object: Value,
}

impl Manifest {
    /// `apiVersion` of the object.
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }

    /// `kind` of the object.
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name` of the object.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// `metadata.namespace` of the object, if set.
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
    }

    /// Where it came from, for messages: `web.yaml (document 2, Deployment "web")`.
    pub fn location(&self) -> String {
        format!(
            "{} (document {}, {} \"{}\")",
            self.source,
            self.document,
            self.kind(),
            self.name()
        )
    }
}

/// Reads every `-f` argument in order.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| ManifestError::Read {
                    path: "stdin".into(),
                    source,
                })?;
            manifests.extend(parse("stdin", &text)?);
            continue;
        }
        for file in files_of(path)? {
            let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
                path: file.display().to_string(),
                source,
            })?;
            manifests.extend(parse(&file.display().to_string(), &text)?);
        }
    }
    if manifests.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(ManifestError::Empty(names.join(", ")));
    }
    Ok(manifests)
}

/// The manifest files a path stands for.
fn files_of(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: path.display().to_string(),
        source,
    };
    if !path.is_dir() {
        std::fs::metadata(path).map_err(read_error)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        let file = entry.map_err(read_error)?.path();
        let manifest_like = file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if manifest_like && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Splits a source's text into objects. JSON (text starting with `{` or
/// `[`) is read as a stream of JSON values, anything else as YAML
/// documents; empty documents are skipped but still counted.
pub fn parse(source: &str, text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let parse_error = |document: usize, reason: String| ManifestError::Parse {
        source_name: source.to_string(),
        document,
        reason,
    };
    let mut values = Vec::new();
    if text.trim_start().starts_with(['{', '[']) {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for (i, value) in stream.enumerate() {
            values.push(value.map_err(|e| parse_error(i + 1, e.to_string()))?);
        }
    } else {
        for (i, document) in serde_norway::Deserializer::from_str(text).enumerate() {
            values
                .push(Value::deserialize(document).map_err(|e| parse_error(i + 1, e.to_string()))?);
        }
    }
    let mut manifests = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let document = i + 1;
        let shape_error = |reason: &str| ManifestError::Shape {
            source_name: source.to_string(),
            document,
            reason: reason.to_string(),
        };
        match value {
            Value::Null => continue,
            Value::Array(items) => {
                for item in items {
                    manifests.push(checked(source, document, item, &shape_error)?);
                }
            }
            Value::Object(_) if is_list(&value) => {
                for item in value["items"].as_array().into_iter().flatten() {
                    manifests.push(checked(source, document, item.clone(), &shape_error)?);
                }
            }
            Value::Object(_) => manifests.push(checked(source, document, value, &shape_error)?),
            _ => return Err(shape_error("not an object")),
        }
    }
    Ok(manifests)
}

/// `v1 List` and `*List` kinds with items are unpacked, as kubectl does.
fn is_list(value: &Value) -> bool {
    value["kind"].as_str().is_some_and(|k| k.ends_with("List")) && value["items"].is_array()
}

fn checked(
    source: &str,
    document: usize,
    object: Value,
    shape_error: &dyn Fn(&str) -> ManifestError,
) -> Result<Manifest, ManifestError> {
    if !object.is_object() {
        return Err(shape_error("not an object"));
    }
    if object["apiVersion"].as_str().is_none_or(str::is_empty) {
        return Err(shape_error("apiVersion not set"));
    }
    if object["kind"].as_str().is_none_or(str::is_empty) {
        return Err(shape_error("kind not set"));
    }
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Err(shape_error(&format!(
            "{} has no metadata.name (apply and delete need one)",
            object["kind"].as_str().unwrap_or_default()
        )));
    }
    Ok(Manifest {
        source: source.to_string(),
        document,
        object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_are_split_and_numbered() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# only a comment\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: team\nspec: {replicas: 2}\n";
        let m = parse("app.yaml", text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].kind(), m[0].name(), m[0].document),
            ("ConfigMap", "a", 1)
        );
        assert_eq!(
            (m[1].kind(), m[1].name(), m[1].document),
            ("Deployment", "web", 3)
        );
        assert_eq!(m[1].namespace(), Some("team"));
        assert_eq!(m[1].object["spec"]["replicas"], 2);
        assert_eq!(m[1].location(), "app.yaml (document 3, Deployment \"web\")");
    }

    #[test]
    fn lists_and_json_streams_are_unpacked() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},
            {"apiVersion":"v1","kind":"Secret","metadata":{"name":"b"}}]}
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"c"}}"#;
        let m = parse("all.json", text).unwrap();
        let names: Vec<(&str, usize)> = m.iter().map(|m| (m.name(), m.document)).collect();
        assert_eq!(names, vec![("a", 1), ("b", 1), ("c", 2)]);

        let yaml_list = "apiVersion: v1\nkind: ConfigMapList\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n";
        assert_eq!(parse("l.yaml", yaml_list).unwrap()[0].name(), "x");
    }

    #[test]
    fn bad_documents_name_the_source_and_document() {
        let err = parse(
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [unclosed\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("bad.yaml (document 2): cannot parse it:"),
            "{err}"
        );
        let err = parse("x.yaml", "apiVersion: v1\nmetadata: {name: a}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "x.yaml (document 1): kind not set");
        let err = parse("x.yaml", "---\n---\nkind: Pod\nmetadata: {name: a}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "x.yaml (document 2): apiVersion not set");
        let err = parse("x.yaml", "apiVersion: v1\nkind: Pod\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Pod has no metadata.name"), "{err}");
        assert!(matches!(
            parse("s.yaml", "just a string"),
            Err(ManifestError::Shape { .. })
        ));
    }

    #[test]
    fn directories_give_their_manifest_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let m = read_all(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<&str> = m.iter().map(Manifest::name).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert!(m[0].source.ends_with("a.json"));

        let err = read_all(&[dir.path().join("missing.yaml")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read ") && err.contains("missing.yaml"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_all(&[empty.path().to_path_buf()]),
            Err(ManifestError::Empty(_))
        ));
    }
}

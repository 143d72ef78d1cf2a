//! `knit get`: lists or fetches objects, asking the server for Tables so
//! the columns are the server's (as kubectl does), and `-w` to follow
//! the watch stream afterwards, one row per event.

use std::io::Write;

use futures::StreamExt;
use serde_json::Value;

use super::client::{ClientError, query};
use super::discovery::ApiResource;
use super::print::{self, Column, TABLE_ACCEPT, Table, TableOptions};
use super::{CliError, GetArgs, Outcome, Output, Result, Session, report, split_resource_args};

/// Runs `knit get`.
pub async fn run(args: &GetArgs) -> Result<Outcome> {
    let mut session = Session::open(&args.connection).await?;
    let groups = split_resource_args(&args.resource, &args.names)?;
    let mut resolved = Vec::new();
    for (kind, names) in groups {
        resolved.push((session.resolve(&kind).await?, names));
    }
    if args.watch && resolved.len() > 1 {
        return Err(CliError::Usage(
            "you may only specify a single resource type with --watch".into(),
        ));
    }
    let several_types = resolved.len() > 1;
    let single_object = !several_types && resolved[0].1.len() == 1;
    let tables = !matches!(
        args.output,
        Some(Output::Yaml | Output::Json | Output::Name)
    );
    let mut outcome = Outcome::Ok;
    let mut objects = Vec::new();
    let mut printed_any = false;
    let mut stdout = std::io::stdout();
    let mut watch_from = None;
    let mut columns_seen = Vec::new();

    for (resource, names) in &resolved {
        let namespace = scope(&session, args, resource);
        let mut answers = Vec::new();
        if names.is_empty() {
            let mut params = Vec::new();
            if let Some(selector) = &args.selector {
                params.push(("labelSelector", selector.clone()));
            }
            if let Some(selector) = &args.field_selector {
                params.push(("fieldSelector", selector.clone()));
            }
            let path = format!("{}{}", resource.path(namespace, None), query(&params));
            let accept = if tables {
                TABLE_ACCEPT
            } else {
                "application/json"
            };
            answers.push(session.client.get_json(&path, accept).await?);
        } else {
            for name in names {
                let path = resource.path(namespace, Some(name));
                let accept = if tables {
                    TABLE_ACCEPT
                } else {
                    "application/json"
                };
                match session.client.get_json(&path, accept).await {
                    Ok(answer) => answers.push(answer),
                    Err(ClientError::Api(failure)) => {
                        eprintln!("{failure}");
                        outcome = Outcome::Failed;
                    }
                    Err(other) => return Err(other.into()),
                }
            }
        }
        watch_from = answers
            .last()
            .and_then(|a| a["metadata"]["resourceVersion"].as_str())
            .map(str::to_string);

        if tables {
            let mut table = Table::default();
            for answer in &answers {
                let part = as_table(answer);
                if table.columns.is_empty() {
                    table.columns = part.columns;
                }
                table.rows.extend(part.rows);
            }
            if table.rows.is_empty() {
                columns_seen = table.columns;
                continue;
            }
            if printed_any {
                writeln!(stdout)?;
            }
            let options = TableOptions {
                wide: args.output == Some(Output::Wide),
                all_namespaces: args.all_namespaces && resource.namespaced,
                kind_prefix: several_types.then(|| format!("{}/", resource.display())),
                headers: !args.no_headers,
            };
            stdout.write_all(print::render(&table, &table.columns, &options).as_bytes())?;
            printed_any = true;
            columns_seen = table.columns;
        } else {
            for answer in answers {
                for object in items(answer, resource) {
                    if args.output == Some(Output::Name) {
                        writeln!(stdout, "{}/{}", resource.display(), name_of(&object))?;
                        printed_any = true;
                    } else {
                        objects.push(object);
                    }
                }
            }
        }
    }

    if !objects.is_empty() {
        printed_any = true;
        let document = print::document(objects, single_object);
        match args.output {
            Some(Output::Json) => stdout.write_all(print::to_json(&document).as_bytes())?,
            _ => stdout.write_all(print::to_yaml(&document).as_bytes())?,
        }
    }
    stdout.flush()?;
    if !printed_any && outcome == Outcome::Ok && !args.watch {
        eprintln!("{}", no_resources(&session, args, &resolved[0].0));
    }
    if args.watch {
        let (resource, names) = &resolved[0];
        return watch(
            &session,
            args,
            resource,
            names,
            watch_from,
            columns_seen,
            printed_any,
        )
        .await;
    }
    Ok(outcome)
}

/// The namespace to ask in: none for `-A` (and cluster-scoped types).
fn scope<'a>(session: &'a Session, args: &GetArgs, resource: &ApiResource) -> Option<&'a str> {
    (!args.all_namespaces && resource.namespaced).then_some(session.namespace.as_str())
}

/// kubectl's message for an empty answer.
fn no_resources(session: &Session, args: &GetArgs, resource: &ApiResource) -> String {
    if args.all_namespaces || !resource.namespaced {
        "No resources found".to_string()
    } else {
        format!("No resources found in {} namespace.", session.namespace)
    }
}

/// A server answer as a Table: the server's own, or `NAME AGE` made here
/// from a list or a single object.
fn as_table(answer: &Value) -> Table {
    Table::from_json(answer).unwrap_or_else(|| {
        let objects = match answer["items"].as_array() {
            Some(items) => items.clone(),
            None => vec![answer.clone()],
        };
        Table::from_objects(&objects, jiff::Timestamp::now())
    })
}

/// The objects of a list (with the `apiVersion` and `kind` list items
/// lack) or the single object.
fn items(answer: Value, resource: &ApiResource) -> Vec<Value> {
    let mut objects = match answer {
        Value::Object(mut map) if map.get("items").is_some_and(Value::is_array) => {
            match map.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            }
        }
        other => vec![other],
    };
    for object in &mut objects {
        if let Some(map) = object.as_object_mut() {
            map.entry("apiVersion")
                .or_insert_with(|| Value::String(resource.api_version()));
            map.entry("kind")
                .or_insert_with(|| Value::String(resource.kind.clone()));
        }
    }
    objects
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// Follows the watch stream from `resource_version`, printing each
/// event's object as a row (or YAML/JSON document, or name).
async fn watch(
    session: &Session,
    args: &GetArgs,
    resource: &ApiResource,
    names: &[String],
    resource_version: Option<String>,
    mut columns: Vec<Column>,
    mut headers_printed: bool,
) -> Result<Outcome> {
    let mut params = vec![("watch", "true".to_string())];
    if let Some(rv) = resource_version {
        params.push(("resourceVersion", rv));
    }
    if let Some(selector) = &args.selector {
        params.push(("labelSelector", selector.clone()));
    }
    let mut field_selector = args.field_selector.clone();
    if let [name] = names {
        let by_name = format!("metadata.name={name}");
        field_selector = Some(match field_selector {
            Some(s) => format!("{s},{by_name}"),
            None => by_name,
        });
    }
    if let Some(selector) = field_selector {
        params.push(("fieldSelector", selector));
    }
    let path = format!(
        "{}{}",
        resource.path(scope(session, args, resource), None),
        query(&params)
    );
    let output = args.output;
    let accept = match output {
        Some(Output::Yaml | Output::Json | Output::Name) => "application/json",
        _ => TABLE_ACCEPT,
    };
    let mut stream = session.client.stream(&path, accept).await?;
    let mut buffer = Vec::new();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        buffer.extend_from_slice(&chunk?);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            match event["type"].as_str() {
                Some("BOOKMARK") => continue,
                Some("ERROR") => {
                    report(&format!(
                        "the watch ended: {}",
                        event["object"]["message"]
                            .as_str()
                            .unwrap_or("unknown error")
                    ));
                    return Ok(Outcome::Failed);
                }
                _ => {}
            }
            let object = &event["object"];
            let text = match output {
                Some(Output::Name) => format!("{}/{}\n", resource.display(), name_of(object)),
                Some(Output::Json) => print::to_json(object),
                Some(Output::Yaml) => format!("---\n{}", print::to_yaml(object)),
                _ => {
                    let table = as_table(object);
                    if !table.columns.is_empty() {
                        columns = table.columns.clone();
                    }
                    let options = TableOptions {
                        wide: output == Some(Output::Wide),
                        all_namespaces: args.all_namespaces && resource.namespaced,
                        kind_prefix: None,
                        headers: !headers_printed && !args.no_headers,
                    };
                    headers_printed = true;
                    print::render(&table, &columns, &options)
                }
            };
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(Outcome::Ok)
}

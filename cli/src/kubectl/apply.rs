//! `knit apply -f` (server-side apply, `fieldManager=knit`) and
//! `knit delete`. Apply reports what happened to each object as kubectl
//! does (`created`, `unchanged`, `serverside-applied`).

use http::{Method, StatusCode, header};
use serde_json::Value;

use super::client::{ApiFailure, ClientError, query};
use super::discovery::ApiResource;
use super::manifest::{self, Manifest};
use super::{
    ApplyArgs, CliError, DeleteArgs, Outcome, Result, Session, report, split_resource_args,
};

/// What one object's apply came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It did not exist before.
    Created,
    /// Server-side apply changed it.
    ServerSide,
    /// Nothing changed (same resourceVersion).
    Unchanged,
}

impl Applied {
    /// kubectl's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::ServerSide => "serverside-applied",
            Applied::Unchanged => "unchanged",
        }
    }

    /// From the answer to the write and the resourceVersions before and
    /// after it.
    pub fn judge(status: StatusCode, before: Option<&str>, after: Option<&str>) -> Self {
        if status == StatusCode::CREATED || before.is_none() {
            Applied::Created
        } else if before == after {
            Applied::Unchanged
        } else {
            Applied::ServerSide
        }
    }
}

/// One object's failure, located: `deploy.yaml (document 2, Deployment
/// "web"): the server refused it (Invalid): spec.replicas: ...`.
pub fn refusal(manifest: &Manifest, failure: &ApiFailure) -> String {
    format!(
        "{}: the server refused it ({}): {}",
        manifest.location(),
        failure.reason(),
        failure.detail()
    )
}

/// The namespace an object goes to: its own, else `-n`/the context's; a
/// conflict with an explicit `-n` is refused as kubectl does.
fn namespace_of<'a>(
    session: &'a Session,
    manifest: &'a Manifest,
    resource: &ApiResource,
) -> Result<Option<&'a str>, String> {
    if !resource.namespaced {
        return Ok(None);
    }
    match manifest.namespace() {
        Some(ns) if session.namespace_explicit && ns != session.namespace => Err(format!(
            "{}: the namespace from the provided object \"{ns}\" does not match the namespace \"{}\"; pass --namespace={ns} or leave -n out",
            manifest.location(),
            session.namespace
        )),
        Some(ns) => Ok(Some(ns)),
        None => Ok(Some(session.namespace.as_str())),
    }
}

fn resource_version(value: &Value) -> Option<String> {
    value["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string)
}

/// Runs `knit apply -f`.
pub async fn apply(args: &ApplyArgs) -> Result<Outcome> {
    let manifests = manifest::read_all(&args.files)?;
    let mut session = Session::open(&args.connection).await?;
    session.discovery().await?;
    let mut outcome = Outcome::Ok;
    for manifest in &manifests {
        match apply_one(&session, args, manifest).await {
            Ok((resource, applied)) => {
                println!(
                    "{}/{} {}",
                    resource.display(),
                    manifest.name(),
                    applied.word()
                )
            }
            Err(ApplyError::Message(message)) => {
                report(&message);
                outcome = Outcome::Failed;
            }
            Err(ApplyError::Fatal(error)) => return Err(error),
        }
    }
    Ok(outcome)
}

enum ApplyError {
    /// This object failed; go on with the others.
    Message(String),
    /// Nothing else can work (the server is unreachable).
    Fatal(CliError),
}

impl ApplyError {
    fn from_client(manifest: &Manifest, error: ClientError) -> Self {
        match error {
            ClientError::Api(failure) => ApplyError::Message(refusal(manifest, &failure)),
            other => ApplyError::Fatal(other.into()),
        }
    }
}

async fn apply_one(
    session: &Session,
    args: &ApplyArgs,
    manifest: &Manifest,
) -> Result<(ApiResource, Applied), ApplyError> {
    let discovery = session
        .discovery
        .as_ref()
        .expect("apply fetches discovery first");
    let resource = discovery
        .for_kind(manifest.api_version(), manifest.kind())
        .map_err(|e| ApplyError::Message(format!("{}: {e}", manifest.location())))?
        .clone();
    let namespace = namespace_of(session, manifest, &resource).map_err(ApplyError::Message)?;
    let path = resource.path(namespace, Some(manifest.name()));
    let from_client = |e| ApplyError::from_client(manifest, e);

    let current = session
        .client
        .send(
            Method::GET,
            &path,
            &[(header::ACCEPT, "application/json")],
            None,
        )
        .await
        .map_err(from_client)?;
    let before = match current.status {
        StatusCode::NOT_FOUND => None,
        status if status.is_success() => {
            resource_version(&current.json(&path).map_err(from_client)?)
        }
        status => {
            return Err(ApplyError::Message(refusal(
                manifest,
                &ApiFailure::from_body(status.as_u16(), &current.body),
            )));
        }
    };
    let body = serde_json::to_vec(&manifest.object).expect("JSON values serialize");

    let mut params = vec![("fieldManager", args.field_manager.clone())];
    if args.force_conflicts {
        params.push(("force", "true".to_string()));
    }
    let answer = session
        .client
        .send(
            Method::PATCH,
            &format!("{path}{}", query(&params)),
            &[
                (header::CONTENT_TYPE, "application/apply-patch+yaml"),
                (header::ACCEPT, "application/json"),
            ],
            Some(body),
        )
        .await
        .map_err(from_client)?;
    if !answer.status.is_success() {
        return Err(ApplyError::Message(refusal(
            manifest,
            &ApiFailure::from_body(answer.status.as_u16(), &answer.body),
        )));
    }
    let after = resource_version(&answer.json(&path).map_err(from_client)?);
    let applied = Applied::judge(answer.status, before.as_deref(), after.as_deref());
    Ok((resource, applied))
}

/// Runs `knit delete`.
pub async fn delete(args: &DeleteArgs) -> Result<Outcome> {
    let manifests = if args.files.is_empty() {
        Vec::new()
    } else {
        manifest::read_all(&args.files)?
    };
    let mut session = Session::open(&args.connection).await?;
    let mut targets: Vec<(ApiResource, Option<String>, String, Option<String>)> = Vec::new();
    if let Some(first) = &args.resource {
        let groups = split_resource_args(first, &args.names)?;
        for (kind, names) in groups {
            let resource = session.resolve(&kind).await?;
            if names.is_empty() {
                return Err(CliError::Usage(format!(
                    "resource(s) were provided, but no name was specified: name the {} objects to delete",
                    resource.plural
                )));
            }
            for name in names {
                let ns = resource.namespaced.then(|| session.namespace.clone());
                targets.push((resource.clone(), ns, name, None));
            }
        }
    }
    let mut outcome = Outcome::Ok;
    for manifest in &manifests {
        let discovery = session.discovery().await?;
        let found = discovery.for_kind(manifest.api_version(), manifest.kind());
        let resource = match found {
            Ok(resource) => resource.clone(),
            Err(e) => {
                report(&format!("{}: {e}", manifest.location()));
                outcome = Outcome::Failed;
                continue;
            }
        };
        match namespace_of(&session, manifest, &resource) {
            Ok(ns) => {
                let ns = ns.map(str::to_string);
                targets.push((
                    resource,
                    ns,
                    manifest.name().to_string(),
                    Some(manifest.location()),
                ));
            }
            Err(message) => {
                report(&message);
                outcome = Outcome::Failed;
            }
        }
    }
    for (resource, namespace, name, location) in targets {
        let path = resource.path(namespace.as_deref(), Some(&name));
        match session
            .client
            .send_ok(
                Method::DELETE,
                &path,
                &[(header::ACCEPT, "application/json")],
                None,
            )
            .await
        {
            Ok(_) => println!("{}", deleted_line(&resource, &name, namespace.as_deref())),
            Err(ClientError::Api(failure)) if failure.is_not_found() && args.ignore_not_found => {}
            Err(ClientError::Api(failure)) => {
                match location {
                    Some(location) => report(&format!(
                        "{location}: the server refused it ({}): {}",
                        failure.reason(),
                        failure.detail()
                    )),
                    None => eprintln!("{failure}"),
                }
                outcome = Outcome::Failed;
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(outcome)
}

/// kubectl 1.35's line for a deletion.
pub fn deleted_line(resource: &ApiResource, name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!(
            "{} \"{name}\" deleted from {ns} namespace",
            resource.display()
        ),
        None => format!("{} \"{name}\" deleted", resource.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubectl::manifest::parse;

    #[test]
    fn outcomes_follow_status_and_resource_version() {
        let judge = Applied::judge;
        assert_eq!(
            judge(StatusCode::CREATED, None, Some("5")),
            Applied::Created
        );
        assert_eq!(
            judge(StatusCode::OK, Some("5"), Some("5")),
            Applied::Unchanged
        );
        assert_eq!(
            judge(StatusCode::OK, Some("5"), Some("7")),
            Applied::ServerSide
        );
        assert_eq!(Applied::ServerSide.word(), "serverside-applied");
    }

    #[test]
    fn refusals_name_file_document_object_and_field() {
        let manifests = parse(
            "deploy.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: -1}\n",
        )
        .unwrap();
        let failure = ApiFailure::from_body(
            422,
            br#"{"kind":"Status","code":422,"reason":"Invalid","message":"Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0","details":{"name":"web","group":"apps","kind":"Deployment","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: -1: must be greater than or equal to 0","field":"spec.replicas"}]}}"#,
        );
        assert_eq!(
            refusal(&manifests[1], &failure),
            "deploy.yaml (document 2, Deployment \"web\"): the server refused it (Invalid): spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn deletion_lines_match_kubectl() {
        let resource = ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            plural: "deployments".into(),
            singular: "deployment".into(),
            kind: "Deployment".into(),
            short_names: vec![],
            namespaced: true,
        };
        assert_eq!(
            deleted_line(&resource, "web", Some("default")),
            "deployment.apps \"web\" deleted from default namespace"
        );
        assert_eq!(
            deleted_line(&resource, "web", None),
            "deployment.apps \"web\" deleted"
        );
    }
}

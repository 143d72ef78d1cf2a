//! knit's kubectl-lite: `get`, `describe`, `apply -f`, `delete` and `logs`
//! against any Kubernetes API server, configured from the kubeconfig as
//! kubectl is. This module owns the command-line shapes, the connection
//! every verb shares, and how failures reach the user (`error: ...` on
//! stderr, exit code 1).

pub mod apply;
pub mod client;
pub mod config;
pub mod describe;
pub mod discovery;
pub mod get;
pub mod manifest;
pub mod print;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use futures::StreamExt;

use client::{Client, ClientError, query};
use config::{ConfigError, Sources};
use discovery::{ApiResource, Discovery, DiscoveryError};
use manifest::ManifestError;

/// Flags every verb takes to find the server.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Path to the kubeconfig file (else $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (else its current-context).
    #[arg(long)]
    pub context: Option<String>,
    /// The namespace (else the context's, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// `-o` for `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The table with its extra columns.
    Wide,
    /// Objects as YAML.
    Yaml,
    /// Objects as JSON.
    Json,
    /// `kind.group/name` per object.
    Name,
}

/// `knit get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Resource type(s) (`pods`, `svc,cm`, `deploy.apps`) or TYPE/NAME.
    pub resource: String,
    /// Object names.
    pub names: Vec<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector (`app=web,tier!=db`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector (`metadata.name=web`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// After listing, print changes as they happen.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Leave out the header line of tables.
    #[arg(long)]
    pub no_headers: bool,
}

/// `knit describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Resource type (or TYPE/NAME).
    pub resource: String,
    /// Object names (all objects of the type when none).
    pub names: Vec<String>,
}

/// `knit apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Manifest file, directory, or `-` for stdin (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Take over fields another manager owns (server-side apply `force`).
    #[arg(long)]
    pub force_conflicts: bool,
    /// The field manager name sent to the server.
    #[arg(long, default_value = "knit")]
    pub field_manager: String,
}

/// `knit delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Manifest file, directory, or `-`, whose objects are deleted.
    #[arg(short = 'f', long = "filename", conflicts_with = "resource")]
    pub files: Vec<PathBuf>,
    /// Resource type (or TYPE/NAME).
    #[arg(required_unless_present = "files")]
    pub resource: Option<String>,
    /// Object names.
    pub names: Vec<String>,
    /// Deleting something already gone is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// `knit logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The pod (`NAME` or `pod/NAME`).
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// Why a verb failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Usage(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// A `Result` with a [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Whether a verb did everything it was asked (errors of single items are
/// printed as they happen and make the verb fail at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything worked.
    Ok,
    /// Something failed and was reported.
    Failed,
}

/// What every verb works with: the client, the namespace, discovery.
#[derive(Debug)]
pub struct Session {
    /// The server.
    pub client: Client,
    /// The namespace from `-n` or the context.
    pub namespace: String,
    /// Whether `-n` was given (manifests in other namespaces are refused).
    pub namespace_explicit: bool,
    discovery: Option<Discovery>,
}

impl Session {
    /// Connects as the flags and kubeconfig say (nothing is sent yet).
    pub async fn open(args: &ConnectionArgs) -> Result<Self> {
        let sources = Sources::from_process(args.kubeconfig.clone());
        let target =
            config::resolve(&sources, args.context.as_deref(), args.namespace.as_deref()).await?;
        Ok(Session {
            client: Client::new(target.config)?,
            namespace: target.namespace,
            namespace_explicit: args.namespace.is_some(),
            discovery: None,
        })
    }

    /// The server's resources, fetched on first use.
    pub async fn discovery(&mut self) -> Result<&Discovery> {
        if self.discovery.is_none() {
            self.discovery = Some(Discovery::fetch(&self.client).await?);
        }
        Ok(self.discovery.as_ref().expect("just set"))
    }

    /// What a command-line type name means.
    pub async fn resolve(&mut self, name: &str) -> Result<ApiResource> {
        Ok(self.discovery().await?.resolve(name)?.clone())
    }
}

/// `TYPE NAME...`, `TYPE1,TYPE2` or `TYPE/NAME...` as (type, names) groups.
pub fn split_resource_args(first: &str, rest: &[String]) -> Result<Vec<(String, Vec<String>)>> {
    if first.contains('/') {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for arg in std::iter::once(first).chain(rest.iter().map(String::as_str)) {
            let Some((kind, name)) = arg
                .split_once('/')
                .filter(|(k, n)| !k.is_empty() && !n.is_empty())
            else {
                return Err(CliError::Usage(format!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'knit get resource/<resource_name>' instead of 'knit get resource resource/<resource_name>'): \"{arg}\""
                )));
            };
            match groups.iter_mut().find(|(k, _)| k == kind) {
                Some((_, names)) => names.push(name.to_string()),
                None => groups.push((kind.to_string(), vec![name.to_string()])),
            }
        }
        return Ok(groups);
    }
    Ok(first
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| (t.to_string(), rest.to_vec()))
        .collect())
}

/// Prints a failure the way the user should see it.
pub fn report(error: &dyn std::fmt::Display) {
    eprintln!("error: {error}");
}

/// Runs a verb to its exit code.
pub fn exit_code(result: Result<Outcome>) -> ExitCode {
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::FAILURE,
        Err(error) => {
            match &error {
                // kubectl's own form for refusals: `Error from server (Reason): ...`.
                CliError::Client(ClientError::Api(failure)) => eprintln!("{failure}"),
                _ => report(&error),
            }
            ExitCode::FAILURE
        }
    }
}

/// `knit logs`: streams `pods/NAME/log` to stdout.
pub async fn logs(args: &LogsArgs) -> Result<Outcome> {
    let session = Session::open(&args.connection).await?;
    let pod = args
        .pod
        .strip_prefix("pod/")
        .or_else(|| args.pod.strip_prefix("pods/"))
        .unwrap_or(&args.pod);
    let mut params = Vec::new();
    if let Some(container) = &args.container {
        params.push(("container", container.clone()));
    }
    if args.follow {
        params.push(("follow", "true".to_string()));
    }
    let path = format!(
        "/api/v1/namespaces/{}/pods/{pod}/log{}",
        session.namespace,
        query(&params)
    );
    let mut stream = match session.client.stream(&path, "text/plain, */*").await {
        Ok(stream) => stream,
        Err(ClientError::Api(failure)) if matches!(failure.code, 404 | 405 | 501) => {
            let hint = if failure.message().contains(&format!("\"{pod}\" not found")) {
                String::new()
            } else {
                " (the server does not serve pod logs; in knit they come from the node agent, which must be running)".to_string()
            };
            report(&format!(
                "cannot get the logs of pod \"{pod}\" in namespace \"{}\": the server answered {} ({}): {}{hint}",
                session.namespace,
                failure.code,
                failure.reason(),
                failure.message()
            ));
            return Ok(Outcome::Failed);
        }
        Err(other) => return Err(other.into()),
    };
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        stdout.write_all(&chunk?)?;
        stdout.flush()?;
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_arguments_in_every_form() {
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            split_resource_args("svc,cm", &names).unwrap(),
            vec![("svc".into(), names.clone()), ("cm".into(), names.clone())]
        );
        assert_eq!(
            split_resource_args("svc/web", &["cm/x".into(), "svc/api".into()]).unwrap(),
            vec![
                ("svc".into(), vec!["web".into(), "api".into()]),
                ("cm".into(), vec!["x".into()])
            ]
        );
        assert!(split_resource_args("svc/web", &["plain".into()]).is_err());
    }
}

//! knit's API server: the Kubernetes REST and watch API over a revisioned
//! store. `router(state)` is the whole HTTP surface (tests drive it
//! directly); `server::serve` runs it on a socket with its background tasks.
//!
//! A request is parsed once into a `Target` (resource, namespace, name,
//! subresource) and dispatched by verb to the generic object path in
//! `objects`, to `watch`, or to a subresource.

pub mod discovery;
pub mod meta;
pub mod namespaces;
pub mod objects;
pub mod request;
pub mod server;
pub mod store;
pub mod subresources;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header::CONTENT_TYPE;
use http::{Method, StatusCode};
use knit_api::{ApiError, Result};
use serde_json::{Value, json};
use tokio::sync::watch as signal;

use crate::objects::{DeleteOptions, Part};
use crate::request::{Params, Target, body_type, read_body};
use crate::store::Store;

/// Settings of the API itself.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long a watch without `timeoutSeconds` lasts.
    pub watch_timeout: Duration,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            watch_timeout: Duration::from_secs(1800),
            bookmark_interval: Duration::from_secs(30),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ApiConfig>,
    /// Turns true when the server shuts down; ends watches.
    pub shutdown: signal::Receiver<bool>,
    /// Namespaces as create admission sees them (`namespaces::run_cache`).
    pub namespaces: Arc<namespaces::NamespaceCache>,
}

impl AppState {
    /// A state and the sender that signals its shutdown.
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> (AppState, signal::Sender<bool>) {
        let (tx, rx) = signal::channel(false);
        let state = AppState {
            store,
            config: Arc::new(config),
            shutdown: rx,
            namespaces: Arc::default(),
        };
        (state, tx)
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthy))
        .route("/livez", get(healthy))
        .route("/readyz", get(healthy))
        .route("/version", get(version))
        .fallback(dispatch)
        .with_state(state)
}

async fn healthy() -> &'static str {
    "ok"
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": "35",
            "gitVersion": concat!("v1.35.0+knit.", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }),
    )
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).unwrap_or_default(),
    )
        .into_response()
}

fn ok(value: impl std::borrow::Borrow<Value>) -> Result<Response> {
    Ok(json_response(StatusCode::OK, value.borrow()))
}

fn error_response(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &err.to_status())
}

async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let span = tracing::debug_span!("request", %method, %path);
    let _guard = span.enter();
    match handle(&state, request).await {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(code = err.code(), error = %err, "request failed");
            error_response(&err)
        }
    }
}

/// Splits `/api/v1/...` and `/apis/<group>/<version>/...` into group,
/// version and the rest.
fn split_path(path: &str) -> Option<(&str, Option<&str>, Vec<&str>)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", rest @ ..] => match rest {
            [] => Some(("", None, vec![])),
            [version, tail @ ..] => Some(("", Some(version), tail.to_vec())),
        },
        ["apis", rest @ ..] => match rest {
            [] => None,
            [group] => Some((group, None, vec![])),
            [group, version, tail @ ..] => Some((group, Some(version), tail.to_vec())),
        },
        _ => None,
    }
}

async fn handle(state: &AppState, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if path.trim_end_matches('/') == "/apis" {
        return Ok(json_response(StatusCode::OK, &discovery::api_groups()));
    }
    let (group, version, rest) = split_path(path).ok_or(ApiError::UnknownResource)?;
    let Some(version) = version else {
        let found = if group.is_empty() {
            Some(discovery::api_versions())
        } else {
            discovery::api_group(group)
        };
        return found
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or(ApiError::UnknownResource);
    };
    if rest.is_empty() {
        return discovery::resource_list(group, version)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or(ApiError::UnknownResource);
    }
    let target = Target::parse(group, version, &rest)?;
    let params = Params::parse(parts.uri.query()).with_user_agent(&parts.headers);
    let headers = parts.headers;
    let read = || async { read_body(&headers, body).await };

    let sub = target.subresource.as_deref();
    match (&parts.method, target.name.is_some(), sub) {
        (&Method::GET, false, None) if params.flag("watch") => {
            watch::watch(state, &target, &params).await
        }
        (&Method::GET, false, None) => ok(objects::list(state, &target, &params).await?),
        (&Method::POST, false, None) => {
            let body_type = body_type(&headers)?;
            let (code, created) =
                objects::create(state, &target, &params, &read().await?, body_type).await?;
            Ok(json_response(code, &created))
        }
        (&Method::DELETE, false, None) => {
            let options = DeleteOptions::parse(&params, &read().await?)?;
            ok(objects::delete_collection(state, &target, &params, &options).await?)
        }
        (&Method::GET, true, None | Some("status")) => ok(objects::get(state, &target).await?),
        (&Method::PUT, true, None | Some("status")) => {
            let body_type = body_type(&headers)?;
            let part = if sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            ok(objects::replace(state, &target, &params, &read().await?, body_type, part).await?)
        }
        (&Method::PATCH, true, None | Some("status")) => {
            let body_type = body_type(&headers)?;
            let part = if sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            if body_type == request::BodyType::ApplyPatch {
                let (code, applied) =
                    objects::apply(state, &target, &params, &read().await?, part).await?;
                return Ok(json_response(code, &applied));
            }
            ok(objects::patch(state, &target, &params, &read().await?, body_type, part).await?)
        }
        (&Method::DELETE, true, None) => {
            let name = target.name.as_deref().unwrap_or_default();
            if target.resource.kind == "Namespace" && namespaces::UNDELETABLE.contains(&name) {
                return Err(ApiError::Forbidden(format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                )));
            }
            let options = DeleteOptions::parse(&params, &read().await?)?;
            ok(objects::delete(state, &target, &options).await?)
        }
        (&Method::GET, true, Some("scale")) => ok(subresources::get_scale(state, &target).await?),
        (&Method::PUT | &Method::PATCH, true, Some("scale")) => {
            let body_type = body_type(&headers)?;
            ok(
                subresources::update_scale(state, &target, &params, &read().await?, body_type)
                    .await?,
            )
        }
        (&Method::POST, true, Some("binding")) => {
            let body_type = body_type(&headers)?;
            let status =
                subresources::bind(state, &target, &params, &read().await?, body_type).await?;
            Ok(json_response(StatusCode::CREATED, &status))
        }
        (&Method::PUT, true, Some("finalize")) => {
            let body_type = body_type(&headers)?;
            ok(subresources::finalize(state, &target, &params, &read().await?, body_type).await?)
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

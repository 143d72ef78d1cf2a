//! knit's API server: the Kubernetes REST and watch API over a revisioned
//! store. `router(state)` is the whole HTTP surface (tests drive it
//! directly); `server::serve` runs it on a socket with its background tasks.
//!
//! A request is parsed once into a `Target` (resource, namespace, name,
//! subresource) and dispatched by verb to the generic object path in
//! `objects`, to `watch`, or to a subresource.

pub mod auth;
pub mod discovery;
pub mod meta;
pub mod namespaces;
pub mod objects;
pub mod openapi;
pub mod pod_logs;
pub mod request;
pub mod server;
pub mod services;
pub mod store;
pub mod subresources;
pub mod table;
pub mod warning;
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
use crate::table::{Render, Shape};

/// Settings of the API itself.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long a watch without `timeoutSeconds` lasts.
    pub watch_timeout: Duration,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Where ClusterIPs come from.
    pub service_cidr: knit_ipam::Cidr,
    /// Where NodePorts come from.
    pub node_ports: knit_ipam::PortRange,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            watch_timeout: Duration::from_secs(1800),
            bookmark_interval: Duration::from_secs(30),
            service_cidr: knit_ipam::DEFAULT_SERVICE_CIDR
                .parse()
                .expect("the default service CIDR parses"),
            node_ports: knit_ipam::PortRange::DEFAULT,
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
    /// ClusterIPs and NodePorts, taken by service admission.
    pub services: Arc<services::ServiceAllocator>,
    /// How `pods/log` reaches node agents: TLS trusting the cluster CA
    /// with the API server's client certificate; plain HTTP when `None`
    /// (in-process tests).
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
}

impl AppState {
    /// A state and the sender that signals its shutdown. The service
    /// allocators start empty: `services::rebuild` fills them from the store.
    ///
    /// # Errors
    /// When the service CIDR is too large or too small to allocate from.
    pub fn new(
        store: Arc<dyn Store>,
        config: ApiConfig,
    ) -> knit_ipam::Result<(AppState, signal::Sender<bool>)> {
        let (tx, rx) = signal::channel(false);
        let allocator = services::ServiceAllocator::new(config.service_cidr, config.node_ports)?;
        let state = AppState {
            services: Arc::new(allocator),
            store,
            config: Arc::new(config),
            shutdown: rx,
            namespaces: Arc::default(),
            kubelet_tls: None,
        };
        Ok((state, tx))
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthy))
        .route("/livez", get(healthy))
        .route("/readyz", get(healthy))
        .route("/version", get(version))
        .route("/openapi/v3", get(openapi::index))
        .route("/openapi/v3/{*key}", get(openapi::document))
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
    let (result, warnings) = warning::collect(handle(&state, request)).await;
    let mut response = match result {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(code = err.code(), error = %err, "request failed");
            error_response(&err)
        }
    };
    warning::attach(&mut response, warnings);
    response
}

/// `/api` or `/apis`, aggregated when the client asks for it.
fn discovery_root(path: &str, headers: &http::HeaderMap) -> Response {
    let core = path.trim_end_matches('/') == "/api";
    let mut response = if discovery::wants_aggregated(headers) {
        let mut response = json_response(StatusCode::OK, &discovery::aggregated(core));
        response.headers_mut().insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static(discovery::AGGREGATED_V2),
        );
        response
    } else if core {
        json_response(StatusCode::OK, &discovery::api_versions())
    } else {
        json_response(StatusCode::OK, &discovery::api_groups())
    };
    // Caches must keep the two forms apart.
    response
        .headers_mut()
        .insert(http::header::VARY, http::HeaderValue::from_static("Accept"));
    response
}

/// Splits `/api/v1/...` and `/apis/<group>/<version>/...` into group,
/// version and the rest.
pub(crate) fn split_path(path: &str) -> Option<(&str, Option<&str>, Vec<&str>)> {
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
    match path.trim_end_matches('/') {
        "/api" | "/apis" => return Ok(discovery_root(path, &parts.headers)),
        _ => {}
    }
    let (group, version, rest) = split_path(path).ok_or(ApiError::UnknownResource)?;
    let Some(version) = version else {
        return discovery::api_group(group)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or(ApiError::UnknownResource);
    };
    if rest.is_empty() {
        return discovery::resource_list(group, version)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or(ApiError::UnknownResource);
    }
    if let Some((namespace, name)) = pod_logs::route(group, version, &rest) {
        return pod_logs::get(state, &parts.method, namespace, name, parts.uri.query()).await;
    }
    let target = Target::parse(group, version, &rest)?;
    let params = Params::parse(parts.uri.query()).with_user_agent(&parts.headers);
    let headers = parts.headers;
    let read = || async { read_body(&headers, body).await };

    let sub = target.subresource.as_deref();
    match (&parts.method, target.name.is_some(), sub) {
        (&Method::GET, false, None) if params.flag("watch") => {
            let render = Render::negotiate(target.resource, &headers, &params, Shape::Watch)?;
            watch::watch(state, &target, &params, render).await
        }
        (&Method::GET, false, None) => {
            let render = Render::negotiate(target.resource, &headers, &params, Shape::List)?;
            let list = objects::list(state, &target, &params).await?;
            Ok(table::respond(render.as_ref(), &list, Render::list))
        }
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
        (&Method::GET, true, None | Some("status")) => {
            let render = Render::negotiate(target.resource, &headers, &params, Shape::Single)?;
            let object = objects::get(state, &target).await?;
            Ok(table::respond(render.as_ref(), &object, Render::object))
        }
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
        (&Method::POST, true, Some("eviction")) => {
            let body_type = body_type(&headers)?;
            let status =
                subresources::evict(state, &target, &params, &read().await?, body_type).await?;
            Ok(json_response(StatusCode::CREATED, &status))
        }
        (&Method::PUT, true, Some("finalize")) => {
            let body_type = body_type(&headers)?;
            ok(subresources::finalize(state, &target, &params, &read().await?, body_type).await?)
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

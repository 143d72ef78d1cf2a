//! The API's front door: who is asking (client certificates signed by the
//! cluster CA, bearer tokens, impersonation by the admin), whether they may
//! (`authz`), how much at once (`limits`), and the few endpoints that exist
//! only for security: `/cacerts` for joining nodes, `/knit/v1/join` where a
//! join token buys a node its certificate, and SelfSubjectAccessReview.
//!
//! [`enforce`] is an axum middleware around the API router; `server`
//! installs it. The router alone (`crate::router`) trusts its caller, which
//! is what the in-process tests want; the network never reaches it bare.

pub mod authz;
pub mod limits;
pub mod pki;
pub mod tls;
pub mod tokens;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use knit_api::ApiError;
use serde_json::{Value, json};

use self::authz::{Attributes, Decision};
use self::pki::Pki;
use self::tls::Peer;
use self::tokens::Tokens;
use crate::AppState;

/// The group every authenticated request belongs to.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Where a joining node asks for its certificate.
pub const JOIN_PATH: &str = "/knit/v1/join";
/// Where anyone may fetch the CA bundle (a joining node checks it
/// against its token's hash before trusting it).
pub const CACERTS_PATH: &str = "/cacerts";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn new(user: impl Into<String>, groups: Vec<String>) -> Identity {
        Identity {
            user: user.into(),
            groups,
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node name of a node agent's identity.
    pub fn node_name(&self) -> Option<&str> {
        self.user
            .strip_prefix(authz::NODE_PREFIX)
            .filter(|name| !name.is_empty() && self.in_group(authz::NODES))
    }

    /// With `system:authenticated`, as Kubernetes adds it.
    fn authenticated(mut self) -> Identity {
        if !self.in_group(AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.to_owned());
        }
        self
    }
}

/// Marks a request from inside the process (the in-process controllers)
/// with the identity it acts as; the network cannot set extensions.
#[derive(Debug, Clone)]
pub struct InProcess(pub Identity);

/// What the middleware needs.
pub struct Guard {
    pub state: AppState,
    pub tokens: Tokens,
    pub pki: Arc<Pki>,
    pub limits: limits::Limits,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

/// The API router with authentication, authorization, limits and the
/// security endpoints around it.
pub fn secure(api: Router, guard: Arc<Guard>) -> Router {
    let ca = guard.pki.ca_pem().to_owned();
    let joiner = guard.clone();
    Router::new()
        .route(
            CACERTS_PATH,
            get(move || async move { ([(CONTENT_TYPE, "application/x-pem-file")], ca) }),
        )
        .route(
            JOIN_PATH,
            post(move |request: Request| async move { join(&joiner, request).await }),
        )
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(guard, enforce))
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).unwrap_or_default(),
    )
        .into_response()
}

fn status_response(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &err.to_status())
}

/// kube-apiserver's 401.
fn unauthorized() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401
        }),
    )
}

/// A 403 Status for `attrs`, with `details` as kube-apiserver fills them.
fn forbidden(attrs: &Attributes, user: &str, reason: &str) -> Response {
    let mut status = ApiError::Forbidden(attrs.forbidden_message(user, reason)).to_status();
    if attrs.resource_request {
        let mut details = json!({"group": attrs.group, "kind": attrs.resource});
        if !attrs.name.is_empty() {
            details["name"] = json!(attrs.name);
        }
        status["details"] = details;
    }
    json_response(StatusCode::FORBIDDEN, &status)
}

/// Paths anyone may reach, authenticated or not.
fn open_path(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/healthz" | "/livez" | "/readyz" | "/version" | CACERTS_PATH
    )
}

/// Who sent the request, from the in-process mark, the connection's
/// client certificate or the bearer token. `Err` is the 401.
fn authenticate(guard: &Guard, request: &Request) -> Result<Option<Identity>, ()> {
    if let Some(InProcess(identity)) = request.extensions().get::<InProcess>() {
        return Ok(Some(identity.clone()));
    }
    let bearer = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|info| info.0.identity.clone());
    // Kubernetes tries the certificate first, then the token; a token
    // that matches nothing is a 401 even when the path is open, so a
    // client learns its credential is bad.
    if let Some(identity) = peer {
        return Ok(Some(identity));
    }
    match bearer {
        Some(token) => guard.tokens.authenticate(token).map(Some).ok_or(()),
        None => Ok(None),
    }
}

/// Applies `Impersonate-User` / `Impersonate-Group`: only a user allowed
/// to impersonate (the admin) may, and the result is who the request acts as.
async fn impersonate(
    guard: &Guard,
    who: Identity,
    headers: &HeaderMap,
) -> Result<Identity, Response> {
    let Some(user) = headers.get("impersonate-user") else {
        if headers.contains_key("impersonate-group") {
            return Err(status_response(&ApiError::BadRequest(
                "requested [{Group system:nodes}] without impersonating a user".to_owned(),
            )));
        }
        return Ok(who);
    };
    let user = user.to_str().unwrap_or_default().to_owned();
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let attrs = Attributes {
        verb: "impersonate".to_owned(),
        resource_request: true,
        resource: "users".to_owned(),
        name: user.clone(),
        ..Attributes::default()
    };
    if authz::authorize(&guard.state, &who, &attrs).await != Decision::Allow {
        return Err(forbidden(&attrs, &who.user, ""));
    }
    Ok(Identity::new(user, groups).authenticated())
}

/// The middleware: authenticate, apply impersonation, answer
/// SelfSubjectAccessReviews, authorize, admit node writes, then hand the
/// request on within the limits.
pub async fn enforce(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let who = match authenticate(&guard, &request) {
        Ok(who) => who,
        Err(()) => return unauthorized(),
    };
    if open_path(&path) {
        return next.run(request).await;
    }
    let Some(who) = who else {
        return unauthorized();
    };
    let who = who.authenticated();
    let who = match impersonate(&guard, who, request.headers()).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let attrs = Attributes::from_request(request.method(), &path, request.uri().query());
    if path == JOIN_PATH {
        // The join handler checks its caller itself.
        let mut request = request;
        request.extensions_mut().insert(who);
        return next.run(request).await;
    }
    if let Decision::Deny(reason) = authz::authorize(&guard.state, &who, &attrs).await {
        tracing::debug!(user = %who.user, verb = %attrs.verb, resource = %attrs.full_resource(), "forbidden");
        return forbidden(&attrs, &who.user, &reason);
    }
    if attrs.resource_request
        && attrs.group == "authorization.k8s.io"
        && attrs.resource == "selfsubjectaccessreviews"
    {
        return self_subject_access_review(&guard, &who, request).await;
    }
    let request = match admit_node_create(&who, &attrs, request).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    guard.limits.run(&who, &attrs, request, next).await
}

/// NodeRestriction for creates, whose name is in the body: a node may
/// create only its own Node and Lease.
async fn admit_node_create(
    who: &Identity,
    attrs: &Attributes,
    request: Request,
) -> Result<Request, Response> {
    let Some(node) = who.node_name() else {
        return Ok(request);
    };
    if attrs.verb != "create" || !matches!(attrs.resource.as_str(), "nodes" | "leases") {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let bytes = crate::request::read_body(&parts.headers, body)
        .await
        .map_err(|e| status_response(&e))?;
    let object: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if name != node {
        let kind = if attrs.resource == "nodes" {
            "node"
        } else {
            "node lease"
        };
        let message = format!(
            "{} \"{name}\" is forbidden: node \"{node}\" is not allowed to modify {kind} \"{name}\"",
            attrs.resource
        );
        return Err(status_response(&ApiError::Forbidden(message)));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// `POST .../selfsubjectaccessreviews`: what `kubectl auth can-i` asks.
async fn self_subject_access_review(guard: &Guard, who: &Identity, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match crate::request::read_body(&parts.headers, body).await {
        Ok(bytes) => bytes,
        Err(e) => return status_response(&e),
    };
    let decoded = if bytes.starts_with(knit_api::protobuf::MAGIC) {
        knit_api::protobuf::decode_access_review(&bytes).ok()
    } else {
        serde_json::from_slice::<Value>(&bytes).ok()
    };
    let Some(mut review) = decoded else {
        return status_response(&ApiError::BadRequest(
            "the body is not a SelfSubjectAccessReview".to_owned(),
        ));
    };
    let spec = &review["spec"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let attrs = if let Some(res) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        Attributes {
            verb: text(&res["verb"]),
            resource_request: true,
            group: text(&res["group"]),
            resource: text(&res["resource"]),
            subresource: text(&res["subresource"]),
            namespace: text(&res["namespace"]),
            name: text(&res["name"]),
            path: String::new(),
        }
    } else if let Some(non) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        Attributes {
            verb: text(&non["verb"]),
            path: text(&non["path"]),
            ..Attributes::default()
        }
    } else {
        return status_response(&ApiError::Invalid {
            kind: "SelfSubjectAccessReview".into(),
            group: "authorization.k8s.io".into(),
            name: String::new(),
            causes: vec![knit_api::Cause::required(
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )],
        });
    };
    let decision = authz::authorize(&guard.state, who, &attrs).await;
    let mut status = json!({"allowed": decision == Decision::Allow});
    if let Decision::Deny(reason) = decision
        && !reason.is_empty()
    {
        status["reason"] = json!(reason);
    }
    review["status"] = status;
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    json_response(StatusCode::CREATED, &review)
}

/// What a node sends to join.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub node_name: String,
    /// The addresses its serving certificate must cover.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// What a node gets: its client credential and its serving certificate.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub ca: String,
    pub client_cert: String,
    pub client_key: String,
    pub serving_cert: String,
    pub serving_key: String,
}

/// `POST /knit/v1/join`: a join-token holder (or the admin) gets a
/// node's certificates, as k3s's server hands its agents theirs.
async fn join(guard: &Guard, request: Request) -> Response {
    let allowed = request
        .extensions()
        .get::<Identity>()
        .is_some_and(|who| who.in_group(tokens::BOOTSTRAPPERS) || who.in_group(authz::MASTERS));
    if !allowed {
        let user = request
            .extensions()
            .get::<Identity>()
            .map(|who| who.user.clone())
            .unwrap_or_default();
        let attrs = Attributes {
            verb: "post".to_owned(),
            path: JOIN_PATH.to_owned(),
            ..Attributes::default()
        };
        return forbidden(&attrs, &user, "");
    }
    let (parts, body) = request.into_parts();
    let bytes = match crate::request::read_body(&parts.headers, body).await {
        Ok(bytes) => bytes,
        Err(e) => return status_response(&e),
    };
    let ask: JoinRequest = match serde_json::from_slice(&bytes) {
        Ok(ask) => ask,
        Err(e) => return status_response(&ApiError::BadRequest(format!("join request: {e}"))),
    };
    if !knit_api::validation::is_dns1123_subdomain(&ask.node_name) {
        return status_response(&ApiError::BadRequest(format!(
            "join request: {:?} is not a valid node name",
            ask.node_name
        )));
    }
    let user = format!("{}{}", authz::NODE_PREFIX, ask.node_name);
    let client = guard.pki.issue_client(&user, &[authz::NODES]);
    let mut names: Vec<String> = ask.addresses.iter().map(ToString::to_string).collect();
    names.push(ask.node_name.clone());
    let serving = guard.pki.issue_serving(&user, &names);
    match (client, serving) {
        (Ok(client), Ok(serving)) => {
            tracing::info!(node = %ask.node_name, "node joined");
            let answer = JoinResponse {
                ca: guard.pki.ca_pem().to_owned(),
                client_cert: client.cert_pem,
                client_key: client.key_pem,
                serving_cert: serving.cert_pem,
                serving_key: serving.key_pem,
            };
            json_response(
                StatusCode::OK,
                &serde_json::to_value(answer).unwrap_or_default(),
            )
        }
        (Err(e), _) | (_, Err(e)) => status_response(&ApiError::Internal(e.to_string())),
    }
}

//! The API's front door: who is asking (client certificates signed by the
//! cluster CA, bearer tokens, impersonation by the admin), whether they may
//! (`authz`), how much at once (`limits`), and the few endpoints that exist
//! only for security: `/cacerts` for joining nodes, SelfSubjectAccessReview
//! and SelfSubjectRulesReview (`rules_review`),
//! and ([`nodecerts`]) `/knit/v1/join`, where a join token buys a node its
//! certificates, and `/knit/v1/serving-certificate`, where a node with its
//! credential gets a serving certificate for itself.
//!
//! [`enforce`] is an axum middleware around the API router; `server`
//! installs it. The router alone (`crate::router`) trusts its caller, which
//! is what the in-process tests want; the network never reaches it bare.

pub mod authz;
pub mod limits;
pub mod nodecerts;
pub mod pki;
mod rules_review;
pub mod tls;
pub mod tokens;

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
pub use self::nodecerts::{
    JOIN_PATH, JoinRequest, JoinResponse, SERVING_CERTIFICATE_PATH, ServingCertificate,
    ServingCertificateRequest,
};
use self::pki::Pki;
use self::tls::Peer;
use self::tokens::Tokens;
use crate::AppState;

/// The group every authenticated request belongs to.
pub const AUTHENTICATED: &str = "system:authenticated";
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
    let server = guard.clone();
    Router::new()
        .route(
            CACERTS_PATH,
            get(move || async move { ([(CONTENT_TYPE, "application/x-pem-file")], ca) }),
        )
        .route(
            JOIN_PATH,
            post(move |request: Request| async move { nodecerts::join(&joiner, request).await }),
        )
        .route(
            SERVING_CERTIFICATE_PATH,
            post(move |request: Request| async move {
                nodecerts::serving_certificate(&server, request).await
            }),
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
/// SelfSubjectAccessReviews and SelfSubjectRulesReviews, authorize, admit
/// node writes, then hand the request on within the limits.
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
    if path == JOIN_PATH || path == SERVING_CERTIFICATE_PATH {
        // These handlers check their caller themselves: who may depends
        // on the node name in the body.
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
    if attrs.resource_request
        && attrs.group == "authorization.k8s.io"
        && attrs.resource == "selfsubjectrulesreviews"
    {
        return rules_review::self_subject_rules_review(&who, request).await;
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

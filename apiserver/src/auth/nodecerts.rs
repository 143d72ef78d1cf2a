//! The certificates the cluster CA hands to nodes, at two endpoints:
//!
//! - `POST /knit/v1/join` ([`JOIN_PATH`]): a join-token holder (group
//!   `system:bootstrappers`) or the admin trades a node name for that
//!   node's client certificate (`system:node:<name>` in `system:nodes`)
//!   and its serving certificate, as k3s's server hands its agents theirs.
//! - `POST /knit/v1/serving-certificate` ([`SERVING_CERTIFICATE_PATH`]): a
//!   node that already has its credential — an agent started with
//!   `--kubeconfig`, or a joined one whose address changed — gets a new
//!   serving certificate for its own name only; the admin may ask for any
//!   node. A separate endpoint rather than a mode of the join, so that
//!   the join stays the one place a credential is minted, and this one can
//!   never hand out a client certificate.
//!
//! Both read the same body, `{"nodeName": N, "addresses": [IP, ...]}`;
//! the serving certificate's SANs are the addresses and the node name (the
//! API server dials a node's InternalIP and verifies the certificate for
//! it). The addresses are what the node says they are: its identity is
//! proven for its name, not for its addresses, as with the join.
//!
//! The middleware authenticates the caller and hands the request over
//! untouched by the authorizer; the handlers here decide who may.

use std::net::IpAddr;

use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use knit_api::ApiError;

use super::authz::{self, Attributes};
use super::{Guard, Identity, forbidden, json_response, pki, status_response, tokens};

/// Where a joining node asks for its certificates.
pub const JOIN_PATH: &str = "/knit/v1/join";
/// Where a node with its credential asks for its serving certificate.
pub const SERVING_CERTIFICATE_PATH: &str = "/knit/v1/serving-certificate";
/// The most addresses one serving certificate may name: a node has a
/// handful; more is a mistake, or someone making the CA sign in bulk.
pub const MAX_ADDRESSES: usize = 16;

/// What a node sends to join, or to get its serving certificate.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    pub node_name: String,
    /// The addresses its serving certificate must cover.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// The body of a serving certificate request: the same fields as a join.
pub type ServingCertificateRequest = JoinRequest;

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

/// What a node gets at [`SERVING_CERTIFICATE_PATH`].
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServingCertificate {
    /// The CA that signed it, PEM.
    pub ca: String,
    pub serving_cert: String,
    pub serving_key: String,
}

/// The identity the middleware put on the request, if any.
fn caller(request: &Request) -> Option<&Identity> {
    request.extensions().get::<Identity>()
}

/// The generic refusal for `path`, worded as kube-apiserver words a
/// non-resource 403.
fn refuse(path: &str, user: &str, reason: &str) -> Response {
    let attrs = Attributes {
        verb: "post".to_owned(),
        path: path.to_owned(),
        ..Attributes::default()
    };
    forbidden(&attrs, user, reason)
}

/// Reads and checks the body: a JSON object with a valid node name and
/// at most [`MAX_ADDRESSES`] addresses (`need_address` asks for one at
/// least). `what` names the request in the messages.
async fn read_request(
    request: Request,
    what: &str,
    need_address: bool,
) -> Result<JoinRequest, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = crate::request::read_body(&parts.headers, body).await?;
    let mut ask: JoinRequest =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))?;
    if !knit_api::validation::is_dns1123_subdomain(&ask.node_name) {
        return Err(ApiError::BadRequest(format!(
            "{what}: {:?} is not a valid node name",
            ask.node_name
        )));
    }
    ask.addresses.sort_unstable();
    ask.addresses.dedup();
    if need_address && ask.addresses.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{what}: addresses must hold at least one of the node's addresses"
        )));
    }
    if ask.addresses.len() > MAX_ADDRESSES {
        return Err(ApiError::BadRequest(format!(
            "{what}: {} addresses, at most {MAX_ADDRESSES} are allowed",
            ask.addresses.len()
        )));
    }
    if let Some(bad) = ask
        .addresses
        .iter()
        .find(|ip| ip.is_unspecified() || ip.is_multicast())
    {
        return Err(ApiError::BadRequest(format!(
            "{what}: {bad} is not an address a node can be reached at"
        )));
    }
    Ok(ask)
}

/// The user name of node `name`.
fn node_user(name: &str) -> String {
    format!("{}{name}", authz::NODE_PREFIX)
}

/// The serving certificate of node `ask.node_name`: its addresses and its
/// name as SANs, the node's user as CN.
fn issue_serving(guard: &Guard, ask: &JoinRequest) -> pki::Result<pki::Issued> {
    let mut names: Vec<String> = ask.addresses.iter().map(ToString::to_string).collect();
    names.push(ask.node_name.clone());
    guard.pki.issue_serving(&node_user(&ask.node_name), &names)
}

fn ok_json(value: impl serde::Serialize) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::to_value(value).unwrap_or_default(),
    )
}

/// `POST /knit/v1/join`: a join-token holder (or the admin) gets a
/// node's certificates.
pub(super) async fn join(guard: &Guard, request: Request) -> Response {
    let allowed = caller(&request)
        .is_some_and(|who| who.in_group(tokens::BOOTSTRAPPERS) || who.in_group(authz::MASTERS));
    if !allowed {
        let user = caller(&request)
            .map(|who| who.user.clone())
            .unwrap_or_default();
        return refuse(JOIN_PATH, &user, "");
    }
    let ask = match read_request(request, "join request", false).await {
        Ok(ask) => ask,
        Err(e) => return status_response(&e),
    };
    let client = guard
        .pki
        .issue_client(&node_user(&ask.node_name), &[authz::NODES]);
    match (client, issue_serving(guard, &ask)) {
        (Ok(client), Ok(serving)) => {
            tracing::info!(node = %ask.node_name, "node joined");
            ok_json(JoinResponse {
                ca: guard.pki.ca_pem().to_owned(),
                client_cert: client.cert_pem,
                client_key: client.key_pem,
                serving_cert: serving.cert_pem,
                serving_key: serving.key_pem,
            })
        }
        (Err(e), _) | (_, Err(e)) => status_response(&ApiError::Internal(e.to_string())),
    }
}

/// `POST /knit/v1/serving-certificate`: a node gets a serving certificate
/// for itself, the admin for any node.
pub(super) async fn serving_certificate(guard: &Guard, request: Request) -> Response {
    let Some(who) = caller(&request).cloned() else {
        return refuse(SERVING_CERTIFICATE_PATH, "", "");
    };
    let admin = who.in_group(authz::MASTERS);
    let own = who.node_name().map(str::to_owned);
    if !admin && own.is_none() {
        return refuse(SERVING_CERTIFICATE_PATH, &who.user, "");
    }
    let ask = match read_request(request, "serving certificate request", true).await {
        Ok(ask) => ask,
        Err(e) => return status_response(&e),
    };
    if !admin && own.as_deref() != Some(ask.node_name.as_str()) {
        let reason = format!(
            "node {:?} may get a serving certificate only for itself, not for node {:?}",
            own.unwrap_or_default(),
            ask.node_name
        );
        return refuse(SERVING_CERTIFICATE_PATH, &who.user, &reason);
    }
    match issue_serving(guard, &ask) {
        Ok(serving) => {
            tracing::info!(node = %ask.node_name, by = %who.user, "serving certificate issued");
            ok_json(ServingCertificate {
                ca: guard.pki.ca_pem().to_owned(),
                serving_cert: serving.cert_pem,
                serving_key: serving.key_pem,
            })
        }
        Err(e) => status_response(&ApiError::Internal(e.to_string())),
    }
}

/// Whether the PEM serving certificate is one node `node_name` can serve
/// with now: issued to `system:node:<node_name>`, within its validity,
/// and with every one of `addresses` and the node name among its SANs.
/// An agent asks this of the certificate it kept before asking for a new one.
pub fn serving_fits(cert_pem: &str, node_name: &str, addresses: &[IpAddr]) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let user = node_user(node_name);
    let named = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        == Some(user.as_str());
    let mut names: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    names.push(node_name.to_owned());
    named && cert.validity().is_valid() && pki::covers(cert_pem, &names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_certificate_fits_only_its_node_and_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::Pki::load_or_create(dir.path()).unwrap();
        let ip: IpAddr = "10.100.0.2".parse().unwrap();
        let ask = JoinRequest {
            node_name: "n1".to_owned(),
            addresses: vec![ip],
        };
        let names = vec![ip.to_string(), "n1".to_owned()];
        let cert = ca.issue_serving(&node_user("n1"), &names).unwrap().cert_pem;
        assert!(serving_fits(&cert, &ask.node_name, &ask.addresses));
        assert!(!serving_fits(&cert, "n2", &ask.addresses), "another node");
        let moved: IpAddr = "10.100.0.9".parse().unwrap();
        assert!(!serving_fits(&cert, "n1", &[moved]), "another address");
        let other_cn = ca.issue_serving("someone", &names).unwrap().cert_pem;
        assert!(!serving_fits(&other_cn, "n1", &[ip]), "not the node's user");
        assert!(!serving_fits("not PEM", "n1", &[ip]));
    }
}

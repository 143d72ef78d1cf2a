//! The `pods/log` subresource, what `kubectl logs` reads: kube-apiserver
//! does not keep logs; it finds the node the pod runs on and proxies the
//! request to that node's kubelet (here: the knit agent), streaming the
//! answer back, so `kubectl logs -f` follows the container as it writes.
//!
//! `GET /api/v1/namespaces/{ns}/pods/{name}/log?container=&follow=&previous=
//! &timestamps=&tailLines=&sinceSeconds=&sinceTime=&limitBytes=` becomes
//! `GET http://{node InternalIP}:{daemonEndpoints.kubeletEndpoint.Port}
//! /containerLogs/{ns}/{name}/{container}?...` with the same options.
//! Errors are kube-apiserver's: a pod with several containers needs
//! `container` (400, naming the choices), an unknown container is a 400,
//! an unscheduled pod a 400, bad options a 422 on `PodLogOptions`, a node
//! that cannot be reached a 500, and an error answer of the agent (such
//! as a 400 for a container still waiting to start) is passed on with its
//! code and text.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use knit_api::{ApiError, Cause, Result};
use serde_json::{Value, json};

use crate::AppState;
use crate::objects;
use crate::request::{Params, Target};

/// How long connecting to the node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The kubelet's port when the node does not say.
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// The options the node's `/containerLogs` understands, passed on as given.
const FORWARDED: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

/// `(namespace, pod)` when the path is a pod's `log` subresource.
pub fn route<'a>(group: &str, version: &str, rest: &[&'a str]) -> Option<(&'a str, &'a str)> {
    match (group, version, rest) {
        ("", "v1", ["namespaces", ns, "pods", name, "log"]) => Some((ns, name)),
        _ => None,
    }
}

/// Serves one `pods/log` request.
pub async fn get(
    state: &AppState,
    method: &Method,
    namespace: &str,
    name: &str,
    query: Option<&str>,
) -> Result<Response> {
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let params = Params::parse(query);
    validate(&params, name)?;
    let pod_target = Target::parse("", "v1", &["namespaces", namespace, "pods", name])?;
    let pod = objects::get(state, &pod_target).await?;
    let container = container_of(&pod, name, params.get("container").unwrap_or(""))?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = objects::get(state, &Target::parse("", "v1", &["nodes", node_name])?).await?;
    let (ip, port) = kubelet_address(&node).ok_or_else(|| {
        ApiError::Internal(format!("node {node_name:?} reports no address to reach it"))
    })?;
    let mut path = format!("/containerLogs/{namespace}/{name}/{container}");
    let forwarded: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            FORWARDED.contains(&key)
        })
        .collect();
    if !forwarded.is_empty() {
        path = format!("{path}?{}", forwarded.join("&"));
    }
    proxy(state.kubelet_tls.clone(), &ip, port, &path).await
}

/// kube-apiserver's checks of `PodLogOptions`.
fn validate(params: &Params, name: &str) -> Result<()> {
    let mut causes = Vec::new();
    let tail = params.int("tailLines")?;
    if let Some(n) = tail.filter(|n| *n < 0) {
        causes.push(Cause::invalid(
            "tailLines",
            &json!(n),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(n) = params.int("limitBytes")?.filter(|n| *n < 1) {
        causes.push(Cause::invalid(
            "limitBytes",
            &json!(n),
            "must be greater than 0",
        ));
    }
    let since = params.int("sinceSeconds")?;
    if let Some(n) = since.filter(|n| *n < 1) {
        causes.push(Cause::invalid(
            "sinceSeconds",
            &json!(n),
            "must be greater than 0",
        ));
    }
    if since.is_some() && params.get("sinceTime").is_some() {
        causes.push(Cause::forbidden(
            "",
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        group: String::new(),
        kind: "PodLogOptions".into(),
        name: name.to_string(),
        causes,
    })
}

/// The container the request is about, as kube-apiserver picks it.
fn container_of(pod: &Value, name: &str, asked: &str) -> Result<String> {
    let names = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    if !asked.is_empty() {
        let ephemeral = names("ephemeralContainers");
        if containers
            .iter()
            .chain(&init)
            .chain(&ephemeral)
            .any(|c| c == asked)
        {
            return Ok(asked.to_string());
        }
        return Err(ApiError::BadRequest(format!(
            "container {asked} is not valid for pod {name}"
        )));
    }
    match containers.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::BadRequest(format!(
            "a container name must be specified for pod {name}"
        ))),
        many => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                many.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::BadRequest(message))
        }
    }
}

/// An HTTP/1 connection over `io`, driven on its own task: it runs as
/// long as the body streams; the client hanging up drops the body and
/// with it this connection.
async fn handshake<T>(
    io: T,
    failed: impl Fn(String) -> ApiError,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "pods/log connection to the node ended");
        }
    });
    Ok(sender)
}

/// The node's `InternalIP` (else its first address) and kubelet port.
fn kubelet_address(node: &Value) -> Option<(String, u16)> {
    let addresses = node["status"]["addresses"].as_array()?;
    let ip = addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addresses.first())?["address"]
        .as_str()?
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((ip, port))
}

/// GETs `path` from the node and hands its body on as it arrives; over
/// TLS when `tls` is given, verifying the node's certificate for `ip`.
async fn proxy(
    tls: Option<Arc<rustls::ClientConfig>>,
    ip: &str,
    port: u16,
    path: &str,
) -> Result<Response> {
    let host = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{host}{path}");
    let failed = |why: String| ApiError::Internal(format!("Get \"{url}\": {why}"));
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(host.as_str()),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            let why = if err.kind() == std::io::ErrorKind::ConnectionRefused {
                "connect: connection refused".to_string()
            } else {
                format!("connect: {err}")
            };
            return Err(failed(format!("dial tcp {host}: {why}")));
        }
        Err(_) => return Err(failed(format!("dial tcp {host}: i/o timeout"))),
    };
    let mut sender = match tls {
        Some(tls) => {
            let name = ip
                .parse::<std::net::IpAddr>()
                .map(rustls::pki_types::ServerName::from)
                .map_err(|e| failed(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(tls);
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
                .await
                .map_err(|_| failed("TLS handshake timeout".to_string()))?
                .map_err(|e| failed(format!("tls: {e}")))?;
            handshake(stream, failed).await?
        }
        None => handshake(stream, failed).await?,
    };
    let request = http::Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, &host)
        .header(header::USER_AGENT, "knit-apiserver")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        // An agent may answer with a Status of its own.
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        return Err(match status {
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => ApiError::BadRequest(message),
            _ => ApiError::Internal(message),
        });
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::new(response.into_body()))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

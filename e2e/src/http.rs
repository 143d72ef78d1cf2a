//! A tiny HTTP/1.1 client for tests and benchmarks: JSON in, status + JSON out,
//! over hyper 1 with pooled keep-alive connections, and a reader for the
//! newline-delimited JSON that watch endpoints stream.
//!
//! It is deliberately small: TLS only against a CA it is given (a knit
//! cluster's), no redirects, no retries of requests that may have reached
//! the server, so a test sees exactly what the wire did.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be built (bad path or header).
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    /// Connecting, sending, or reading the response head failed: the request
    /// may or may not have reached the server.
    #[error("transport: {0}")]
    Transport(#[from] hyper_util::client::legacy::Error),
    /// The connection broke while the response body was being read.
    #[error("reading the body: {0}")]
    Body(#[from] hyper::Error),
    /// A kubeconfig or credential could not be used.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The server answered, but not with JSON.
    #[error("HTTP {status}: body is not JSON: {body}")]
    NotJson { status: StatusCode, body: String },
}

impl HttpError {
    /// True when the failure was the connection rather than the server's
    /// answer, i.e. a create may or may not have been committed.
    pub fn is_connection(&self) -> bool {
        matches!(self, HttpError::Transport(_) | HttpError::Body(_))
    }
}

/// A `Result` with an [`HttpError`].
pub type Result<T, E = HttpError> = std::result::Result<T, E>;

/// A response whose body was read completely and parsed as JSON
/// (`Value::Null` for an empty body).
#[derive(Debug, Clone)]
pub struct JsonResponse {
    pub status: StatusCode,
    pub body: Value,
}

impl JsonResponse {
    /// `body.reason` of a Kubernetes `Status`, if the body is one.
    pub fn status_reason(&self) -> Option<&str> {
        (self.body.get("kind")?.as_str()? == "Status")
            .then(|| self.body.get("reason")?.as_str())
            .flatten()
    }
}

/// A client bound to one base URL (`https://127.0.0.1:PORT`, or plain
/// `http://` for etcd's gateway). Cheap to clone; clones share the
/// connection pool.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    /// Sent as `Authorization: Bearer` when set.
    bearer: Option<String>,
    /// Kept to make clients with pools of their own ([`HttpClient::fresh`]).
    tls: rustls::ClientConfig,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .finish()
    }
}

impl HttpClient {
    /// A plain-HTTP client for `base`, e.g. `http://127.0.0.1:2379`, with
    /// no trailing slash (an `https://` base fails: it trusts no CA).
    pub fn new(base: impl Into<String>) -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Self::with_tls(base, tls)
    }

    /// A client for `base` that speaks TLS as `tls` says (its roots, its
    /// client certificate).
    pub fn with_tls(base: impl Into<String>, mut tls: rustls::ClientConfig) -> Self {
        // hyper-rustls sets ALPN from the enabled HTTP versions itself.
        tls.alpn_protocols.clear();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        HttpClient {
            client,
            base: base.into().trim_end_matches('/').to_owned(),
            bearer: None,
            tls,
        }
    }

    /// A client like this one (same server, TLS and token) with a
    /// connection pool of its own.
    pub fn fresh(&self) -> Self {
        Self::with_tls(self.base.clone(), self.tls.clone()).with_bearer(self.bearer.clone())
    }

    /// A client as a kubeconfig's current context describes it: the
    /// server, its CA, and the user's client certificate or token.
    pub fn from_kubeconfig(path: &std::path::Path) -> Result<Self> {
        let creds = Credentials::read(path)?;
        let tls = creds.tls_config()?;
        let mut client = Self::with_tls(creds.server.clone(), tls);
        client.bearer = creds.token;
        Ok(client)
    }

    /// The same client presenting `token` instead (and no certificate
    /// unless `tls` has one).
    pub fn with_bearer(mut self, token: Option<String>) -> Self {
        self.bearer = token;
        self
    }

    /// The base URL requests are relative to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request to `base + path` and returns the response with its
    /// body unread. `body` is sent as `application/json` when given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        Ok(self.client.request(req).await?)
    }

    /// Sends a request with a body of `content_type` (a merge patch, say)
    /// and reads the whole response body.
    pub async fn send_typed(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, content_type);
        if let Some(token) = &self.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Full::new(body))?;
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// Sends a request and reads the whole body, without parsing it.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// `GET base + path`, body parsed as JSON.
    pub async fn get_json(&self, path: &str) -> Result<JsonResponse> {
        let (status, bytes) = self.send_bytes(Method::GET, path, None).await?;
        parse_json(status, &bytes)
    }

    /// `POST base + path` with a JSON body, response parsed as JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<JsonResponse> {
        let body = Bytes::from(serde_json::to_vec(body).expect("a Value always serializes"));
        let (status, bytes) = self.send_bytes(Method::POST, path, Some(body)).await?;
        parse_json(status, &bytes)
    }

    /// Sends a request whose response is a stream of JSON lines (a watch),
    /// returning the status and a reader for the lines.
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, JsonLines)> {
        let resp = self.send(method, path, body).await?;
        Ok((resp.status(), JsonLines::new(resp.into_body())))
    }
}

/// What a kubeconfig's current context says about reaching its server.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub server: String,
    pub ca_pem: String,
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
    pub token: Option<String>,
}

impl Credentials {
    /// Reads the current context of the kubeconfig at `path` (inline
    /// `*-data` fields only, as knit writes them).
    pub fn read(path: &std::path::Path) -> Result<Self> {
        use base64::Engine;
        let bad = |what: &str| HttpError::Credentials(format!("{}: {what}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?;
        let doc: Value = serde_norway::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        let current = doc["current-context"]
            .as_str()
            .ok_or_else(|| bad("no current-context"))?;
        let named = |list: &str, name: &str| -> Value {
            doc[list]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["name"].as_str() == Some(name)))
                .cloned()
                .unwrap_or_default()
        };
        let context = &named("contexts", current)["context"];
        let cluster =
            &named("clusters", context["cluster"].as_str().unwrap_or_default())["cluster"];
        let user = &named("users", context["user"].as_str().unwrap_or_default())["user"];
        let decode = |v: &Value| -> Result<Option<String>> {
            let Some(b64) = v.as_str() else {
                return Ok(None);
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(&e.to_string()))?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Credentials {
            server: cluster["server"]
                .as_str()
                .ok_or_else(|| bad("no server"))?
                .to_owned(),
            ca_pem: decode(&cluster["certificate-authority-data"])?
                .ok_or_else(|| bad("no certificate-authority-data"))?,
            cert_pem: decode(&user["client-certificate-data"])?,
            key_pem: decode(&user["client-key-data"])?,
            token: user["token"].as_str().map(str::to_owned),
        })
    }

    /// A rustls configuration trusting the CA and presenting the client
    /// certificate, if there is one.
    pub fn tls_config(&self) -> Result<rustls::ClientConfig> {
        let identity = self.cert_pem.as_deref().zip(self.key_pem.as_deref());
        knit_apiserver::auth::tls::client_config(&self.ca_pem, identity)
            .map_err(|e| HttpError::Credentials(e.to_string()))
    }
}

fn parse_json(status: StatusCode, bytes: &[u8]) -> Result<JsonResponse> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(JsonResponse {
            status,
            body: Value::Null,
        });
    }
    match serde_json::from_slice(bytes) {
        Ok(body) => Ok(JsonResponse { status, body }),
        Err(_) => Err(HttpError::NotJson {
            status,
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]).into_owned(),
        }),
    }
}

/// Splits a streamed response body into lines (one JSON document each, as
/// Kubernetes and etcd's gateway send watch events), however the chunks fall.
pub struct JsonLines {
    body: Incoming,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
}

impl std::fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLines")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl JsonLines {
    /// Wraps a response body.
    pub fn new(body: Incoming) -> Self {
        JsonLines {
            body,
            buf: BytesMut::new(),
            scanned: 0,
        }
    }

    /// The next non-empty line without its line ending; `None` once the
    /// stream has ended (a trailing unterminated line is returned first).
    pub async fn next_line(&mut self) -> Option<Result<Bytes>> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(self.scanned + i + 1).freeze();
                self.scanned = 0;
                let line = line.slice(..trim_end(&line));
                if line.is_empty() {
                    continue;
                }
                return Some(Ok(line));
            }
            self.scanned = self.buf.len();
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Some(Err(HttpError::Body(e))),
                None => {
                    self.scanned = 0;
                    let rest = self.buf.split().freeze();
                    let rest = rest.slice(..trim_end(&rest));
                    return (!rest.is_empty()).then_some(Ok(rest));
                }
            }
        }
    }

    /// The next line parsed as JSON.
    pub async fn next_json(&mut self) -> Option<Result<Value>> {
        let line = match self.next_line().await? {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        Some(
            serde_json::from_slice(&line).map_err(|_| HttpError::NotJson {
                status: StatusCode::OK,
                body: String::from_utf8_lossy(&line).into_owned(),
            }),
        )
    }
}

/// Length of `line` without trailing `\r`/`\n`/spaces.
fn trim_end(line: &[u8]) -> usize {
    line.iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1)
}

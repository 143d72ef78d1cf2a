//! HTTP requests to the API server through `kube::Client` (which adds the
//! server URL, credentials and TLS from the kubeconfig), and what a failed
//! request means: an unreachable server names its URL, a refusal carries
//! the server's `Status` (reason, message, the fields at fault).

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unable to connect to the server at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot build a client for {url}: {reason}")]
    Setup { url: String, reason: String },
    #[error("{0}")]
    Api(#[from] ApiFailure),
    #[error("reading the answer of {url}: {reason}")]
    Body { url: String, reason: String },
    #[error("the server's answer to {path} is not what was expected: {reason}")]
    Decode { path: String, reason: String },
}

/// A `Result` with a [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A request the server answered with an error status.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    /// The HTTP status code.
    pub code: u16,
    /// The `Status` body, when the server sent one.
    pub status: Option<Value>,
    /// The raw body when it was not a `Status`.
    pub text: String,
}

impl ApiFailure {
    /// From an error response's code and body.
    pub fn from_body(code: u16, body: &[u8]) -> Self {
        let status = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(|v| v["kind"] == "Status");
        ApiFailure {
            code,
            status,
            text: String::from_utf8_lossy(body).trim().to_string(),
        }
    }

    /// The Status `reason` (`NotFound`, `Invalid`...), or one made from the
    /// HTTP code when the server sent none.
    pub fn reason(&self) -> String {
        if let Some(reason) = self
            .status
            .as_ref()
            .and_then(|s| s["reason"].as_str())
            .filter(|r| !r.is_empty())
        {
            return reason.to_string();
        }
        StatusCode::from_u16(self.code)
            .ok()
            .and_then(|c| c.canonical_reason())
            .map_or_else(|| format!("HTTP {}", self.code), |r| r.replace(' ', ""))
    }

    /// The Status `message`, or the body.
    pub fn message(&self) -> String {
        self.status
            .as_ref()
            .and_then(|s| s["message"].as_str())
            .map_or_else(|| self.text.clone(), str::to_string)
    }

    /// `details.causes` as (field, message) pairs, those without a field
    /// left out.
    pub fn causes(&self) -> Vec<(String, String)> {
        let Some(causes) = self
            .status
            .as_ref()
            .and_then(|s| s["details"]["causes"].as_array())
        else {
            return Vec::new();
        };
        causes
            .iter()
            .filter_map(|c| {
                let field = c["field"].as_str().filter(|f| !f.is_empty())?;
                Some((
                    field.to_string(),
                    c["message"].as_str().unwrap_or_default().to_string(),
                ))
            })
            .collect()
    }

    /// What went wrong in a line: the fields at fault with their messages
    /// when the server named them, else its message.
    pub fn detail(&self) -> String {
        let causes = self.causes();
        if causes.is_empty() {
            return self.message();
        }
        causes
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether the server answered 404.
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Error from server ({}): {}",
            self.reason(),
            self.message()
        )
    }
}

impl std::error::Error for ApiFailure {}

/// A complete answer.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self, path: &str) -> Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }
}

/// A client for one server.
#[derive(Clone)]
pub struct Client {
    kube: kube::Client,
    url: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.url).finish()
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `?k=v&...` from the pairs (empty when there are none).
pub fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let joined = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!("?{joined}")
}

impl Client {
    /// A client for the server in `config`.
    pub fn new(config: kube::Config) -> Result<Self> {
        let url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let kube = kube::Client::try_from(config).map_err(|e| ClientError::Setup {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        Ok(Client { kube, url })
    }

    async fn start(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<kube::client::Body>> {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request
            .body(kube::client::Body::from(body.unwrap_or_default()))
            .map_err(|e| ClientError::Setup {
                url: format!("{}{path}", self.url),
                reason: e.to_string(),
            })?;
        self.kube
            .send(request)
            .await
            .map_err(|e| ClientError::Connect {
                url: self.url.clone(),
                reason: connect_reason(&e),
            })
    }

    /// Sends a request and reads the whole answer, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        let response = self.start(method, path, headers, body).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Body {
                url: format!("{}{path}", self.url),
                reason: e.to_string(),
            })?
            .to_bytes();
        Ok(Response { status, body })
    }

    /// Like [`send`](Self::send), with error statuses as [`ApiFailure`].
    pub async fn send_ok(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        let response = self.send(method, path, headers, body).await?;
        if response.status.is_success() {
            Ok(response)
        } else {
            Err(ApiFailure::from_body(response.status.as_u16(), &response.body).into())
        }
    }

    /// GET as JSON, error statuses as [`ApiFailure`].
    pub async fn get_json(&self, path: &str, accept: &str) -> Result<Value> {
        self.send_ok(Method::GET, path, &[(header::ACCEPT, accept)], None)
            .await?
            .json(path)
    }

    /// A GET whose body is read as it arrives (watches, `logs -f`).
    pub async fn stream(
        &self,
        path: &str,
        accept: &str,
    ) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let response = self
            .start(Method::GET, path, &[(header::ACCEPT, accept)], None)
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(ApiFailure::from_body(status.as_u16(), &body).into());
        }
        let url = format!("{}{path}", self.url);
        Ok(response
            .into_body()
            .into_data_stream()
            .map_err(move |e| ClientError::Body {
                url: url.clone(),
                reason: e.to_string(),
            })
            .boxed())
    }
}

/// The innermost cause of a transport error ("Connection refused"), which
/// is what a person needs; the outer layers only say "client error".
fn connect_reason(error: &kube::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_lists_fields() {
        let body = br#"{"apiVersion":"v1","code":422,"details":{"causes":[{"field":"spec.replicas","message":"Invalid value: -1: must be greater than or equal to 0","reason":"FieldValueInvalid"}],"group":"apps","kind":"Deployment","name":"web"},"kind":"Status","message":"Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0","metadata":{},"reason":"Invalid","status":"Failure"}"#;
        let failure = ApiFailure::from_body(422, body);
        assert_eq!(failure.reason(), "Invalid");
        assert_eq!(
            failure.detail(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert!(
            failure
                .to_string()
                .starts_with("Error from server (Invalid): Deployment.apps")
        );
    }

    #[test]
    fn non_status_bodies_keep_the_text_and_code() {
        let failure = ApiFailure::from_body(405, b"method not allowed\n");
        assert_eq!(failure.reason(), "MethodNotAllowed");
        assert_eq!(failure.detail(), "method not allowed");
        let failure = ApiFailure::from_body(
            404,
            br#"{"kind":"Status","code":404,"reason":"NotFound","message":"pods \"x\" not found"}"#,
        );
        assert!(failure.is_not_found());
        assert_eq!(
            failure.to_string(),
            "Error from server (NotFound): pods \"x\" not found"
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            query(&[
                ("labelSelector", "app in (a,b),tier!=x".into()),
                ("fieldManager", "knit".into())
            ]),
            "?labelSelector=app%20in%20%28a%2Cb%29%2Ctier%21%3Dx&fieldManager=knit"
        );
        assert_eq!(query(&[]), "");
    }
}

//! A whole API server in-process on a temporary SQLite file, reached through
//! the real `kube` client or raw HTTP requests to the router.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Method, Request};
use http_body_util::BodyExt;
use knit_apiserver::store::sqlite::{History, SqliteStore};
use knit_apiserver::{ApiConfig, AppState, namespaces, router};
use serde_json::Value;
use tower::ServiceExt;

pub struct TestApi {
    pub client: kube::Client,
    pub router: Router,
    pub state: AppState,
    pub store: SqliteStore,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

pub async fn start() -> TestApi {
    start_with(History::default()).await
}

pub async fn start_with(history: History) -> TestApi {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("knit.db"), history)
        .await
        .expect("open store");
    let config = ApiConfig {
        bookmark_interval: Duration::from_millis(300),
        ..ApiConfig::default()
    };
    let (state, stop) = AppState::new(Arc::new(store.clone()), config).expect("default ranges");
    namespaces::bootstrap(&state).await.expect("bootstrap");
    namespaces::spawn_tasks(&state);
    let router = router(state.clone());
    let client = kube::Client::new(router.clone(), "default");
    TestApi {
        client,
        router,
        state,
        store,
        _stop: stop,
        _dir: dir,
    }
}

/// A raw response: status code, content type and body parsed as JSON (or
/// `Value::Null` for a body that is not JSON).
pub struct Reply {
    pub code: u16,
    pub body: Value,
    pub text: String,
}

impl TestApi {
    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(body.into())
            .expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("response");
        let code = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            code,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.request(Method::GET, uri, "application/json", Body::empty())
            .await
    }

    pub async fn post_json(&self, uri: &str, body: &Value) -> Reply {
        self.request(
            Method::POST,
            uri,
            "application/json",
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    /// Reads the events of a watch until `count` arrived or `wait` passed.
    pub async fn watch_events(&self, uri: &str, count: usize, wait: Duration) -> Vec<Value> {
        let request = Request::builder()
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("response");
        assert_eq!(response.status().as_u16(), 200, "watch {uri}");
        let mut body = response.into_body();
        let mut buffer = Vec::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while events.len() < count {
            let frame = tokio::time::timeout_at(deadline, body.frame()).await;
            let Ok(Some(Ok(frame))) = frame else { break };
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    events.push(serde_json::from_slice(&line).expect("event is JSON"));
                }
            }
        }
        events
    }
}

/// An in-process API behind the real security layer (authentication,
/// authorization, limits), with a CA and a token file of its own.
pub struct SecuredApi {
    /// The router with the security layer in front.
    pub app: Router,
    /// The cluster CA that signs its certificates.
    pub pki: Arc<knit_apiserver::auth::pki::Pki>,
    /// The join token it accepts.
    pub join: knit_apiserver::auth::tokens::JoinToken,
    _api: TestApi,
    _dir: tempfile::TempDir,
}

impl SecuredApi {
    /// Sends `request` through the security layer: the status and the
    /// JSON body (`Null` when there is none).
    pub async fn send(&self, request: Request<Body>) -> (http::StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.expect("a response");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// A [`SecuredApi`] whose token file holds `token_lines` (kube-apiserver's
/// `token,user,uid,"group,..."` lines).
pub async fn secured(token_lines: &str) -> SecuredApi {
    use knit_apiserver::auth::pki::Pki;
    use knit_apiserver::auth::tokens::{JoinToken, Tokens};
    use knit_apiserver::auth::{Guard, limits, secure};

    let api = start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let pki = Arc::new(Pki::load_or_create(&dir.path().join("tls")).expect("a CA"));
    let file = dir.path().join("tokens.csv");
    std::fs::write(&file, token_lines).expect("a token file");
    let join = JoinToken::generate(&pki.ca_hash());
    let tokens = Tokens::load(Some(&file), Some(join.clone())).expect("tokens");
    let guard = Arc::new(Guard {
        state: api.state.clone(),
        tokens,
        pki: pki.clone(),
        limits: limits::Limits::new(100, 10),
    });
    SecuredApi {
        app: secure(api.router.clone(), guard),
        pki,
        join,
        _api: api,
        _dir: dir,
    }
}

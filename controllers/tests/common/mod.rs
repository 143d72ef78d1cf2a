//! A whole API server in-process on a temporary SQLite file, for the
//! controllers' tests to run against through the real `kube` client.

#![allow(dead_code)]

use std::sync::Arc;

use knit_apiserver::store::sqlite::{History, SqliteStore};
use knit_apiserver::{ApiConfig, AppState, namespaces, router};
use kube::Client;

/// The server's client; the server lives as long as this does.
pub struct Cluster {
    pub client: Client,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// An API server with its initial namespaces and no controllers.
pub async fn api_server() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("knit.db"), History::default())
        .await
        .unwrap();
    let (state, stop) = AppState::new(Arc::new(store), ApiConfig::default()).unwrap();
    namespaces::bootstrap(&state).await.unwrap();
    namespaces::spawn_tasks(&state);
    Cluster {
        client: Client::new(router(state), "default"),
        _stop: stop,
        _dir: dir,
    }
}

/// Polls `check` every 20 ms until it holds; fails the test, naming
/// `what`, once `deadline` has passed.
pub async fn eventually<F, Fut>(deadline: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

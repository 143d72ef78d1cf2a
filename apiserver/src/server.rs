//! Running the API server: the store in the data dir, the initial
//! namespaces, background tasks, the listening socket, the admin
//! kubeconfig, and a clean shutdown.
//!
//! Plain HTTP for now; TLS and authentication will wrap the listener here.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::store::sqlite::{History, SqliteStore};
use crate::{ApiConfig, AppState, namespaces, router, services};

/// Everything `knit server` needs to run the API.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub history: History,
    pub api: ApiConfig,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot use data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot create the initial objects: {0}")]
    Bootstrap(#[from] knit_api::ApiError),
    #[error("bad address ranges: {0}")]
    Ranges(#[from] knit_ipam::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
}

/// The path of the admin kubeconfig in a data dir.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.kubeconfig")
}

/// A kubeconfig that points kubectl at `server` as the admin.
pub fn admin_kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: knit
  cluster:
    server: {server}
contexts:
- name: knit
  context:
    cluster: knit
    user: admin
    namespace: default
current-context: knit
users:
- name: admin
  user: {{}}
"
    )
}

/// The URL clients use to reach a listener: a wildcard address is reached
/// on loopback.
fn client_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => "127.0.0.1".to_string(),
            SocketAddr::V6(_) => "[::1]".to_string(),
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}", addr.port())
}

/// Runs the API server until `shutdown` completes, then stops accepting,
/// ends open watches and returns once in-flight requests are done.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(config, shutdown, |_| {}).await
}

/// [`serve`], calling `ready` with the API's router once it is about to
/// serve: in-process clients (the controllers) use it as their transport.
pub async fn serve_with(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(axum::Router),
) -> Result<(), ServerError> {
    let data_dir = &config.data_dir;
    let dir_error = |source| ServerError::DataDir {
        path: data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(dir_error)?;
    let store = SqliteStore::open(&data_dir.join("knit.db"), config.history.clone()).await?;
    let (state, stop) = AppState::new(Arc::new(store), config.api.clone())?;
    services::rebuild_from_store(&state).await?;
    namespaces::bootstrap(&state).await?;
    namespaces::spawn_tasks(&state);
    tokio::spawn(services::run_repair(state.clone()));

    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    services::ensure_kubernetes_service(&state, addr.port()).await?;
    services::ensure_kubernetes_endpoints(&state, addr).await?;
    let url = client_url(addr);
    std::fs::write(kubeconfig_path(data_dir), admin_kubeconfig(&url)).map_err(dir_error)?;
    tracing::info!(%url, data_dir = %data_dir.display(), "knit API server ready");
    let app = router(state);
    ready(app.clone());

    // Watch events and responses are small writes: without TCP_NODELAY,
    // Nagle's algorithm holds them until the peer's delayed ACK (~40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            // Ends open watches, so the graceful shutdown does not wait on them.
            let _ = stop.send(true);
        })
        .await
        .map_err(ServerError::Serve)
}

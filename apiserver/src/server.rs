//! Running the API server: the store in the data dir, the initial
//! namespaces, background tasks, the cluster CA and certificates, the
//! HTTPS socket with authentication and authorization around the router,
//! the admin and controllers kubeconfigs, the join token, and a clean
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::pki::{self, Issued, Pki, PkiError};
use crate::auth::tls::{Peer, TlsError, TlsListener};
use crate::auth::tokens::{JoinToken, TokenError, Tokens};
use crate::auth::{Guard, Identity, InProcess, authz, limits};
use crate::store::sqlite::{History, SqliteStore};
use crate::{ApiConfig, AppState, namespaces, router, services};

/// Everything `knit server` needs to run the API.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub history: History,
    pub api: ApiConfig,
    pub security: SecurityConfig,
}

/// Authentication and limits.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Static bearer tokens (`token,user,uid,"groups"` lines).
    pub token_auth_file: Option<PathBuf>,
    /// More names or addresses the serving certificate must cover.
    pub extra_sans: Vec<String>,
    /// Short requests in flight before 429s.
    pub max_inflight: usize,
    /// Watches one user may keep open.
    pub max_watches_per_user: usize,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            token_auth_file: None,
            extra_sans: Vec::new(),
            max_inflight: limits::DEFAULT_MAX_INFLIGHT,
            max_watches_per_user: limits::DEFAULT_MAX_WATCHES_PER_USER,
        }
    }
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
    #[error("certificates: {0}")]
    Pki(#[from] PkiError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("tokens: {0}")]
    Tokens(#[from] TokenError),
}

/// The admin's user name (kubeadm's).
pub const ADMIN_USER: &str = "kubernetes-admin";

/// Where the CA, certificates and keys live in a data dir.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The file holding the join token in a data dir.
pub fn join_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("join-token")
}

/// The path of the controllers' kubeconfig in a data dir.
pub fn controllers_kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("controllers.kubeconfig")
}

/// The path of the admin kubeconfig in a data dir.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.kubeconfig")
}

/// A kubeconfig for `server`, trusting `ca_pem`, as the holder of the
/// client certificate `credential`.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, credential: &Issued) -> String {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: knit
  cluster:
    server: {server}
    certificate-authority-data: {ca}
contexts:
- name: knit
  context:
    cluster: knit
    user: {user}
    namespace: default
current-context: knit
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ca = b64(ca_pem),
        cert = b64(&credential.cert_pem),
        key = b64(&credential.key_pem),
    )
}

/// The names the serving certificate covers: loopback, the listen
/// address, the in-cluster names of the `kubernetes` Service and its
/// ClusterIP, and whatever the operator adds.
fn serving_names(
    listen: SocketAddr,
    service_ip: std::net::IpAddr,
    extra: &[String],
) -> Vec<String> {
    let mut names: Vec<String> = [
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .map(str::to_owned)
    .to_vec();
    names.push(service_ip.to_string());
    if listen.ip().is_unspecified() {
        names.push("::1".to_owned());
    } else {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    names.dedup();
    names
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
    format!("https://{host}:{}", addr.port())
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
    let (mut state, stop) = AppState::new(Arc::new(store), config.api.clone())?;
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

    let pki = Arc::new(Pki::load_or_create(&tls_dir(data_dir))?);
    let service_ip = knit_ipam::ClusterIpAllocator::new(state.services.service_cidr())?
        .first_address()
        .0;
    let names = serving_names(addr, service_ip, &config.security.extra_sans);
    let serving = pki.serving_pair("server", "kube-apiserver", &names)?;
    let admin = pki.client_pair("admin", ADMIN_USER, &[authz::MASTERS])?;
    let controllers = pki.client_pair("controllers", authz::CONTROLLERS, &[])?;
    let join = JoinToken::load_or_create(&join_token_path(data_dir), &pki.ca_hash())?;
    let tokens = Tokens::load(
        config.security.token_auth_file.as_deref(),
        Some(join.clone()),
    )?;

    let url = client_url(addr);
    pki::write_private(
        &kubeconfig_path(data_dir),
        kubeconfig(&url, pki.ca_pem(), "admin", &admin).as_bytes(),
    )?;
    pki::write_private(
        &controllers_kubeconfig_path(data_dir),
        kubeconfig(&url, pki.ca_pem(), "controllers", &controllers).as_bytes(),
    )?;
    let tls =
        crate::auth::tls::server_config(pki.ca_pem(), &serving.cert_pem, &serving.key_pem, false)?;
    tracing::info!(%url, data_dir = %data_dir.display(), "knit API server ready");
    tracing::info!(
        "nodes join with: knit agent --server {url} --token {join} (also in {})",
        join_token_path(data_dir).display()
    );
    // kubeadm's apiserver-kubelet-client: what the agents' endpoints accept.
    let kubelet_client = pki.client_pair(
        "kubelet-client",
        "kube-apiserver-kubelet-client",
        &[authz::MASTERS],
    )?;
    state.kubelet_tls = Some(Arc::new(crate::auth::tls::client_config(
        pki.ca_pem(),
        Some((&kubelet_client.cert_pem, &kubelet_client.key_pem)),
    )?));
    let guard = Arc::new(Guard {
        state: state.clone(),
        tokens,
        pki,
        limits: limits::Limits::new(
            config.security.max_inflight,
            config.security.max_watches_per_user,
        ),
    });
    let app = crate::auth::secure(router(state), guard);
    let controllers_identity = Identity::new(authz::CONTROLLERS, Vec::new());
    ready(
        app.clone()
            .layer(axum::Extension(InProcess(controllers_identity))),
    );

    let listener = TlsListener::new(listener, tls).map_err(ServerError::Serve)?;
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            // Ends open watches, so the graceful shutdown does not wait on them.
            let _ = stop.send(true);
        })
        .await
        .map_err(ServerError::Serve)
}

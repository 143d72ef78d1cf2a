//! Joining a cluster with a join token, as a k3s agent does: fetch the
//! server's CA bundle from `/cacerts` without trusting anyone yet, accept
//! it only if its SHA-256 is the one the token carries, then — now over a
//! verified connection — trade the token for this node's client
//! certificate (`system:node:<name>` in `system:nodes`) and its serving
//! certificate. The result is a kubeconfig in the agent's state dir; a
//! restart finds it there and does not need the token again.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use knit_apiserver::auth::pki::{self, ca_hash};
use knit_apiserver::auth::tokens::JoinToken;
use knit_apiserver::auth::{CACERTS_PATH, JOIN_PATH, JoinRequest, JoinResponse};

/// Where the joined node's kubeconfig lives in its state dir.
pub fn kubeconfig_path(state_dir: &Path) -> PathBuf {
    state_dir.join("kubeconfig")
}

/// Where the node's serving certificate and key live in its state dir.
pub fn serving_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = state_dir.join("tls");
    (dir.join("serving.crt"), dir.join("serving.key"))
}

/// The CA bundle the node trusts, once joined.
pub fn ca_path(state_dir: &Path) -> PathBuf {
    state_dir.join("tls").join("ca.crt")
}

/// A kube client for `server` from a kubeconfig written here, so kube's
/// own TLS and credential handling does the work.
async fn client(yaml: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).context("building a kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("building a client configuration")?;
    kube::Client::try_from(config).context("building a client")
}

fn kubeconfig_yaml(server: &str, cluster: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n{cluster}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n{user}\n"
    )
}

/// Joins `server` with `token` unless this node joined it before, and
/// returns the path of the node's kubeconfig.
pub async fn join(
    server: &str,
    token: &str,
    node_name: &str,
    node_ip: Ipv4Addr,
    state_dir: &Path,
) -> anyhow::Result<PathBuf> {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let token = JoinToken::parse(token).context("--token")?;
    let path = kubeconfig_path(state_dir);
    let (serving_cert, _) = serving_paths(state_dir);
    if path.is_file() && serving_cert.is_file() && ca_path(state_dir).is_file() {
        let known = std::fs::read_to_string(ca_path(state_dir))?;
        if ca_hash(&known) == token.ca_hash {
            tracing::info!(kubeconfig = %path.display(), "already joined");
            return Ok(path);
        }
    }
    let server = server.trim_end_matches('/');

    // Anyone could answer this first request: the hash decides.
    let insecure = client(&kubeconfig_yaml(
        server,
        "    insecure-skip-tls-verify: true",
        "    {}",
    ))
    .await?;
    let request = http::Request::get(CACERTS_PATH).body(Vec::new())?;
    let ca = insecure
        .request_text(request)
        .await
        .with_context(|| format!("fetching {server}{CACERTS_PATH}"))?;
    let served = ca_hash(&ca);
    if served != token.ca_hash {
        bail!(
            "the server at {server} is not the one the token is for: its CA hashes to {served}, the token expects {}",
            token.ca_hash
        );
    }

    let verified = client(&kubeconfig_yaml(
        server,
        &format!("    certificate-authority-data: {}", b64(&ca)),
        &format!("    token: {}", token.bearer()),
    ))
    .await?;
    let ask = JoinRequest {
        node_name: node_name.to_owned(),
        addresses: vec![node_ip.into()],
    };
    let request = http::Request::post(JOIN_PATH)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&ask)?)?;
    let answer: JoinResponse = verified
        .request(request)
        .await
        .with_context(|| format!("joining {server} as node {node_name}"))?;

    let tls_dir = state_dir.join("tls");
    std::fs::create_dir_all(&tls_dir).with_context(|| format!("creating {}", tls_dir.display()))?;
    let (cert_path, key_path) = serving_paths(state_dir);
    pki::write_private(&key_path, answer.serving_key.as_bytes())?;
    std::fs::write(&cert_path, &answer.serving_cert)?;
    let yaml = kubeconfig_yaml(
        server,
        &format!("    certificate-authority-data: {}", b64(&answer.ca)),
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}",
            b64(&answer.client_cert),
            b64(&answer.client_key)
        ),
    );
    pki::write_private(&path, yaml.as_bytes())?;
    // Last: its presence marks a finished join.
    std::fs::write(ca_path(state_dir), &answer.ca)?;
    tracing::info!(node = node_name, kubeconfig = %path.display(), "joined the cluster");
    Ok(path)
}

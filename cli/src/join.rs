//! A node's credentials. Joining a cluster with a join token, as a k3s
//! agent does: fetch the server's CA bundle from `/cacerts` without
//! trusting anyone yet, accept it only if its SHA-256 is the one the token
//! carries, then — now over a verified connection — trade the token for
//! this node's client certificate (`system:node:<name>` in
//! `system:nodes`) and its serving certificate. The result is a kubeconfig
//! in the agent's state dir; a restart finds it there and does not need
//! the token again.
//!
//! And the serving certificate of any agent, joined or started with
//! `--kubeconfig` ([`serving_tls`]): the one kept in the state dir while it
//! still fits the node's name and address, else a new one from
//! `/knit/v1/serving-certificate` with the node's credential. There is no
//! way to an agent without one: its endpoint is served over TLS or not at all.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use knit_apiserver::auth::pki::{self, ca_hash};
use knit_apiserver::auth::tokens::JoinToken;
use knit_apiserver::auth::{
    CACERTS_PATH, JOIN_PATH, JoinRequest, JoinResponse, SERVING_CERTIFICATE_PATH,
    ServingCertificate, nodecerts,
};

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
    let request = node_request(JOIN_PATH, node_name, node_ip)?;
    let answer: JoinResponse = verified
        .request(request)
        .await
        .with_context(|| format!("joining {server} as node {node_name}"))?;

    keep_serving(state_dir, &answer.serving_cert, &answer.serving_key)?;
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

/// How long the agent waits for the API server to hand it a serving
/// certificate before it gives up starting.
const SERVING_TIMEOUT: Duration = Duration::from_secs(60);

/// The CA bundle a kubeconfig verifies its API server with, PEM.
///
/// The agent's endpoint trusts this CA for its clients (the API server's
/// kubelet client certificate, the admin's), rather than one fetched from
/// `/cacerts`: it is what the agent already trusts the API server with,
/// so starting the agent trusts nothing new from the network. A kubeconfig
/// without one (`insecure-skip-tls-verify`, or the system's roots) is
/// refused: such an agent could not tell the cluster's clients from anyone's.
pub fn kubeconfig_ca(config: &kube::Config) -> anyhow::Result<String> {
    if config.accept_invalid_certs {
        bail!(
            "it skips verifying the API server (insecure-skip-tls-verify); the agent needs the cluster CA as its certificate-authority(-data)"
        );
    }
    let Some(ders) = config.root_cert.as_ref().filter(|ders| !ders.is_empty()) else {
        bail!(
            "it names no certificate authority; the agent needs the cluster CA as its certificate-authority(-data)"
        );
    };
    Ok(ders.iter().map(|der| pem_certificate(der)).collect())
}

/// One DER certificate as PEM.
fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Whether two PEM bundles hold the same certificates (in any order,
/// whatever their line breaks).
fn same_certificates(a: &str, b: &str) -> bool {
    let ders = |pem: &str| {
        knit_apiserver::auth::tls::certs(pem).ok().map(|certs| {
            let mut ders: Vec<Vec<u8>> = certs.iter().map(|c| c.to_vec()).collect();
            ders.sort();
            ders
        })
    };
    matches!((ders(a), ders(b)), (Some(a), Some(b)) if a == b)
}

/// The TLS configuration of the node's endpoint, from the certificate kept
/// in `state_dir` if it was issued by `ca_pem` and still fits `node_name`
/// and `node_ip`; `None` when there is none that does.
fn kept_serving(
    ca_pem: &str,
    node_name: &str,
    node_ip: Ipv4Addr,
    state_dir: &Path,
) -> Option<Arc<rustls::ServerConfig>> {
    let (cert_path, key_path) = serving_paths(state_dir);
    let ca = std::fs::read_to_string(ca_path(state_dir)).ok()?;
    let cert = std::fs::read_to_string(&cert_path).ok()?;
    let key = std::fs::read_to_string(&key_path).ok()?;
    if !same_certificates(&ca, ca_pem)
        || !nodecerts::serving_fits(&cert, node_name, &[node_ip.into()])
    {
        return None;
    }
    knit_apiserver::auth::tls::server_config(ca_pem, &cert, &key, true).ok()
}

/// The endpoint's TLS configuration: the kept serving certificate, or a
/// new one that `client` (the node's credential, verifying the API server
/// against `ca_pem`) obtains at `/knit/v1/serving-certificate` and this
/// keeps in `state_dir`. Clients must present a certificate `ca_pem` signed.
///
/// # Errors
/// When the API server cannot be reached, refuses (the credential is not
/// this node's nor the admin's), or signs with another CA than `ca_pem`.
pub async fn serving_tls(
    client: &kube::Client,
    server: &str,
    ca_pem: &str,
    node_name: &str,
    node_ip: Ipv4Addr,
    state_dir: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    if let Some(tls) = kept_serving(ca_pem, node_name, node_ip, state_dir) {
        tracing::info!(node = node_name, "serving with the kept certificate");
        return Ok(tls);
    }
    let request = node_request(SERVING_CERTIFICATE_PATH, node_name, node_ip)?;
    let what = || format!("getting node {node_name}'s serving certificate from {server}");
    let answer: ServingCertificate =
        match tokio::time::timeout(SERVING_TIMEOUT, client.request(request)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(kube::Error::Api(status))) => bail!(
                "{}: refused ({} {}): {}; the kubeconfig's credential must be node {node_name}'s \
                 (system:node:{node_name} in system:nodes) or the admin's",
                what(),
                status.code,
                status.reason,
                status.message
            ),
            Ok(Err(err)) => return Err(anyhow::Error::new(err).context(what())),
            Err(_) => bail!("{}: no answer within {SERVING_TIMEOUT:?}", what()),
        };
    if !same_certificates(&answer.ca, ca_pem) {
        bail!(
            "{}: the server signs with a CA that is not the one the kubeconfig trusts",
            what()
        );
    }
    let tls = knit_apiserver::auth::tls::server_config(
        ca_pem,
        &answer.serving_cert,
        &answer.serving_key,
        true,
    )
    .with_context(what)?;
    keep_serving(state_dir, &answer.serving_cert, &answer.serving_key)?;
    // The server's own text of its CA, so that a joined node's check of
    // it against its token's hash still holds.
    std::fs::write(ca_path(state_dir), &answer.ca)
        .with_context(|| format!("writing {}", ca_path(state_dir).display()))?;
    tracing::info!(node = node_name, "got a serving certificate");
    Ok(tls)
}

/// A node's request for its certificates at `path` (the join, or the
/// serving certificate alone).
fn node_request(
    path: &str,
    node_name: &str,
    node_ip: Ipv4Addr,
) -> anyhow::Result<http::Request<Vec<u8>>> {
    let ask = JoinRequest {
        node_name: node_name.to_owned(),
        addresses: vec![node_ip.into()],
    };
    Ok(http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&ask)?)?)
}

/// Keeps the node's serving certificate and key (owner-only) in
/// `state_dir/tls`.
fn keep_serving(state_dir: &Path, cert: &str, key: &str) -> anyhow::Result<()> {
    let tls_dir = state_dir.join("tls");
    std::fs::create_dir_all(&tls_dir).with_context(|| format!("creating {}", tls_dir.display()))?;
    let (cert_path, key_path) = serving_paths(state_dir);
    pki::write_private(&key_path, key.as_bytes())?;
    std::fs::write(&cert_path, cert).with_context(|| format!("writing {}", cert_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_reads_the_same_however_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let a = pki::Pki::load_or_create(&dir.path().join("a")).unwrap();
        let b = pki::Pki::load_or_create(&dir.path().join("b")).unwrap();
        let der = knit_apiserver::auth::tls::certs(a.ca_pem()).unwrap()[0].to_vec();
        let rewritten = pem_certificate(&der);
        assert!(same_certificates(&rewritten, a.ca_pem()));
        assert!(!same_certificates(&rewritten, b.ca_pem()));
        let both = format!("{}{}", a.ca_pem(), b.ca_pem());
        let swapped = format!("{}{}", b.ca_pem(), a.ca_pem());
        assert!(same_certificates(&both, &swapped));
        assert!(!same_certificates(&both, a.ca_pem()));
        assert!(!same_certificates("garbage", "garbage"));
    }

    #[test]
    fn a_kept_certificate_is_reused_only_while_it_fits() {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::Pki::load_or_create(&dir.path().join("ca")).unwrap();
        let other = pki::Pki::load_or_create(&dir.path().join("other")).unwrap();
        let state = dir.path().join("state");
        let ip: Ipv4Addr = "10.100.0.2".parse().unwrap();
        assert!(
            kept_serving(ca.ca_pem(), "n1", ip, &state).is_none(),
            "nothing kept"
        );
        let issued = ca
            .issue_serving("system:node:n1", &[ip.to_string(), "n1".to_owned()])
            .unwrap();
        std::fs::create_dir_all(state.join("tls")).unwrap();
        let (cert, key) = serving_paths(&state);
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        std::fs::write(ca_path(&state), ca.ca_pem()).unwrap();
        assert!(kept_serving(ca.ca_pem(), "n1", ip, &state).is_some());
        assert!(
            kept_serving(ca.ca_pem(), "n2", ip, &state).is_none(),
            "another node"
        );
        let moved: Ipv4Addr = "10.100.0.7".parse().unwrap();
        assert!(
            kept_serving(ca.ca_pem(), "n1", moved, &state).is_none(),
            "a new address"
        );
        assert!(
            kept_serving(other.ca_pem(), "n1", ip, &state).is_none(),
            "another cluster"
        );
    }
}

//! The log endpoint over TLS: the agent presents the serving certificate
//! it got when it joined, and accepts only clients whose certificate the
//! cluster CA signed, as a kubelet does with `--client-ca-file`, and whose
//! groups include `system:masters`: the API server proxying `kubectl
//! logs` (`kube-apiserver-kubelet-client`) and the admin. Another node's
//! certificate is signed by the same CA, but a node may not read other
//! nodes' containers. Handshakes run off the accept loop, so a client that
//! never finishes one holds up no one else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The group a client's certificate must name (its O).
const ALLOWED_GROUP: &str = "system:masters";

/// Whether the client's certificate (DER) names [`ALLOWED_GROUP`].
fn allowed(cert: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(cert).is_ok_and(|(_, cert)| {
        cert.subject()
            .iter_organization()
            .any(|o| o.as_str() == Ok(ALLOWED_GROUP))
    })
}

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS listener for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    /// Accepts on `tcp`, handshaking with `config`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(16);
        let acceptor = TlsAcceptor::from(config);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, addr) = tokio::select! {
                    () = tx.closed() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            tracing::warn!(error = %err, "log endpoint: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let client =
                                tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                            if client.is_some_and(|c| allowed(c)) {
                                let _ = tx.send((tls, addr)).await;
                            } else {
                                tracing::debug!(%addr, "log endpoint: a client outside {ALLOWED_GROUP} refused");
                            }
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%addr, error = %err, "log endpoint: TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%addr, "log endpoint: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this listener goes away.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, groups: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for group in groups {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *group);
        }
        let key = rcgen::KeyPair::generate().expect("a key");
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .to_vec()
    }

    #[test]
    fn only_masters_may_read_the_endpoint() {
        assert!(allowed(&cert(
            "kube-apiserver-kubelet-client",
            &["system:masters"]
        )));
        assert!(allowed(&cert(
            "kubernetes-admin",
            &["other", "system:masters"]
        )));
        assert!(!allowed(&cert("system:node:n2", &["system:nodes"])));
        assert!(!allowed(&cert("someone", &[])));
        assert!(!allowed(b"not a certificate"));
    }
}

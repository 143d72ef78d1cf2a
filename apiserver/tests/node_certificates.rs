//! `POST /knit/v1/serving-certificate` behind the real security
//! middleware: a node gets a serving certificate for its own name and no
//! other, the admin for any node, anyone else a 403, no credential a 401,
//! a bad body a 400. Identities come from bearer tokens in a token file
//! and from a client certificate on the connection, as on the network.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Method, Request, StatusCode};
use knit_apiserver::auth::tls::Peer;
use knit_apiserver::auth::{Identity, SERVING_CERTIFICATE_PATH, ServingCertificate, nodecerts};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

const NODE_TOKEN: &str = "node-n1-token";
const FAKE_NODE_TOKEN: &str = "no-group-token";
const ADMIN_TOKEN: &str = "admin-token";
const USER_TOKEN: &str = "user-token";

type Secured = common::SecuredApi;

async fn secured() -> Secured {
    common::secured(&format!(
        "{NODE_TOKEN},system:node:n1,1,\"system:nodes\"\n\
         {FAKE_NODE_TOKEN},system:node:n1,2\n\
         {ADMIN_TOKEN},root,3,\"system:masters\"\n\
         {USER_TOKEN},alice,4\n"
    ))
    .await
}

/// How a request proves who it is.
enum Who<'a> {
    Nobody,
    Bearer(&'a str),
    /// A client certificate the TLS listener verified, as it reports one.
    Certificate(Identity),
}

impl Secured {
    async fn ask(
        &self,
        who: Who<'_>,
        body: &str,
        impersonate: Option<(&str, &str)>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(SERVING_CERTIFICATE_PATH)
            .header("content-type", "application/json");
        if let Who::Bearer(token) = who {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some((user, group)) = impersonate {
            request = request
                .header("impersonate-user", user)
                .header("impersonate-group", group);
        }
        let mut request = request
            .body(Body::from(body.to_owned()))
            .expect("a request");
        if let Who::Certificate(identity) = who {
            let peer = Peer {
                addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
                identity: Some(identity),
            };
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        self.send(request).await
    }
}

fn for_node(name: &str, addresses: &[&str]) -> String {
    json!({"nodeName": name, "addresses": addresses}).to_string()
}

/// Whether a client trusting only `ca` completes a TLS handshake with a
/// server presenting `cert`/`key`, for the name `reached_as`.
async fn handshake_verifies(ca: &str, cert: &str, key: &str, reached_as: IpAddr) -> bool {
    use knit_apiserver::auth::tls::{client_config, server_config};
    let server = server_config(ca, cert, key, false).expect("a server config");
    let client = Arc::new(client_config(ca, None).expect("a client config"));
    let (near, far) = tokio::io::duplex(64 * 1024);
    let accepting = tokio::spawn(async move {
        tokio_rustls::TlsAcceptor::from(server)
            .accept(far)
            .await
            .is_ok()
    });
    let connected = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::IpAddress(reached_as.into()), near)
        .await;
    let ok = connected.is_ok();
    drop(connected);
    let _ = accepting.await;
    ok
}

#[tokio::test]
async fn a_node_gets_a_serving_certificate_for_itself_only() {
    let s = secured().await;
    let ip: IpAddr = "10.100.0.2".parse().unwrap();

    // Its own name: a certificate for its address and name, from the CA.
    let (status, answer) = s
        .ask(
            Who::Bearer(NODE_TOKEN),
            &for_node("n1", &["10.100.0.2"]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let got: ServingCertificate = serde_json::from_value(answer).expect("a serving certificate");
    assert_eq!(got.ca, s.pki.ca_pem());
    assert!(nodecerts::serving_fits(&got.serving_cert, "n1", &[ip]));
    assert!(!nodecerts::serving_fits(&got.serving_cert, "n2", &[ip]));
    assert!(
        handshake_verifies(&got.ca, &got.serving_cert, &got.serving_key, ip).await,
        "the certificate verifies against the cluster CA for the node's address"
    );
    let elsewhere: IpAddr = "10.100.0.3".parse().unwrap();
    assert!(
        !handshake_verifies(&got.ca, &got.serving_cert, &got.serving_key, elsewhere).await,
        "and for no other address"
    );

    // The same node proven by its client certificate.
    let node = Identity::new("system:node:n1", vec!["system:nodes".to_owned()]);
    let (status, answer) = s
        .ask(
            Who::Certificate(node.clone()),
            &for_node("n1", &["10.100.0.2"]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // Another node's name: 403 in kube-apiserver's words.
    for who in [Who::Bearer(NODE_TOKEN), Who::Certificate(node)] {
        let (status, answer) = s.ask(who, &for_node("n2", &["10.100.0.3"]), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(answer["kind"], "Status");
        assert_eq!(answer["reason"], "Forbidden");
        assert_eq!(
            answer["message"],
            "forbidden: User \"system:node:n1\" cannot post path \"/knit/v1/serving-certificate\": \
             node \"n1\" may get a serving certificate only for itself, not for node \"n2\""
        );
    }
}

#[tokio::test]
async fn the_admin_may_ask_for_any_node_and_no_one_else_may() {
    let s = secured().await;
    let n2 = for_node("n2", &["10.100.0.3"]);
    let (status, answer) = s.ask(Who::Bearer(ADMIN_TOKEN), &n2, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let got: ServingCertificate = serde_json::from_value(answer).expect("a serving certificate");
    let ip: IpAddr = "10.100.0.3".parse().unwrap();
    assert!(nodecerts::serving_fits(&got.serving_cert, "n2", &[ip]));

    // The admin acting as node n1 is node n1.
    let as_n1 = Some(("system:node:n1", "system:nodes"));
    let (status, answer) = s.ask(Who::Bearer(ADMIN_TOKEN), &n2, as_n1).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let own = for_node("n1", &["10.100.0.2"]);
    let (status, answer) = s.ask(Who::Bearer(ADMIN_TOKEN), &own, as_n1).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // A node's user name without the nodes group, a plain user and a
    // join token are not nodes: 403 whatever name they ask for.
    let bootstrap = s.join.bearer();
    for (token, user) in [
        (FAKE_NODE_TOKEN, "system:node:n1".to_owned()),
        (USER_TOKEN, "alice".to_owned()),
        (
            bootstrap.as_str(),
            format!("system:bootstrap:{}", s.join.id),
        ),
    ] {
        let (status, answer) = s.ask(Who::Bearer(token), &own, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{user}: {answer}");
        assert_eq!(
            answer["message"],
            format!("forbidden: User {user:?} cannot post path \"/knit/v1/serving-certificate\"")
        );
    }

    // No credential, or one nobody issued: 401.
    for who in [Who::Nobody, Who::Bearer("made-up")] {
        let (status, answer) = s.ask(who, &own, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["reason"], "Unauthorized");
    }
}

#[tokio::test]
async fn a_bad_request_is_a_400_that_says_what_is_wrong() {
    let s = secured().await;
    let many: Vec<String> = (1..=17).map(|i| format!("10.100.1.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for (body, says) in [
        (
            "not json".to_owned(),
            "serving certificate request: expected",
        ),
        (
            json!({"addresses": ["10.100.0.2"]}).to_string(),
            "missing field `nodeName`",
        ),
        (
            for_node("N_1", &["10.100.0.2"]),
            "\"N_1\" is not a valid node name",
        ),
        (for_node("n1", &[]), "at least one of the node's addresses"),
        (
            json!({"nodeName": "n1", "addresses": ["10.100.0"]}).to_string(),
            "invalid IP address syntax",
        ),
        (
            json!({"nodeName": "n1", "address": ["10.100.0.2"]}).to_string(),
            "unknown field `address`",
        ),
        (for_node("n1", &["0.0.0.0"]), "0.0.0.0 is not an address"),
        (for_node("n1", &many), "17 addresses, at most 16"),
    ] {
        let (status, answer) = s.ask(Who::Bearer(NODE_TOKEN), &body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["reason"], "BadRequest");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
}

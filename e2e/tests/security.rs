//! knit's security on the real binary: verified TLS, authentication,
//! node authorization, join tokens, key files, restarts and limits, and
//! (as root, in a lab of network namespaces) an agent started with
//! `--kubeconfig` serving its endpoint over TLS.
//!
//! Each test starts its own servers on temporary data directories (or its
//! own lab, removed at the end); the load test stays on loopback and is
//! bounded in count and time.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use knit_e2e::http::Credentials;
use knit_e2e::{HttpClient, KnitServer, Kubectl};
use serde_json::{Value, json};

async fn server(dir: &Path, args: &[&str]) -> KnitServer {
    KnitServer::start_with_args(dir, args)
        .await
        .expect("knit server starts")
}

fn join_token(server: &KnitServer) -> String {
    std::fs::read_to_string(server.data_dir().join("join-token"))
        .expect("the server stores its join token")
        .trim()
        .to_owned()
}

/// `id.secret`, the part of a join token that is sent.
fn bearer_of(token: &str) -> String {
    token
        .split_once("::")
        .expect("K10<hash>::<id>.<secret>")
        .1
        .to_owned()
}

fn body(value: &Value) -> Option<Bytes> {
    Some(Bytes::from(serde_json::to_vec(value).expect("JSON")))
}

async fn send(
    client: &HttpClient,
    method: Method,
    path: &str,
    value: Option<&Value>,
) -> (StatusCode, Value) {
    let (status, bytes) = client
        .send_bytes(method.clone(), path, value.and_then(body))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn merge_patch(client: &HttpClient, path: &str, patch: &Value) -> (StatusCode, Value) {
    let (status, bytes) = client
        .send_typed(
            Method::PATCH,
            path,
            "application/merge-patch+json",
            Bytes::from(patch.to_string()),
        )
        .await
        .unwrap_or_else(|e| panic!("PATCH {path}: {e}"));
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A client holding node `name`'s certificate, obtained with the join token.
async fn node_client(server: &KnitServer, name: &str) -> HttpClient {
    let joiner = server
        .anonymous_client()
        .with_bearer(Some(bearer_of(&join_token(server))));
    let (status, answer) = send(
        &joiner,
        Method::POST,
        "/knit/v1/join",
        Some(&json!({"nodeName": name, "addresses": ["127.0.0.1"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "join: {answer}");
    let text = |key: &str| answer[key].as_str().expect("PEM").to_owned();
    let tls = knit_apiserver::auth::tls::client_config(
        &text("ca"),
        Some((&text("clientCert"), &text("clientKey"))),
    )
    .expect("the node's credential");
    HttpClient::with_tls(server.base_url(), tls)
}

#[tokio::test]
async fn verified_tls_and_no_entry_without_credentials() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = server(dir.path(), &["--no-controllers"]).await;
    assert!(server.base_url().starts_with("https://"));

    let admin = server.client();
    let (status, list) = send(&admin, Method::GET, "/api/v1/namespaces", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");

    // No credential: a 401 Status; only health and version are open.
    let anonymous = server.anonymous_client();
    for path in [
        "/api/v1/namespaces",
        "/api",
        "/apis/apps/v1/deployments",
        "/openapi/v3",
    ] {
        let (status, answer) = send(&anonymous, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {answer}");
        assert_eq!(answer["kind"], "Status");
        assert_eq!(answer["reason"], "Unauthorized");
    }
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        let (status, _) = send(&anonymous, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // A token nobody issued is a 401 too.
    let guesser = server
        .anonymous_client()
        .with_bearer(Some("abcdef.0123456789abcdef".into()));
    let (status, _) = send(&guesser, Method::GET, "/api/v1/namespaces", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A client trusting another CA refuses the server in the handshake.
    let other = tempfile::tempdir().expect("a dir");
    let other_ca = knit_apiserver::auth::pki::Pki::load_or_create(other.path()).expect("a CA");
    let creds = Credentials::read(&server.kubeconfig()).expect("the admin kubeconfig");
    let wrong = knit_apiserver::auth::tls::client_config(
        other_ca.ca_pem(),
        creds.cert_pem.as_deref().zip(creds.key_pem.as_deref()),
    )
    .expect("a TLS config");
    let err = HttpClient::with_tls(server.base_url(), wrong)
        .send_bytes(Method::GET, "/version", None)
        .await
        .expect_err("the handshake fails");
    assert!(err.is_connection(), "{err}");
    // Plain HTTP is not served at all.
    let plain = HttpClient::new(format!("http://{}", server.addr()));
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        plain.send_bytes(Method::GET, "/version", None),
    )
    .await
    .expect("an answer or an error within 10 s");
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // The real kubectl: verified TLS with the admin kubeconfig works; the
    // same kubeconfig with another CA fails the handshake.
    let Some(kubectl) = Kubectl::for_server(&server) else {
        return;
    };
    let out = kubectl.ok(&["get", "namespaces", "-o", "name"]).await;
    assert!(out.contains("namespace/default"), "{out}");
    let ca_file = other.path().join("ca.crt");
    let err = kubectl
        .fails(
            &[
                "get",
                "namespaces",
                "--certificate-authority",
                ca_file.to_str().expect("utf-8"),
            ],
            None,
        )
        .await;
    assert!(
        err.contains("certificate signed by unknown authority"),
        "{err}"
    );
}

#[tokio::test]
async fn a_join_token_works_only_for_its_own_cluster() {
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = server(dir_a.path(), &["--no-controllers"]).await;
    let b = server(dir_b.path(), &["--no-controllers"]).await;
    let (token_a, token_b) = (join_token(&a), join_token(&b));
    assert!(token_a.starts_with("K10") && token_a != token_b);
    let hash = &token_a[3..token_a.find("::").expect("::")];
    let ca = std::fs::read_to_string(dir_a.path().join("tls/ca.crt")).expect("the CA");
    assert_eq!(
        hash,
        knit_apiserver::auth::pki::ca_hash(&ca),
        "the token carries the CA's hash"
    );

    // B's token at A: 401.
    let stranger = a.anonymous_client().with_bearer(Some(bearer_of(&token_b)));
    let (status, answer) = send(
        &stranger,
        Method::POST,
        "/knit/v1/join",
        Some(&json!({"nodeName": "n1"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    // A's own token authenticates, but buys nothing beyond joining.
    let joiner = a.anonymous_client().with_bearer(Some(bearer_of(&token_a)));
    let (status, answer) = send(&joiner, Method::GET, "/api/v1/secrets", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");

    // An agent given B's token refuses A before sending it anything.
    let state = tempfile::tempdir().expect("a state dir");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(a.bin())
            .args(["agent", "--server", &a.base_url(), "--token", &token_b])
            .args(["--node-name", "n1", "--node-ip", "127.0.0.1", "--state-dir"])
            .arg(state.path())
            .output(),
    )
    .await
    .expect("the agent gives up within 30 s")
    .expect("the agent runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is not the one the token is for"),
        "{stderr}"
    );
    assert!(!state.path().join("kubeconfig").exists());
}

#[tokio::test]
async fn a_node_may_do_what_its_agent_needs_and_nothing_else() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = server(dir.path(), &["--no-controllers"]).await;
    let admin = server.client();
    let node = node_client(&server, "n1").await;

    // Its own Node and Lease; not another node's.
    let node_object =
        |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    let (status, answer) = send(
        &node,
        Method::POST,
        "/api/v1/nodes",
        Some(&node_object("n1")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, answer) = send(
        &node,
        Method::POST,
        "/api/v1/nodes",
        Some(&node_object("n2")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, _) = send(
        &admin,
        Method::POST,
        "/api/v1/nodes",
        Some(&node_object("n2")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = merge_patch(
        &node,
        "/api/v1/nodes/n1/status",
        &json!({"status": {"phase": "Running"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = merge_patch(
        &node,
        "/api/v1/nodes/n2/status",
        &json!({"status": {"phase": "Running"}}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let lease = |name: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
               "spec": {"holderIdentity": name}})
    };
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    let (status, answer) = send(&node, Method::POST, leases, Some(&lease("n1"))).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, _) = send(&node, Method::POST, leases, Some(&lease("n2"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Pods on n1 and n2, a secret n1's pod uses and one nobody uses.
    for (name, data) in [("used", "a"), ("unrelated", "b")] {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"k": data}});
        let (status, _) = send(
            &admin,
            Method::POST,
            "/api/v1/namespaces/default/secrets",
            Some(&secret),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    for (pod, on) in [("mine", "n1"), ("theirs", "n2")] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
            "spec": {"nodeName": on, "containers": [{"name": "c", "image": "busybox",
                "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "used", "key": "k"}}}]}]}});
        let (status, answer) = send(
            &admin,
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&pod),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }

    // What the agent does: read pods, nodes, services, endpoints; write its
    // pods' status and events; read the secret its pod uses.
    for path in [
        "/api/v1/pods",
        "/api/v1/nodes",
        "/api/v1/services",
        "/api/v1/endpoints",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/api/v1/namespaces/default/secrets/used",
    ] {
        let (status, answer) = send(&node, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    }
    let (status, watch) = node
        .send_bytes(Method::GET, "/api/v1/pods?watch=1&timeoutSeconds=1", None)
        .await
        .expect("a watch");
    assert_eq!(status, StatusCode::OK, "{watch:?}");
    let status_patch = json!({"status": {"phase": "Running"}});
    let (status, _) = merge_patch(
        &node,
        "/api/v1/namespaces/default/pods/mine/status",
        &status_patch,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "mine.1"},
        "involvedObject": {"kind": "Pod", "name": "mine", "namespace": "default"}, "reason": "Started"});
    let (status, answer) = send(
        &node,
        Method::POST,
        "/api/v1/namespaces/default/events",
        Some(&event),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");

    // What it may not: services, another node's pods, unrelated secrets.
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]}});
    let (status, answer) = send(
        &node,
        Method::POST,
        "/api/v1/namespaces/default/services",
        Some(&service),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["reason"], "Forbidden");
    assert_eq!(
        answer["message"],
        "services is forbidden: User \"system:node:n1\" cannot create resource \"services\" in API group \"\" in the namespace \"default\""
    );
    let (status, answer) = merge_patch(
        &node,
        "/api/v1/namespaces/default/pods/theirs/status",
        &status_patch,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, _) = send(
        &node,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/theirs",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = merge_patch(
        &node,
        "/api/v1/namespaces/default/pods/mine",
        &json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a node changes only its pods' status"
    );
    let (status, answer) = send(
        &node,
        Method::GET,
        "/api/v1/namespaces/default/secrets/unrelated",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        answer["message"],
        "secrets \"unrelated\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
    );
    let (status, _) = send(&node, Method::GET, "/api/v1/secrets", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(
        &node,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/mine",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "a node deletes its own pods");

    // The admin can check all of this as the node, with kubectl.
    let Some(kubectl) = Kubectl::for_server(&server) else {
        return;
    };
    let as_node = ["--as", "system:node:n1", "--as-group", "system:nodes"];
    let can_i = |args: Vec<&'static str>| {
        let kubectl = &kubectl;
        async move {
            let mut full = vec!["auth", "can-i"];
            full.extend(args);
            full.extend(as_node);
            // kubectl prints `no - <the authorizer's reason>` when there is one.
            let out = kubectl.run(&full).await.stdout;
            out.split(" - ")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
    };
    assert_eq!(can_i(vec!["create", "services"]).await, "no");
    assert_eq!(can_i(vec!["list", "pods"]).await, "yes");
    assert_eq!(can_i(vec!["get", "secrets/unrelated"]).await, "no");
    assert_eq!(
        can_i(vec!["get", "secrets/used"]).await,
        "no",
        "its pod on n1 is deleted"
    );
    assert_eq!(
        kubectl
            .ok(&["auth", "can-i", "delete", "nodes"])
            .await
            .trim(),
        "yes"
    );
    // `can-i --list`: everything for the admin; for the node its own
    // rules, with its name where they hold only for its own objects, and
    // a warning that the rules hanging on its pods are not listed.
    let row = |out: &str, resource: &str, rest: &[&str]| {
        out.lines().any(|line| {
            line.split_whitespace().next() == Some(resource)
                && rest.iter().all(|part| line.contains(part))
        })
    };
    let admin_list = kubectl.ok(&["auth", "can-i", "--list"]).await;
    assert!(row(&admin_list, "*.*", &["[*]"]), "{admin_list}");
    let mut args = vec!["auth", "can-i", "--list", "-n", "kube-node-lease"];
    args.extend(as_node);
    let listed = kubectl.run(&args).await;
    assert!(listed.success, "{}", listed.stderr);
    let out = &listed.stdout;
    assert!(
        row(out, "nodes", &["[n1]", "[create update patch]"]),
        "{out}"
    );
    assert!(
        row(out, "leases.coordination.k8s.io", &["[n1]", "update"]),
        "{out}"
    );
    assert!(
        row(
            out,
            "endpointslices.discovery.k8s.io",
            &["[get list watch]"]
        ),
        "{out}"
    );
    assert!(!row(out, "services", &["create"]), "{out}");
    assert!(!row(out, "*.*", &[]), "{out}");
    assert!(listed.stderr.contains("incomplete"), "{}", listed.stderr);
    let (status, answer) = admin
        .send_bytes(
            Method::POST,
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            Some(Bytes::from_static(b"not a review")),
        )
        .await
        .expect("a review");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let answer: Value = serde_json::from_slice(&answer).expect("a Status");
    assert_eq!(
        (answer["kind"].as_str(), answer["reason"].as_str()),
        (Some("Status"), Some("BadRequest")),
        "{answer}"
    );

    let mut args = vec!["create", "service", "clusterip", "web", "--tcp=80"];
    args.extend(as_node);
    let err = kubectl.fails(&args, None).await;
    assert!(
        err.contains("User \"system:node:n1\" cannot create resource \"services\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_restart_keeps_the_ca_and_keys_stay_private() {
    let dir = tempfile::tempdir().expect("a data directory");
    let first = server(dir.path(), &["--no-controllers"]).await;
    let ca = std::fs::read_to_string(dir.path().join("tls/ca.crt")).expect("the CA");
    let token = join_token(&first);
    let before = Credentials::read(&first.kubeconfig()).expect("the admin kubeconfig");
    first.stop().await.expect("a clean stop");

    let again = server(dir.path(), &["--no-controllers"]).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tls/ca.crt")).expect("the CA"),
        ca
    );
    assert_eq!(join_token(&again), token);
    // A client made from the kubeconfig before the restart still works:
    // same CA, same admin certificate.
    let client = HttpClient::with_tls(again.base_url(), before.tls_config().expect("TLS"));
    let (status, _) = send(&client, Method::GET, "/api/v1/namespaces", None).await;
    assert_eq!(status, StatusCode::OK);

    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir.path().join("tls")), 0o700);
    let mut keys = 0;
    for entry in std::fs::read_dir(dir.path().join("tls")).expect("the tls dir") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "key") {
            keys += 1;
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert!(keys >= 4, "CA, server, admin and controllers keys");
    for file in ["admin.kubeconfig", "controllers.kubeconfig", "join-token"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }
}

#[tokio::test]
async fn ten_times_the_inflight_cap_gets_429s_and_the_admin_is_still_served() {
    const CAP: usize = 4;
    const CLIENTS: usize = 10 * CAP;
    const PER_CLIENT: usize = 50;
    let dir = tempfile::tempdir().expect("a data directory");
    let tokens = dir.path().join("tokens.csv");
    // The loader is a token-file user, not the admin: the cap applies.
    std::fs::write(&tokens, "loadtoken123,loader,1001\n").expect("token file");
    let server = server(
        dir.path(),
        &[
            "--no-controllers",
            "--max-requests-inflight",
            "4",
            "--max-watches-per-user",
            "2",
            "--token-auth-file",
            tokens.to_str().expect("utf-8"),
        ],
    )
    .await;
    let admin = server.client();
    let loader = server
        .anonymous_client()
        .with_bearer(Some("loadtoken123".into()));

    // The load: a node writing events, each waiting for its commit's
    // fsync, so that requests overlap in the server.
    let node = node_client(&server, "w1").await;
    let rss_before = knit_e2e::stats::memory(server.pid()).resident;
    let ok = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let client = node.fresh();
        let (ok, limited, other) = (ok.clone(), limited.clone(), other.clone());
        let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "load-"},
            "involvedObject": {"kind": "Node", "name": "w1"}, "reason": "Load"});
        tasks.spawn(async move {
            for _ in 0..PER_CLIENT {
                if Instant::now() > deadline {
                    break;
                }
                let sent = client.send(
                    Method::POST,
                    "/api/v1/namespaces/default/events",
                    body(&event),
                );
                match sent.await {
                    Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                        assert_eq!(
                            resp.headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok()),
                            Some("1")
                        );
                        limited.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) if resp.status() == StatusCode::CREATED => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    // The admin, meanwhile, is answered promptly every time.
    let mut slowest = Duration::ZERO;
    while !tasks.is_empty() {
        let started = Instant::now();
        let (status, _) = send(&admin, Method::GET, "/api/v1/namespaces", None).await;
        assert_eq!(status, StatusCode::OK, "the admin is exempt");
        slowest = slowest.max(started.elapsed());
        while let Some(done) = tasks.try_join_next() {
            done.expect("a load client");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, limited, other) = (
        ok.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    eprintln!("load: {ok} ok, {limited} 429, {other} other; admin slowest {slowest:?}");
    assert!(limited > 0, "no 429 among {ok} answers");
    assert!(ok > 0, "nothing was served");
    assert_eq!(other, 0, "only 201s and 429s");
    assert!(
        slowest < Duration::from_secs(5),
        "the admin waited {slowest:?}"
    );
    let rss_after = knit_e2e::stats::memory(server.pid()).resident;
    assert!(
        rss_after - rss_before < 200.0,
        "RSS grew from {rss_before} to {rss_after} MiB"
    );

    // Watches per user: two may stay open, the third is refused.
    let mut open = Vec::new();
    for _ in 0..2 {
        let (status, lines) = loader
            .fresh()
            .stream(Method::GET, "/api/v1/namespaces?watch=1", None)
            .await
            .expect("a watch");
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "the loader has no role to watch"
        );
        drop(lines);
    }
    for _ in 0..2 {
        let (status, lines) = node
            .fresh()
            .stream(Method::GET, "/api/v1/pods?watch=1", None)
            .await
            .expect("a watch");
        assert_eq!(status, StatusCode::OK);
        open.push(lines);
    }
    let (status, _) = node
        .fresh()
        .stream(Method::GET, "/api/v1/pods?watch=1", None)
        .await
        .expect("an answer");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    open.pop();
    // The closed watch's slot comes back.
    let again = Instant::now();
    loop {
        let (status, lines) = node
            .fresh()
            .stream(Method::GET, "/api/v1/pods?watch=1", None)
            .await
            .expect("an answer");
        if status == StatusCode::OK {
            open.push(lines);
            break;
        }
        assert!(
            again.elapsed() < Duration::from_secs(10),
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An agent this test started; dropping it kills it (SIGKILL) and reaps it.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `knit agent` for node 1 of `lab` with `kubeconfig`, in the node's
/// namespace, marked as the lab's so `knit lab down` finds it and its pods,
/// output appended to `log`.
fn kubeconfig_agent(
    lab: &knit_e2e::lab::Lab,
    kubeconfig: &Path,
    node_name: &str,
    state_dir: &Path,
    log: &Path,
) -> std::process::Command {
    let node = lab.node(1);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("the agent's log");
    let mut cmd = knit_e2e::lab::knit();
    cmd.arg("agent")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--node-name", node_name, "--node-ip", &lab.addr(2)])
        .args(["--netns", &lab.node_netns(1)])
        .arg("--state-dir")
        .arg(state_dir)
        .args([
            "--sandbox-prefix",
            node["sandbox_prefix"]
                .as_str()
                .expect("the node's sandbox prefix"),
        ])
        .env("KNIT_LAB", &lab.name)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().expect("the log"))
        .stderr(file);
    cmd
}

/// A kubeconfig for `server` trusting `ca` with a client certificate.
fn kubeconfig_yaml(server: &str, ca: &str, cert: &str, key: &str) -> String {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
         contexts:\n- name: node\n  context: {{cluster: lab, user: node}}\ncurrent-context: node\n\
         users:\n- name: node\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca),
        b64(cert),
        b64(key)
    )
}

/// A node kubeconfig obtained by join (its client certificate only, the
/// serving certificate the join also gave is thrown away) makes an agent
/// that gets its serving certificate itself: its endpoint verifies against
/// the cluster CA for the node's address (and not against another CA),
/// refuses plain HTTP and clients without a certificate, and `kubectl
/// logs` reaches it through the API server. A restart reuses the kept
/// certificate; the same credential is refused another node's.
#[test]
fn an_agent_started_with_a_kubeconfig_serves_its_endpoint_over_tls() {
    use knit_e2e::lab::{self, Lab};
    if !lab::root_or_skip() {
        return;
    }
    let lab = Lab::new(70);
    let Some(kubectl) = lab.kubectl() else {
        return;
    };
    lab.up_ok(1, &["--no-agents"]);
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = lab.dir();
    let tls = dir.join("server").join("tls");
    let read = |path: &Path| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let ca = read(&tls.join("ca.crt"));
    let api = format!(
        "https://{}",
        lab.state()["plan"]["api_listen"]
            .as_str()
            .expect("the API's address")
    );
    let node = lab.node_name(1);
    let node_ip = lab.addr(2);

    // The node's credential, from the join endpoint with the lab's token.
    let token = read(&dir.join("server").join("join-token"));
    let joiner = HttpClient::with_tls(
        api.clone(),
        knit_apiserver::auth::tls::client_config(&ca, None).expect("the CA"),
    )
    .with_bearer(Some(bearer_of(token.trim())));
    let (status, answer) = rt.block_on(send(
        &joiner,
        Method::POST,
        "/knit/v1/join",
        Some(&json!({"nodeName": node, "addresses": [node_ip]})),
    ));
    assert_eq!(status, StatusCode::OK, "join: {answer}");
    let pem = |key: &str| answer[key].as_str().expect("PEM").to_owned();
    let kubeconfig = dir.join("node-1.kubeconfig");
    knit_apiserver::auth::pki::write_private(
        &kubeconfig,
        kubeconfig_yaml(&api, &ca, &pem("clientCert"), &pem("clientKey")).as_bytes(),
    )
    .expect("writing the node's kubeconfig");
    let state_dir = dir.join("kubeconfig-agent");
    std::fs::create_dir_all(&state_dir).expect("the agent's state dir");
    assert!(
        !state_dir.join("tls").exists(),
        "no serving certificate yet"
    );
    let log = dir.join("logs").join("kubeconfig-agent.log");

    // The same credential cannot get another node's certificate: the
    // agent does not start (and serves nothing, in plain HTTP or other).
    let other = tempfile::tempdir().expect("a state dir");
    let refused = lab::run_within(
        &mut kubeconfig_agent(&lab, &kubeconfig, "not-me", other.path(), &log),
        Duration::from_secs(60),
    );
    assert!(
        !refused.status.success(),
        "an agent for another node started"
    );
    // (run_within pipes its output rather than appending it to the log.)
    let why = lab::text(&refused.stderr);
    assert!(
        why.contains("may get a serving certificate only for itself, not for node \"not-me\""),
        "{why}"
    );
    assert!(!other.path().join("tls").exists());

    let mut agent = Agent(
        kubeconfig_agent(&lab, &kubeconfig, &node, &state_dir, &log)
            .spawn()
            .expect("starting the agent"),
    );
    lab.wait_for("the node Ready", Duration::from_secs(90), || {
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!("the agent exited ({status}):\n{}", lab::tail(&log, 40));
        }
        let node = kubectl.get_json("node", &node)?;
        lab::condition_true(&node, "Ready")
            .then_some(())
            .ok_or_else(|| "not Ready".to_owned())
    });
    assert!(read(&log).contains("got a serving certificate"));
    let kept = read(&state_dir.join("tls").join("serving.crt"));
    assert!(knit_apiserver::auth::nodecerts::serving_fits(
        &kept,
        &node,
        &[node_ip.parse().expect("an IP")]
    ));

    // The endpoint: TLS that verifies against the cluster CA for the
    // node's address, to the API server's kubelet client certificate.
    let endpoint = format!("https://{node_ip}:10250");
    let as_apiserver = knit_apiserver::auth::tls::client_config(
        &ca,
        Some((
            &read(&tls.join("kubelet-client.crt")),
            &read(&tls.join("kubelet-client.key")),
        )),
    )
    .expect("the API server's kubelet client");
    let healthz = |client: HttpClient| {
        rt.block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                client.send_bytes(Method::GET, "/healthz", None),
            )
            .await
            .expect("an answer or an error within 10 s")
        })
    };
    let served = healthz(HttpClient::with_tls(endpoint.clone(), as_apiserver.clone()));
    let (status, body) = served.expect("the endpoint serves the API server over verified TLS");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    // Not to a client without a certificate, nor over plain HTTP.
    let anonymous = knit_apiserver::auth::tls::client_config(&ca, None).expect("the CA");
    let refused = healthz(HttpClient::with_tls(endpoint.clone(), anonymous));
    assert!(
        refused.is_err(),
        "served without a client certificate: {refused:?}"
    );
    let plain = healthz(HttpClient::new(format!("http://{node_ip}:10250")));
    assert!(
        plain
            .as_ref()
            .map_or(true, |(status, body)| !status.is_success()
                || &body[..] != b"ok"),
        "plain HTTP served: {plain:?}"
    );
    // And a client trusting another CA does not accept the endpoint.
    let stranger = tempfile::tempdir().expect("a dir");
    let stranger = knit_apiserver::auth::pki::Pki::load_or_create(stranger.path()).expect("a CA");
    let wrong_ca = knit_apiserver::auth::tls::client_config(
        stranger.ca_pem(),
        Some((
            &read(&tls.join("kubelet-client.crt")),
            &read(&tls.join("kubelet-client.key")),
        )),
    )
    .expect("a TLS config");
    let err =
        healthz(HttpClient::with_tls(endpoint.clone(), wrong_ca)).expect_err("the handshake fails");
    assert!(err.is_connection(), "{err}");

    // kubectl logs through the API server, which dials the node over TLS.
    let pod = "kubeconfig-agent-logs";
    kubectl.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\nspec:\n  nodeName: {node}\n  \
         containers:\n  - name: talk\n    image: busybox\n    \
         command: [sh, -c, \"echo served-over-tls; sleep 3600\"]\n"
    ));
    let logs = lab.wait_for("kubectl logs of the pod", Duration::from_secs(60), || {
        let out = kubectl.run(&["logs", pod]);
        let stdout = lab::text(&out.stdout);
        if out.status.success() && stdout.contains("served-over-tls") {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", lab::text(&out.stderr)))
        }
    });
    assert_eq!(logs.trim(), "served-over-tls");

    // A restart reuses the kept certificate: no new one is asked for.
    drop(agent);
    agent = Agent(
        kubeconfig_agent(&lab, &kubeconfig, &node, &state_dir, &log)
            .spawn()
            .expect("restarting the agent"),
    );
    let status = lab.wait_for("the restarted endpoint", Duration::from_secs(60), || {
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!("the agent exited ({status}):\n{}", lab::tail(&log, 40));
        }
        healthz(HttpClient::with_tls(endpoint.clone(), as_apiserver.clone()))
            .map(|(status, _)| status)
            .map_err(|e| e.to_string())
    });
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read(&state_dir.join("tls").join("serving.crt")), kept);
    assert!(read(&log).contains("serving with the kept certificate"));
    drop(agent);
    lab.down();
}

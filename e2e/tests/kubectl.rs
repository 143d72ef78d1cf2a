//! The real kubectl v1.35 against a real `knit server`: the sessions a
//! kubectl user runs, asserted on kubectl's output and on the stored objects.
//!
//! Each test starts its own server on a temporary data directory and runs
//! kubectl with its own `HOME`. Without `$KNIT_KUBECTL` the tests print a
//! SKIP line and pass, except under `CI=true` (see `knit_e2e::kubectl`).

use std::time::Duration;

use knit_e2e::{KnitServer, Kubectl};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const DEPLOYMENT: &str = include_str!("manifests/service-test-deployment.yaml");
const SERVICE: &str = include_str!("manifests/service-test-service.yaml");
const CLIENT_POD: &str = include_str!("manifests/service-test-client1.yaml");
const INGRESS: &str = include_str!("manifests/test-ingress.yaml");

/// A server and kubectl for it; `None` when kubectl is missing outside CI.
async fn session() -> Option<(KnitServer, Kubectl, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = KnitServer::start(dir.path())
        .await
        .expect("knit server starts");
    let kubectl = Kubectl::for_server(&server)?;
    Some((server, kubectl, dir))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("kubectl printed no JSON ({e}):\n{text}"))
}

/// The header line and the data lines of a table kubectl printed.
fn table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut lines = text.lines();
    let header = words(lines.next().unwrap_or_default());
    let rows = lines.map(words).collect();
    (header, rows)
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// The next line a long-running kubectl prints, within 10 s.
async fn next_line(lines: &mut Lines) -> String {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a watch line within 10 s")
        .expect("reading kubectl")
        .expect("kubectl still running")
}

fn pod(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n  containers:\n  - name: main\n    image: alpine\n    ports:\n    - containerPort: 8080\n"
    )
}

#[tokio::test]
async fn article_manifests_apply_edit_reapply_and_delete() {
    let Some((_server, k, _dir)) = session().await else {
        return;
    };

    let out = k.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT).await;
    assert_eq!(out.trim(), "deployment.apps/service-test created");
    let out = k.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT).await;
    assert_eq!(out.trim(), "deployment.apps/service-test unchanged");

    // An edit: three replicas and a second container port; re-apply patches
    // only what changed and keeps the container (merged by name).
    let edited = DEPLOYMENT.replace("replicas: 2", "replicas: 3").replace(
        "          containerPort: 8080\n",
        "          containerPort: 8080\n        - name: metrics\n          containerPort: 9090\n",
    );
    let out = k.ok_stdin(&["apply", "-f", "-"], &edited).await;
    assert_eq!(out.trim(), "deployment.apps/service-test configured");
    let stored = json(
        &k.ok(&["get", "deployment", "service-test", "-o", "json"])
            .await,
    );
    assert_eq!(stored["spec"]["replicas"], 3);
    let containers = stored["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0]["ports"].as_array().unwrap().len(), 2);
    let last_applied =
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .expect("apply records the last applied configuration");
    assert_eq!(json(last_applied)["spec"]["replicas"], 3);

    // Removing a field from the manifest removes it from the object.
    let out = k.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT).await;
    assert_eq!(out.trim(), "deployment.apps/service-test configured");
    let ports = k
        .ok(&[
            "get",
            "deploy",
            "service-test",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].ports[*].name}",
        ])
        .await;
    assert_eq!(ports, "http");

    let out = k.ok_stdin(&["apply", "-f", "-"], SERVICE).await;
    assert_eq!(out.trim(), "service/service-test created");
    let (header, rows) = table(&k.ok(&["get", "service", "service-test"]).await);
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(rows[0][0], "service-test");
    assert_eq!(rows[0][1], "ClusterIP");
    assert_eq!(rows[0][4], "80/TCP");
    let target = k
        .ok(&[
            "get",
            "svc",
            "service-test",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}",
        ])
        .await;
    assert_eq!(target, "http");

    let out = k.ok_stdin(&["apply", "-f", "-"], CLIENT_POD).await;
    assert_eq!(out.trim(), "pod/service-test-client1 created");
    let policy = k
        .ok(&[
            "get",
            "pod",
            "service-test-client1",
            "-o",
            "jsonpath={.spec.restartPolicy}",
        ])
        .await;
    assert_eq!(policy, "Never");

    let out = k.ok_stdin(&["apply", "-f", "-"], INGRESS).await;
    assert_eq!(out.trim(), "ingress.networking.k8s.io/test-ingress created");
    let (header, rows) = table(&k.ok(&["get", "ingress"]).await);
    assert_eq!(
        header,
        ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    );
    assert_eq!(rows[0][0], "test-ingress");
    assert_eq!(rows[0][2], "testhost.com");
    assert_eq!(
        rows[0][3], "80,",
        "ADDRESS is empty, PORTS is 80, 443: {rows:?}"
    );

    let all = [DEPLOYMENT, SERVICE, CLIENT_POD, INGRESS].join("\n---\n");
    let out = k.ok_stdin(&["delete", "-f", "-"], &all).await;
    for line in [
        "deployment.apps \"service-test\" deleted from default namespace",
        "service \"service-test\" deleted from default namespace",
        "pod \"service-test-client1\" deleted from default namespace",
        "ingress.networking.k8s.io \"test-ingress\" deleted from default namespace",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let gone = k.fails(&["get", "deployment", "service-test"], None).await;
    assert!(gone.contains("NotFound"), "{gone}");
}

#[tokio::test]
async fn get_in_every_output_format() {
    let Some((_server, k, _dir)) = session().await else {
        return;
    };
    k.ok(&["create", "namespace", "other"]).await;
    k.ok_stdin(&["apply", "-f", "-"], &pod("web-a", "{app: web}"))
        .await;
    k.ok_stdin(
        &["apply", "-f", "-"],
        &pod("web-b", "{app: web, tier: front}"),
    )
    .await;
    k.ok_stdin(
        &["apply", "-n", "other", "-f", "-"],
        &pod("db", "{app: db}"),
    )
    .await;

    let (header, rows) = table(&k.ok(&["get", "pods"]).await);
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][..4], ["web-a", "0/1", "Pending", "0"]);

    let (header, _) = table(&k.ok(&["get", "pods", "-o", "wide"]).await);
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );

    let list = json(&k.ok(&["get", "pods", "-o", "json"]).await);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let yaml = k.ok(&["get", "pod", "web-b", "-o", "yaml"]).await;
    assert!(
        yaml.contains("  name: web-b\n") && yaml.contains("tier: front"),
        "{yaml}"
    );

    let names = k
        .ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"])
        .await;
    assert_eq!(names, "web-a web-b");
    assert_eq!(
        k.ok(&["get", "pods", "-o", "name"]).await,
        "pod/web-a\npod/web-b\n"
    );
    assert_eq!(
        k.ok(&["get", "pods", "-l", "tier=front", "-o", "name"])
            .await,
        "pod/web-b\n"
    );

    let (header, rows) = table(&k.ok(&["get", "pods", "-A"]).await);
    assert_eq!(header[..2], ["NAMESPACE", "NAME"]);
    let namespaces: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(namespaces, ["default", "default", "other"]);

    let (header, rows) = table(&k.ok(&["get", "pods", "--show-labels"]).await);
    assert_eq!(header.last().map(String::as_str), Some("LABELS"));
    assert_eq!(
        rows[1].last().map(String::as_str),
        Some("app=web,tier=front")
    );

    let (header, _) = table(&k.ok(&["get", "namespaces"]).await);
    assert_eq!(header, ["NAME", "STATUS", "AGE"]);
    let out = k.ok(&["get", "all"]).await;
    assert!(out.contains("pod/web-a"), "{out}");
}

#[tokio::test]
async fn watch_one_named_object_and_a_table() {
    let Some((_server, k, _dir)) = session().await else {
        return;
    };
    k.ok(&["create", "configmap", "settings", "--from-literal=mode=v1"])
        .await;

    let mut watch = k.spawn(&[
        "get",
        "configmap",
        "settings",
        "-w",
        "-o",
        "jsonpath={.data.mode}{\"\\n\"}",
    ]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await, "v1");
    for version in ["v2", "v3"] {
        k.ok(&[
            "patch",
            "configmap",
            "settings",
            "-p",
            &format!("{{\"data\":{{\"mode\":\"{version}\"}}}}"),
        ])
        .await;
        assert_eq!(next_line(&mut lines).await, version);
    }
    watch.kill().await.ok();

    // A watch of the whole table prints rows as objects come.
    let mut watch = k.spawn(&["get", "configmaps", "-w"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let header = next_line(&mut lines).await;
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "DATA", "AGE"]
    );
    let mut seen = vec![next_line(&mut lines).await];
    k.ok(&["create", "configmap", "late", "--from-literal=a=b"])
        .await;
    while !seen.iter().any(|l| l.starts_with("late ")) {
        seen.push(next_line(&mut lines).await);
    }
    assert!(seen[0].starts_with("settings "), "{seen:?}");
    watch.kill().await.ok();
}

#[tokio::test]
async fn describe_pods_services_deployments_and_nodes_with_events() {
    let Some((_server, k, _dir)) = session().await else {
        return;
    };
    k.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT).await;
    k.ok_stdin(&["apply", "-f", "-"], SERVICE).await;
    k.ok_stdin(
        &["apply", "-f", "-"],
        &pod("web-a", "{app: service_test_pod}"),
    )
    .await;
    // Two serving pods as node agents will report them (address and
    // readiness written to their status by hand here); the endpoints
    // controller in `knit server` turns them into the Service's endpoints.
    for (name, ip) in [
        ("service-test-a", "10.0.1.2"),
        ("service-test-b", "10.0.2.2"),
    ] {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: service_test_pod}}\nspec:\n  nodeName: node-1\n  containers:\n  - name: simple-http\n    image: python:2.7\n    ports:\n    - {{name: http, containerPort: 8080}}\n"
        );
        k.ok_stdin(&["apply", "-f", "-"], &manifest).await;
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
        );
        k.ok(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])
        .await;
    }
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n  labels: {kubernetes.io/hostname: node-1}\nspec:\n  podCIDR: 10.0.1.0/24\n",
    )
    .await;
    let uid = k
        .ok(&["get", "pod", "web-a", "-o", "jsonpath={.metadata.uid}"])
        .await;
    let event = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: web-a.1\ninvolvedObject:\n  kind: Pod\n  name: web-a\n  namespace: default\n  uid: {uid}\n  apiVersion: v1\nreason: Scheduled\nmessage: Successfully assigned default/web-a to node-1\ntype: Normal\nsource:\n  component: default-scheduler\nfirstTimestamp: \"2026-01-01T00:00:00Z\"\nlastTimestamp: \"2026-01-01T00:00:00Z\"\ncount: 1\n"
    );
    k.ok_stdin(&["apply", "-f", "-"], &event).await;

    let out = k.ok(&["describe", "pod", "web-a"]).await;
    for want in [
        "Name:",
        "web-a",
        "Labels:",
        "app=service_test_pod",
        "Containers:",
        "main:",
        "8080/TCP",
        "Events:",
        "Scheduled",
        "Successfully assigned default/web-a to node-1",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing from describe pod:\n{out}"
        );
    }
    // The controller catches up within moments.
    let mut out = String::new();
    for _ in 0..100 {
        out = k.ok(&["describe", "service", "service-test"]).await;
        if out.contains("10.0.1.2:8080,10.0.2.2:8080") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let endpoints = out
        .lines()
        .find(|l| l.starts_with("Endpoints:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        endpoints.split_whitespace().collect::<Vec<_>>(),
        ["Endpoints:", "10.0.1.2:8080,10.0.2.2:8080"]
    );
    assert!(
        out.contains("TargetPort:") && out.contains("http/TCP"),
        "{out}"
    );
    let out = k.ok(&["describe", "deployment", "service-test"]).await;
    for want in [
        "Replicas:",
        "2 desired",
        "Selector:",
        "app=service_test_pod",
        "simple-http:",
        "python:2.7",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing from describe deployment:\n{out}"
        );
    }
    let out = k.ok(&["describe", "node", "node-1"]).await;
    for want in ["Name:", "node-1", "PodCIDR:", "10.0.1.0/24"] {
        assert!(
            out.contains(want),
            "{want:?} missing from describe node:\n{out}"
        );
    }
}

#[tokio::test]
async fn label_annotate_scale_edit_and_delete_promptly() {
    let Some((_server, k, _dir)) = session().await else {
        return;
    };
    k.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT).await;
    k.ok_stdin(&["apply", "-f", "-"], &pod("web-a", "{app: web}"))
        .await;

    assert_eq!(
        k.ok(&["label", "pod", "web-a", "tier=front"]).await.trim(),
        "pod/web-a labeled"
    );
    assert_eq!(
        k.ok(&["label", "pod", "web-a", "tier-"]).await.trim(),
        "pod/web-a unlabeled"
    );
    assert_eq!(
        k.ok(&["annotate", "pod", "web-a", "owner=net-team"])
            .await
            .trim(),
        "pod/web-a annotated"
    );
    let owner = k
        .ok(&[
            "get",
            "pod",
            "web-a",
            "-o",
            "jsonpath={.metadata.annotations.owner}",
        ])
        .await;
    assert_eq!(owner, "net-team");
    let labels = k
        .ok(&["get", "pod", "web-a", "-o", "jsonpath={.metadata.labels}"])
        .await;
    assert_eq!(json(&labels), serde_json::json!({"app": "web"}));

    let out = k
        .ok(&["scale", "deployment", "service-test", "--replicas=5"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/service-test scaled");
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "service-test",
            "-o",
            "jsonpath={.spec.replicas}"
        ])
        .await,
        "5"
    );

    // kubectl edit through an EDITOR that rewrites the replica count.
    let editor = k.home().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/replicas: 5/replicas: 4/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let editor = editor.to_str().unwrap();
    let run = k
        .run_with(
            &["edit", "deployment", "service-test"],
            &[("EDITOR", editor)],
            None,
        )
        .await;
    assert!(run.success, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout.trim(), "deployment.apps/service-test edited");
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "service-test",
            "-o",
            "jsonpath={.spec.replicas}"
        ])
        .await,
        "4"
    );

    let started = std::time::Instant::now();
    assert_eq!(
        k.ok(&["delete", "pod", "web-a"]).await.trim(),
        "pod \"web-a\" deleted from default namespace"
    );
    assert_eq!(
        k.ok(&["delete", "deployment", "service-test"]).await.trim(),
        "deployment.apps \"service-test\" deleted from default namespace"
    );
    k.ok(&["create", "namespace", "scratch"]).await;
    k.ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "scratch",
        "--from-literal=a=b",
    ])
    .await;
    assert_eq!(
        k.ok(&["delete", "namespace", "scratch"]).await.trim(),
        "namespace \"scratch\" deleted"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "deletes took {:?}",
        started.elapsed()
    );
    // The deployment's pods go with it, collected by the garbage collector.
    let mut left = String::new();
    for _ in 0..100 {
        left = k.ok(&["get", "pods", "-o", "name"]).await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, "", "pods left after their deployment was deleted");
}

#[tokio::test]
async fn create_expose_run_and_wait() {
    let Some((_server, k, _dir)) = session().await else {
        return;
    };
    let out = k
        .ok(&[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
            "--port=8080",
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/web created");
    let stored = json(&k.ok(&["get", "deploy", "web", "-o", "json"]).await);
    assert_eq!(stored["spec"]["replicas"], 2);
    assert_eq!(stored["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );

    let out = k
        .ok(&[
            "expose",
            "deployment",
            "web",
            "--port=80",
            "--target-port=8080",
        ])
        .await;
    assert_eq!(out.trim(), "service/web exposed");
    let svc = json(&k.ok(&["get", "svc", "web", "-o", "json"]).await);
    assert_eq!(svc["spec"]["selector"]["app"], "web");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);

    let out = k
        .ok(&[
            "run",
            "shell",
            "--image=alpine",
            "--labels=role=debug",
            "--",
            "sleep",
            "3600",
        ])
        .await;
    assert_eq!(out.trim(), "pod/shell created");
    let pod = json(&k.ok(&["get", "pod", "shell", "-o", "json"]).await);
    assert_eq!(pod["metadata"]["labels"]["role"], "debug");
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!(["sleep", "3600"])
    );

    for (args, want) in [
        (
            vec!["create", "namespace", "team"],
            "namespace/team created",
        ),
        (
            vec!["create", "configmap", "cfg", "--from-literal=a=b"],
            "configmap/cfg created",
        ),
        (
            vec!["create", "secret", "generic", "pw", "--from-literal=k=v"],
            "secret/pw created",
        ),
        (
            vec!["create", "service", "clusterip", "plain", "--tcp=80:8080"],
            "service/plain created",
        ),
    ] {
        assert_eq!(k.ok(&args).await.trim(), want);
    }
    assert_eq!(
        k.ok(&["get", "secret", "pw", "-o", "jsonpath={.data.k}"])
            .await,
        "dg=="
    );

    // `kubectl wait` sees a condition the agent would set.
    let waiter = k.spawn(&[
        "wait",
        "--for=condition=Ready",
        "pod/shell",
        "--timeout=20s",
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.ok(&[
        "patch",
        "pod",
        "shell",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ])
    .await;
    let output = tokio::time::timeout(Duration::from_secs(20), waiter.wait_with_output())
        .await
        .expect("kubectl wait returns once the condition holds")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "pod/shell condition met"
    );
}

#[tokio::test]
async fn server_side_apply_owns_fields_and_reports_conflicts() {
    let Some((_server, k, _dir)) = session().await else {
        return;
    };
    let out = k
        .ok_stdin(&["apply", "--server-side", "-f", "-"], DEPLOYMENT)
        .await;
    assert_eq!(
        out.trim(),
        "deployment.apps/service-test serverside-applied"
    );
    let managed = k
        .ok(&[
            "get",
            "deploy",
            "service-test",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[?(@.operation==\"Apply\")].manager}",
        ])
        .await;
    assert_eq!(managed, "kubectl");

    // Another manager changing an owned field conflicts, unless forced.
    let scaled = DEPLOYMENT.replace("replicas: 2", "replicas: 6");
    let err = k
        .fails(
            &[
                "apply",
                "--server-side",
                "--field-manager=autoscaler",
                "-f",
                "-",
            ],
            Some(&scaled),
        )
        .await;
    assert!(
        err.contains("conflict") && err.contains(".spec.replicas"),
        "{err}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "service-test",
            "-o",
            "jsonpath={.spec.replicas}"
        ])
        .await,
        "2"
    );
    k.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=autoscaler",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &scaled,
    )
    .await;
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "service-test",
            "-o",
            "jsonpath={.spec.replicas}"
        ])
        .await,
        "6"
    );
}

#[tokio::test]
async fn api_resources_and_explain() {
    let Some((_server, k, _dir)) = session().await else {
        return;
    };
    let out = k.ok(&["api-resources"]).await;
    let deployments = out
        .lines()
        .find(|l| l.starts_with("deployments "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        deployments.split_whitespace().collect::<Vec<_>>(),
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );
    for short in [
        "po", "svc", "ep", "deploy", "rs", "ing", "no", "ns", "cm", "ev",
    ] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(short)),
            "no short name {short}:\n{out}"
        );
    }
    let out = k.ok(&["explain", "pods.spec.containers.ports"]).await;
    assert!(
        out.contains("KIND:") && out.contains("Pod") && out.contains("containerPort"),
        "{out}"
    );
    let out = k.ok(&["explain", "deployment.spec", "--recursive"]).await;
    assert!(
        out.contains("replicas") && out.contains("strategy"),
        "{out}"
    );
}

#[tokio::test]
async fn bad_manifests_are_refused_and_change_nothing() {
    let Some((_server, k, _dir)) = session().await else {
        return;
    };
    let unknown = DEPLOYMENT.replace("  replicas: 2\n", "  replicas: 2\n  replicaz: 3\n");
    let err = k.fails(&["apply", "-f", "-"], Some(&unknown)).await;
    assert!(
        err.contains("BadRequest") && err.contains("unknown field \"spec.replicaz\""),
        "{err}"
    );

    let wrong_type = SERVICE.replace("port: 80", "port: eighty");
    let err = k.fails(&["create", "-f", "-"], Some(&wrong_type)).await;
    assert!(
        err.contains("BadRequest")
            && err.contains("cannot be handled as a Service")
            && err.contains("spec.ports[0].port"),
        "{err}"
    );

    let bad_name = pod("Web_A", "{app: web}");
    let err = k.fails(&["create", "-f", "-"], Some(&bad_name)).await;
    assert!(
        err.contains("The Pod \"Web_A\" is invalid") && err.contains("metadata.name"),
        "{err}"
    );

    let mismatch = DEPLOYMENT.replace(
        "        app: service_test_pod\n    spec",
        "        app: other\n    spec",
    );
    let err = k.fails(&["create", "-f", "-"], Some(&mismatch)).await;
    assert!(
        err.contains("is invalid") && err.contains("spec.template.metadata.labels"),
        "{err}"
    );

    let err = k.fails(&["get", "pods", "-l", "app in (web"], None).await;
    assert!(
        err.contains("unable to parse requirement") || err.contains("BadRequest"),
        "{err}"
    );

    for object in [
        "deployment/service-test",
        "service/service-test",
        "pod/Web_A",
    ] {
        let err = k.fails(&["get", object], None).await;
        assert!(err.contains("NotFound"), "{object} was created: {err}");
    }
    assert_eq!(k.ok(&["get", "pods", "-o", "name"]).await, "");
}

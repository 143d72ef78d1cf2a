//! The kubectl-lite verbs end to end: a real knit API server runs
//! in-process on a loopback port, and the built `knit` binary is run
//! against it with `KUBECONFIG` pointing at the server's admin kubeconfig;
//! the assertions are on what a user sees (stdout, stderr, exit code).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use knit_apiserver::ApiConfig;
use knit_apiserver::server::{ServerConfig, serve};
use knit_apiserver::store::sqlite::History;
use serde_json::Value;

/// A knit server on its own runtime thread; dropping it stops the server.
struct Server {
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let config = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            listen,
            history: History::default(),
            api: ApiConfig::default(),
            security: Default::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime
                .block_on(serve(config, async {
                    let _ = stopped.await;
                }))
                .expect("knit server runs");
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let kubeconfig = dir.path().join("admin.kubeconfig");
        while !(kubeconfig.is_file() && TcpStream::connect(listen).is_ok()) {
            assert!(
                Instant::now() < deadline,
                "knit server did not come up on {listen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// Runs `knit ARGS` against this server.
    fn knit(&self, args: &[&str]) -> Run {
        knit_with(Some(&self.kubeconfig()), self.dir.path(), args)
    }

    /// Writes a manifest into the server's temp dir and returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path.display().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a run of the binary printed.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "knit failed: {self:?}");
        self
    }
}

fn knit_with(kubeconfig: Option<&Path>, home: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_knit"));
    command.args(args).env("HOME", home).env_remove("KNIT_LOG");
    match kubeconfig {
        Some(path) => command.env("KUBECONFIG", path),
        None => command.env_remove("KUBECONFIG"),
    };
    command.output().expect("run knit").into()
}

const APP: &str = "apiVersion: v1
kind: Namespace
metadata: {name: lite}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: lite, labels: {app: web}}
data: {a: b}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: lite}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: lite}
subsets:
- addresses: [{ip: 10.0.1.2}, {ip: 10.0.2.2}]
  ports: [{port: 8080}]
";

#[test]
fn apply_get_describe_delete_round_trip() {
    let server = Server::start();
    let app = server.file("app.yaml", APP);

    let run = server.knit(&["apply", "-f", &app]).ok();
    assert_eq!(
        run.stdout,
        "namespace/lite created\nconfigmap/cfg created\nservice/web created\nendpoints/web created\n"
    );
    let run = server.knit(&["apply", "-f", &app]).ok();
    assert_eq!(
        run.stdout,
        "namespace/lite unchanged\nconfigmap/cfg unchanged\nservice/web unchanged\nendpoints/web unchanged\n"
    );
    let changed = server.file("changed.yaml", &APP.replace("data: {a: b}", "data: {a: c}"));
    let run = server.knit(&["apply", "-f", &changed]).ok();
    let line = run.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert_eq!(line, "configmap/cfg serverside-applied", "{run:?}");

    // Names, JSON and YAML of one object and of several.
    let run = server.knit(&["get", "cm", "-n", "lite", "-o", "name"]).ok();
    assert_eq!(run.stdout, "configmap/cfg\n");
    let run = server
        .knit(&["get", "configmap", "cfg", "-n", "lite", "-o", "json"])
        .ok();
    let object: Value = serde_json::from_str(&run.stdout).expect("JSON output");
    assert_eq!(object["kind"], "ConfigMap");
    assert_eq!(object["data"]["a"], "c");
    let run = server
        .knit(&["get", "ConfigMap", "cfg", "-n", "lite", "-o", "yaml"])
        .ok();
    let object: Value = serde_norway::from_str(&run.stdout).expect("YAML output");
    assert_eq!(object["metadata"]["namespace"], "lite");
    let run = server
        .knit(&["get", "svc,cm", "-n", "lite", "-o", "json"])
        .ok();
    let list: Value = serde_json::from_str(&run.stdout).expect("JSON list");
    assert_eq!(list["kind"], "List");
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["Service", "ConfigMap"]);
    let run = server
        .knit(&["get", "cm", "-n", "lite", "-l", "app=web", "-o", "name"])
        .ok();
    assert_eq!(run.stdout, "configmap/cfg\n");
    let run = server
        .knit(&["get", "cm", "-n", "lite", "-l", "app=other", "-o", "name"])
        .ok();
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "No resources found in lite namespace.\n");

    // Tables: the server's columns or the NAME AGE fallback both start so.
    let run = server.knit(&["get", "cm", "-n", "lite"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME   "), "{run:?}");
    assert!(lines[0].ends_with("AGE"), "{run:?}");
    assert!(lines[1].starts_with("cfg    "), "{run:?}");
    let run = server.knit(&["get", "cm", "-A"]).ok();
    assert!(run.stdout.starts_with("NAMESPACE   NAME   "), "{run:?}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("lite        cfg    ")),
        "{run:?}"
    );

    let run = server.knit(&["describe", "svc", "web", "-n", "lite"]).ok();
    assert!(
        run.stdout
            .starts_with("Name:         web\nNamespace:    lite\n"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("\nEndpoints:    10.0.1.2:8080,10.0.2.2:8080\n"),
        "{run:?}"
    );
    assert!(run.stdout.contains("\nPort(s):      80/TCP\n"), "{run:?}");
    assert!(run.stdout.ends_with("Events:       <none>\n"), "{run:?}");

    let run = server.knit(&["delete", "cm", "cfg", "-n", "lite"]).ok();
    assert_eq!(
        run.stdout,
        "configmap \"cfg\" deleted from lite namespace\n"
    );
    let run = server.knit(&["get", "cm", "cfg", "-n", "lite"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "Error from server (NotFound): configmaps \"cfg\" not found\n"
    );
    let run = server.knit(&["delete", "cm", "cfg", "-n", "lite"]);
    assert_eq!(run.code, 1);
    let run = server
        .knit(&["delete", "cm", "cfg", "-n", "lite", "--ignore-not-found"])
        .ok();
    assert_eq!(run.stdout, "");

    let endpoints = server.file(
        "ep.yaml",
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web, namespace: lite}\n",
    );
    let run = server.knit(&["delete", "-f", &endpoints]).ok();
    assert_eq!(
        run.stdout,
        "endpoints \"web\" deleted from lite namespace\n"
    );
    let run = server.knit(&["describe", "service/web", "-n", "lite"]).ok();
    assert!(run.stdout.contains("\nEndpoints:    <none>\n"), "{run:?}");
}

#[test]
fn apply_names_the_file_document_and_field_at_fault() {
    let server = Server::start();
    let bad = server.file(
        "deploy.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata: {name: good}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: -1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: example.com/v1
kind: Gadget
metadata: {name: g}
",
    );
    let run = server.knit(&["apply", "-f", &bad]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout, "configmap/good created\n");
    assert!(
        run.stderr.contains(&format!(
            "error: {bad} (document 2, Deployment \"web\"): the server refused it (Invalid): \
             spec.replicas: Invalid value: -1: must be greater than or equal to 0\n"
        )),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&format!(
            "error: {bad} (document 3, Gadget \"g\"): the server doesn't serve kind \"Gadget\" in example.com/v1\n"
        )),
        "{run:?}"
    );

    let unparsable = server.file("broken.yaml", "apiVersion: v1\nkind: [unclosed\n");
    let run = server.knit(&["apply", "-f", &unparsable]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.starts_with(&format!(
            "error: {unparsable} (document 1): cannot parse it:"
        )),
        "{run:?}"
    );

    let run = server.knit(&["get", "gadgets"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "error: the server doesn't have a resource type \"gadgets\"\n"
    );
}

#[test]
fn logs_say_what_the_server_answered() {
    let server = Server::start();
    let pod = server.file(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox}]}\n",
    );
    server.knit(&["apply", "-f", &pod]).ok();
    // No node runs the pod yet: the server says so, and knit passes it on.
    let run = server.knit(&["logs", "p"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr, "Error from server (BadRequest): pod p does not have a host assigned\n",
        "{run:?}"
    );
    let run = server.knit(&["logs", "missing"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("pod \"missing\""), "{run:?}");
}

#[test]
fn missing_kubeconfig_and_unreachable_server_are_explained() {
    let home = tempfile::tempdir().unwrap();
    let run = knit_with(None, home.path(), &["get", "pods"]);
    assert_eq!(run.code, 1);
    let tried = home.path().join(".kube/config");
    assert!(
        run.stderr.starts_with(&format!(
            "error: no kubeconfig found (tried {})",
            tried.display()
        )),
        "{run:?}"
    );

    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let kubeconfig = home.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let run = knit_with(Some(&kubeconfig), home.path(), &["get", "pods"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.starts_with(&format!(
            "error: unable to connect to the server at http://127.0.0.1:{port}: "
        )),
        "{run:?}"
    );
}

/// These assertions need the server's Table output (branch `tables`):
/// the columns are the server's, not the `NAME AGE` fallback.
#[test]
fn get_prints_the_servers_tables() {
    let server = Server::start();
    let app = server.file("app.yaml", APP);
    server.knit(&["apply", "-f", &app]).ok();
    let run = server.knit(&["get", "svc", "-n", "lite"]).ok();
    let header = run.stdout.lines().next().unwrap_or_default().to_string();
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{run:?}"
    );
    let run = server
        .knit(&["get", "svc", "-n", "lite", "-o", "wide"])
        .ok();
    assert!(
        run.stdout
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with("SELECTOR"),
        "{run:?}"
    );
    let run = server.knit(&["get", "cm", "-n", "lite"]).ok();
    let columns: Vec<&str> = run
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(columns, vec!["NAME", "DATA", "AGE"], "{run:?}");
}

//! `knit lab` on the real kernel: a lab's underlay (switch namespace,
//! nodes, external client, the one host link), its API server and agents,
//! `status -o json`, `exec`, two labs side by side, and `down` leaving
//! nothing behind, also after a crash.
//!
//! Root only: without root the tests print `SKIP: needs root` and pass,
//! except under `CI=true`. Every test uses its own lab names and subnets
//! (from the test process's pid) and removes its labs in a Drop guard.
//! Traffic stays inside the labs: pings go to lab addresses only, and the
//! check that nothing outside is reachable asks the routing table
//! (`ip route get`) without sending a packet.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use knit_e2e::lab::{Lab, default_dir, ip, knit, ok, root_or_skip, run, text};
use serde_json::Value;

/// Whether `knit agent` exists in this build.
fn agent_available() -> bool {
    run(knit().args(["agent", "--help"])).status.success()
}

/// The article's lab: two nodes (with agents when `knit agent` exists),
/// the underlay, status, exec and a clean `down`.
#[test]
fn two_node_lab_comes_up_and_goes_away_without_a_trace() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let agents = agent_available();
    let extra: &[&str] = if agents { &[] } else { &["--no-agents"] };
    eprintln!(
        "lab {}: agents {}",
        lab.name,
        if agents {
            "on"
        } else {
            "off (no `knit agent` yet)"
        }
    );
    let out = lab.up(2, extra);
    assert!(
        out.status.success(),
        "lab up failed:\n{}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    let dir = default_dir(&lab.name);
    let pids = lab.recorded_pids(&dir);
    assert_eq!(
        pids.len(),
        if agents { 3 } else { 1 },
        "server and agents recorded"
    );

    // The namespaces, and in the root namespace one link with the first
    // address and only the connected route.
    let p = lab.netns_prefix();
    let expected: BTreeSet<String> = ["sw", "n1", "n2", "ext"]
        .iter()
        .map(|s| format!("{p}{s}"))
        .collect();
    let found = lab.namespaces();
    assert!(
        expected.is_subset(&found),
        "namespaces {found:?}, expected {expected:?}"
    );
    let addrs = ip(&["-o", "-4", "addr", "show", "dev", &lab.host_link()]);
    assert!(
        addrs.contains(&format!("{}/24", lab.addr(1))),
        "host link addresses: {addrs}"
    );
    let routes = ip(&["-4", "route", "show", "dev", &lab.host_link()]);
    assert_eq!(
        routes.lines().count(),
        1,
        "routes via the host link: {routes}"
    );
    assert!(routes.starts_with(&lab.subnet), "host link route: {routes}");

    // The underlay: nodes reach each other and the host, ext reaches the nodes.
    let (host, n1, n2, ext) = (lab.addr(1), lab.addr(2), lab.addr(3), lab.addr(254));
    lab.ping("1", &n2);
    lab.ping("2", &n1);
    lab.ping(&format!("{}-node-1", lab.name), &host);
    lab.ping("2", &host);
    lab.ping("ext", &n1);
    lab.ping("ext", &n2);
    lab.ping("1", &ext);
    // Nothing outside the lab has a route: asked, not sent.
    for host in ["1", "2", "ext"] {
        let out = lab.exec(host, &["ip", "route", "get", "192.0.2.1"]);
        assert!(
            !out.status.success(),
            "{host} has a route out: {}",
            text(&out.stdout)
        );
        let routes = text(&lab.exec(host, &["ip", "route"]).stdout);
        assert!(
            !routes.contains("default"),
            "{host} has a default route: {routes}"
        );
    }

    // exec runs in the right namespace and passes exit codes through.
    let eth0 = lab.exec("2", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        text(&eth0.stdout).contains(&format!("{n2}/24")),
        "node 2's eth0: {}",
        text(&eth0.stdout)
    );
    assert_eq!(
        lab.exec("1", &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    assert_eq!(lab.exec("ext", &["true"]).status.code(), Some(0));
    let nobody = lab.exec("3", &["true"]);
    assert!(
        !nobody.status.success(),
        "exec on a node that does not exist succeeded"
    );
    assert!(
        text(&nobody.stderr).contains("no host"),
        "{}",
        text(&nobody.stderr)
    );

    // status -o json.
    let status = lab.status();
    assert_eq!(status["name"], lab.name.as_str());
    let kubeconfig = status["kubeconfig"].as_str().expect("kubeconfig");
    assert_eq!(Path::new(kubeconfig), dir.join("kubeconfig"));
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    let mut cidrs = BTreeSet::new();
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(
            node["name"],
            format!("{}-node-{}", lab.name, i + 1).as_str()
        );
        assert_eq!(node["netns"], format!("{p}n{}", i + 1).as_str());
        assert_eq!(node["ip"], lab.addr(2 + i as u8).as_str());
        if agents {
            let cidr = node["podCIDR"].as_str().expect("a podCIDR with agents");
            assert!(cidr.starts_with("10."), "podCIDR {cidr}");
            cidrs.insert(cidr.to_string());
        } else {
            assert!(
                node["podCIDR"].is_null(),
                "podCIDR without agents: {}",
                node["podCIDR"]
            );
        }
    }
    if agents {
        assert_eq!(cidrs.len(), 2, "distinct podCIDRs");
    }
    assert_eq!(status["external"]["netns"], format!("{p}ext").as_str());
    assert_eq!(status["external"]["ip"], ext.as_str());

    // The kubeconfig works from the host.
    let nodes_out = ok(knit()
        .args(["get", "nodes", "-o", "name"])
        .env("KUBECONFIG", kubeconfig));
    if agents {
        for i in 1..=2 {
            assert!(
                nodes_out.contains(&format!("{}-node-{i}", lab.name)),
                "{nodes_out}"
            );
        }
    }

    // With agents, which joined by token: each serves its log endpoint
    // over TLS with its own certificate, to the clients of the CA that are
    // in system:masters (the API server), not to other nodes.
    if agents {
        let tls = dir.join("server").join("tls");
        let path = |name: &str| tls.join(name).to_string_lossy().into_owned();
        let url = format!("https://{}:10250/healthz", lab.addr(2));
        let curl = |extra: &[&str]| {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--max-time", "5", "--cacert", &path("ca.crt")])
                .args(extra)
                .arg(&url);
            cmd.output().expect("curl runs")
        };
        let anonymous = curl(&[]);
        assert!(
            !anonymous.status.success(),
            "served without a client certificate"
        );
        let as_apiserver = curl(&[
            "--cert",
            &path("kubelet-client.crt"),
            "--key",
            &path("kubelet-client.key"),
        ]);
        assert_eq!(
            text(&as_apiserver.stdout).trim(),
            "ok",
            "{}",
            text(&as_apiserver.stderr)
        );
        // Node 1's own credential (its CA-signed client certificate) may
        // not read node 2's endpoint: only the API server and the admin.
        let node1 =
            std::fs::read_to_string(dir.join(format!("{}-node-1", lab.name)).join("kubeconfig"))
                .expect("node 1's kubeconfig");
        let field = |key: &str| {
            let b64 = node1
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in node 1's kubeconfig"));
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim())
                .expect("base64 in the kubeconfig")
        };
        let scratch = tempfile::tempdir().expect("a temporary directory");
        let (cert, key) = (scratch.path().join("n1.crt"), scratch.path().join("n1.key"));
        std::fs::write(&cert, field("client-certificate-data:")).expect("writing the cert");
        std::fs::write(&key, field("client-key-data:")).expect("writing the key");
        let as_node1 = curl(&[
            "--cert",
            &cert.to_string_lossy(),
            "--key",
            &key.to_string_lossy(),
        ]);
        assert!(
            !as_node1.status.success(),
            "node 2's endpoint served node 1's certificate: {}",
            text(&as_node1.stdout)
        );
        // Refused by the endpoint, not by curl for want of a usable file.
        let why = text(&as_node1.stderr);
        assert!(!why.contains("could not load"), "{why}");
        let plain = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                &format!("http://{}:10250/healthz", lab.addr(2)),
            ])
            .output()
            .expect("curl runs");
        assert!(
            !plain.status.success() || text(&plain.stdout).trim() != "ok",
            "plain HTTP served"
        );
        let log =
            std::fs::read_to_string(dir.join("logs").join(format!("{}-node-1.log", lab.name)))
                .unwrap_or_default();
        assert!(
            log.contains("joined the cluster"),
            "node 1 did not join by token:\n{log}"
        );
    }

    // With agents: a pod on node 2 gets a sandbox under the node's
    // prefix and is reached from node 1 across the routes; `down` must
    // remove its namespace and processes too.
    let mut pids = pids;
    if agents {
        pids.extend(pod_on_node_2(&lab, kubeconfig));
    }

    // down: nothing left; a second down is fine and says so.
    lab.down();
    lab.assert_gone(&dir, &pids);
    let again = lab.down();
    assert!(again.contains("nothing to remove"), "second down: {again}");
}

/// Starts a web server pod on node 2, waits until node 1 fetches it by
/// its pod IP, and returns the pids in its sandbox.
fn pod_on_node_2(lab: &Lab, kubeconfig: &str) -> Vec<u32> {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let manifest = tmp.path().join("pod.yaml");
    let node = format!("{}-node-2", lab.name);
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lab-web\nspec:\n  nodeName: {node}\n  \
             containers:\n  - name: web\n    image: python\n    \
             command: [python3, -m, http.server, \"8080\"]\n"
        ),
    )
    .expect("writing the pod manifest");
    let applied = run(knit()
        .args(["apply", "-f"])
        .arg(&manifest)
        .env("KUBECONFIG", kubeconfig));
    assert!(applied.status.success(), "apply: {}", text(&applied.stderr));

    let deadline = Instant::now() + Duration::from_secs(60);
    let pod_ip = loop {
        let out = run(knit()
            .args(["get", "pod", "lab-web", "-o", "json"])
            .env("KUBECONFIG", kubeconfig));
        let pod: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(ip) = pod["status"]["podIP"].as_str() {
            break ip.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "pod lab-web has no IP after 60 s: {pod}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let fetch = format!(
        "import urllib.request as u; print(u.urlopen('http://{pod_ip}:8080/', timeout=2).status)"
    );
    loop {
        let out = lab.exec("1", &["python3", "-c", &fetch]);
        if out.status.success() && text(&out.stdout).trim() == "200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 cannot fetch http://{pod_ip}:8080/: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let sandboxes: Vec<String> = lab
        .namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}n2.", lab.netns_prefix())))
        .collect();
    assert_eq!(sandboxes.len(), 1, "node 2's sandboxes: {sandboxes:?}");
    let pids = ip(&["netns", "pids", &sandboxes[0]]);
    let pids: Vec<u32> = pids
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(!pids.is_empty(), "no process in the pod's sandbox");
    pids
}

/// Two labs with different names and subnets at once, one with its own
/// directory; a third on a taken subnet is refused without leaving
/// anything.
#[test]
fn two_labs_side_by_side() {
    if !root_or_skip() {
        return;
    }
    let a = Lab::new(2);
    let b = Lab::new(3);
    let tmp = tempfile::tempdir().expect("a temp dir");
    let b_dir = tmp.path().join("lab-b");
    let out = a.up(1, &["--no-agents"]);
    assert!(out.status.success(), "lab a: {}", text(&out.stderr));
    let out = b.up(
        2,
        &["--no-agents", "--dir", b_dir.to_str().expect("utf-8 path")],
    );
    assert!(out.status.success(), "lab b: {}", text(&out.stderr));

    a.ping("1", &a.addr(1));
    a.ping("ext", &a.addr(2));
    b.ping("2", &b.addr(1));
    b.ping("1", &b.addr(3));
    // The labs do not see each other.
    let out = a.exec("1", &["ip", "route", "get", &b.addr(2)]);
    assert!(
        !out.status.success(),
        "lab a routes to lab b: {}",
        text(&out.stdout)
    );
    // Found by name alone, although b lives in its own directory.
    assert_eq!(
        b.status()["kubeconfig"],
        b_dir.join("kubeconfig").to_str().expect("utf-8")
    );

    // A lab on a's subnet is refused and leaves nothing.
    let c = Lab {
        name: format!("{}c", a.name),
        subnet: a.subnet.clone(),
    };
    let out = c.up(1, &["--no-agents"]);
    assert!(!out.status.success(), "a lab on a taken subnet came up");
    assert!(
        text(&out.stderr).contains("overlaps"),
        "{}",
        text(&out.stderr)
    );
    assert!(c.namespaces().is_empty() && !c.has_host_link());
    assert!(!default_dir(&c.name).exists());

    let a_pids = a.recorded_pids(&default_dir(&a.name));
    a.down();
    a.assert_gone(&default_dir(&a.name), &a_pids);
    // b is untouched.
    b.ping("1", &b.addr(2));
    b.ping("ext", &b.addr(1));
    let b_pids = b.recorded_pids(&b_dir);
    b.down();
    b.assert_gone(&b_dir, &b_pids);
}

/// After a crash (the server killed, the state file lost) `down` still
/// finds and removes everything by name.
#[test]
fn down_cleans_up_after_a_crash() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(4);
    let out = lab.up(1, &["--no-agents"]);
    assert!(out.status.success(), "lab up: {}", text(&out.stderr));
    let dir = default_dir(&lab.name);
    let pids = lab.recorded_pids(&dir);
    // A stray process inside a node, as a pod process would be.
    let stray = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}n1", lab.netns_prefix()),
            "sleep",
            "300",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("a stray process");
    // The state is lost; a second `up` must refuse while leftovers exist.
    std::fs::remove_file(dir.join("lab.json")).expect("removing the state file");
    let again = lab.up(1, &["--no-agents"]);
    assert!(!again.status.success(), "up over leftovers succeeded");
    assert!(
        text(&again.stderr).contains("leftovers"),
        "{}",
        text(&again.stderr)
    );

    let mut all = pids.clone();
    all.push(stray.id());
    lab.down();
    let mut stray = stray;
    let _ = stray.wait();
    lab.assert_gone(&dir, &all);
}

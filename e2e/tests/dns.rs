//! Cluster DNS on the real kernel, through `knit lab` and the real kubectl
//! v1.35: every node agent answers on the `kube-dns` address
//! (`10.3.240.10`, on its `knit-dns` link) for its own pods. A client pod
//! on node 1 resolves, with `dig` and the resolv.conf its agent wrote,
//! the article's `service-test` by short name and by FQDN, a headless
//! Service (its ready pods), an SRV record of a named port, the
//! ClusterIP's PTR, an ExternalName (its CNAME: the lab reaches no
//! upstream resolver for the target's addresses), `kubernetes.default`,
//! `kube-dns.kube-system`, a Service in another namespace by
//! `<svc>.<ns>`, a missing name (NXDOMAIN), and the FQDN over TCP. Then,
//! from the client pod's own namespace and from node 2, a new Service
//! appears and a deleted one turns NXDOMAIN (the times are printed).
//!
//! Last, the article's own request: `http://service-test/` by its short
//! name, resolved by the pod's resolver and carried by the node's DNAT.
//!
//! Root only: without root the test prints `SKIP: needs root` and passes,
//! except under `CI=true`; without `$KNIT_KUBECTL` it SKIPs the same way.
//! It needs `dig` (Debian: bind9-dnsutils), which the pods run from the
//! host.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use knit_e2e::lab::{Lab, LabKubectl, condition_true, root_or_skip, run, text};
use serde_json::Value;

const DEPLOYMENT: &str = include_str!("manifests/service-test-deployment-python3.yaml");

/// The article's Service with its port named (SRV records exist for named
/// ports only), a headless one over the same pods, an ExternalName, and a
/// Service in another namespace.
const SERVICES: &str = r#"
kind: Service
apiVersion: v1
metadata:
  name: service-test
spec:
  selector:
    app: service_test_pod
  ports:
  - name: http
    port: 80
    targetPort: http
---
kind: Service
apiVersion: v1
metadata:
  name: db
spec:
  clusterIP: None
  selector:
    app: service_test_pod
  ports:
  - name: http
    port: 8080
---
kind: Service
apiVersion: v1
metadata:
  name: ext
spec:
  type: ExternalName
  externalName: www.example.com
---
kind: Namespace
apiVersion: v1
metadata:
  name: other
---
kind: Service
apiVersion: v1
metadata:
  name: far
  namespace: other
spec:
  ports:
  - port: 9000
"#;

/// A client on node 1 that prints its resolv.conf and hosts, then one
/// block per lookup (`== <what>` then dig's status and answer lines), then
/// `== DONE`, and stays up so that the test can ask from its namespace.
const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: dns-client
spec:
  restartPolicy: Never
  nodeSelector:
    kubernetes.io/hostname: NODE
  containers:
  - name: dig
    image: debian:stable
    command: ["/bin/bash", "-c"]
    args:
    - |
      echo "== resolv.conf"; cat /etc/resolv.conf
      echo "== hosts"; cat /etc/hosts
      check() {
        what=$1; shift
        echo "== $what"
        dig +time=2 +tries=2 +nocmd +noall +comments +answer "$@" 2>&1 | grep -E 'status:|IN'
      }
      check short +search service-test
      check fqdn service-test.default.svc.cluster.local
      check upper SERVICE-TEST.Default.SVC.cluster.local
      check headless db.default.svc.cluster.local
      check srv _http._tcp.service-test.default.svc.cluster.local SRV
      check ptr -x PTR_IP
      check external ext.default.svc.cluster.local CNAME
      check kubernetes +search kubernetes.default
      check kubedns +search kube-dns.kube-system
      check other +search far.other
      check missing nothere.default.svc.cluster.local
      check aaaa service-test.default.svc.cluster.local AAAA
      check tcp +tcp service-test.default.svc.cluster.local
      echo "== http"
      python3 -c 'import urllib.request; print("BODY", urllib.request.urlopen("http://service-test/", timeout=5).read().decode().strip())' 2>&1
      echo "== DONE"
      sleep 3600
"#;

/// How long pods may take to come up in a fresh lab.
const POD_LIMIT: Duration = Duration::from_secs(30);

/// One lookup's outcome: dig's status and the answer records as
/// (name, type, data).
#[derive(Debug, Default)]
struct Lookup {
    status: String,
    answers: Vec<(String, String, String)>,
    ttls: Vec<u32>,
}

/// The client's log, split into its `== <what>` blocks.
fn blocks(log: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in log.lines() {
        if let Some(what) = line.strip_prefix("== ") {
            current = what.to_string();
            out.entry(current.clone()).or_default();
        } else {
            out.entry(current.clone())
                .or_default()
                .push(line.to_string());
        }
    }
    out
}

fn lookup(lines: &[String]) -> Lookup {
    let mut l = Lookup::default();
    for line in lines {
        if let Some(rest) = line.split("status: ").nth(1) {
            l.status = rest.split(',').next().unwrap_or_default().to_string();
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 && f[2] == "IN" {
            l.ttls.push(f[1].parse().unwrap_or(u32::MAX));
            l.answers
                .push((f[0].to_string(), f[3].to_string(), f[4..].join(" ")));
        }
    }
    l
}

/// `dig` inside a network namespace (a pod's or a node's) at the cluster
/// DNS address: the status.
fn dig_status(netns: &str, name: &str) -> String {
    let out = run(Command::new("ip").args(["netns", "exec", netns]).args([
        "dig",
        "+time=1",
        "+tries=1",
        "+nocmd",
        "+noall",
        "+comments",
        "@10.3.240.10",
        name,
    ]));
    let text = text(&out.stdout);
    text.split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("no answer")
        .to_string()
}

/// Polls until `name` has `status` in every one of `netns`; how long that
/// took.
fn until_status(lab: &Lab, netns: &[String], name: &str, status: &str) -> Duration {
    let start = Instant::now();
    lab.wait_for(
        &format!("{name} {status} on {netns:?}"),
        Duration::from_secs(10),
        || {
            for ns in netns {
                let got = dig_status(ns, name);
                if got != status {
                    return Err(format!("{ns}: {got}"));
                }
            }
            Ok(())
        },
    );
    start.elapsed()
}

fn have_dig() -> bool {
    Command::new("sh")
        .args(["-c", "command -v dig"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn lab_with_kubectl(n: u8, nodes: usize) -> Option<(Lab, LabKubectl)> {
    if !root_or_skip() {
        return None;
    }
    assert!(
        have_dig() || std::env::var("CI").as_deref() != Ok("true"),
        "dig is missing (apt-get install bind9-dnsutils)"
    );
    if !have_dig() {
        eprintln!("SKIP: needs dig (bind9-dnsutils)");
        return None;
    }
    knit_e2e::lab::lab_with_kubectl(n, nodes)
}

#[test]
fn pods_resolve_cluster_names_from_their_own_node() {
    let Some((lab, kubectl)) = lab_with_kubectl(60, 2) else {
        return;
    };
    let out = kubectl.ok(&[
        "get",
        "service",
        "kube-dns",
        "-n",
        "kube-system",
        "-o",
        "json",
    ]);
    let dns: Value = serde_json::from_str(&out).expect("the kube-dns Service as JSON");
    assert_eq!(dns["spec"]["clusterIP"], "10.3.240.10", "{dns}");
    assert_eq!(dns["metadata"]["labels"]["k8s-app"], "kube-dns");
    // Each agent puts the address on its node's link once it follows the
    // API, which may be a moment after the node turned Ready.
    for i in 1..=2 {
        let netns = lab.node_netns(i);
        lab.wait_for(&format!("node {i}'s knit-dns link"), POD_LIMIT, || {
            let out = run(Command::new("ip").args(["-n", &netns, "addr", "show", "knit-dns"]));
            let shown = text(&out.stdout);
            if shown.contains("10.3.240.10/32") {
                Ok(())
            } else {
                Err(format!("{shown}{}", text(&out.stderr)))
            }
        });
    }

    kubectl.apply(DEPLOYMENT);
    kubectl.apply(SERVICES);
    let pod_ips: BTreeSet<String> = lab.wait_for("two ready service-test pods", POD_LIMIT, || {
        let pods = kubectl.pods()?;
        let ips: BTreeSet<String> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "service_test_pod")
            .filter(|p| condition_true(p, "Ready"))
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect();
        if ips.len() == 2 {
            Ok(ips)
        } else {
            Err(format!("ready: {ips:?}"))
        }
    });
    let cluster_ip = |ns: &str, name: &str| {
        let out = kubectl.ok(&[
            "get",
            "service",
            name,
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        out.trim().to_string()
    };
    let test_ip = cluster_ip("default", "service-test");
    let far_ip = cluster_ip("other", "far");
    // The headless Service's slice lists both pods as ready before the
    // client asks (the DNS follows within milliseconds; the endpoints
    // controller is what takes time here).
    lab.wait_for("db's endpoints ready", POD_LIMIT, || {
        let out = kubectl.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=db",
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let ready = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] != false)
            .count();
        if ready == 2 {
            Ok(())
        } else {
            Err(format!("{ready} ready"))
        }
    });

    let client = CLIENT
        .replace("NODE", &lab.node_name(1))
        .replace("PTR_IP", &test_ip);
    kubectl.apply(&client);
    let log = lab.wait_for("the client's lookups", POD_LIMIT, || {
        let out = kubectl.run(&["logs", "dns-client"]);
        let log = text(&out.stdout);
        if log.contains("== DONE") {
            Ok(log)
        } else {
            Err(format!("log so far:\n{log}{}", text(&out.stderr)))
        }
    });
    let b = blocks(&log);
    let get = |what: &str| {
        lookup(
            b.get(what)
                .unwrap_or_else(|| panic!("no {what} in:\n{log}")),
        )
    };
    // The article's request: the service by its short name, on port 80,
    // through the name the pod's resolver finds and the node's DNAT.
    assert!(
        log.lines()
            .any(|l| l.starts_with("BODY <p>Hello from service-test-")),
        "the request to http://service-test/ failed:\n{log}"
    );
    let fqdn = "service-test.default.svc.cluster.local.";

    // resolv.conf and hosts as the kubelet writes them.
    let resolv = b["resolv.conf"].join("\n");
    assert!(resolv.contains("nameserver 10.3.240.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let client_pod = kubectl
        .get_json("pod", "dns-client")
        .expect("the client pod");
    let client_ip = client_pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hosts = b["hosts"].join("\n");
    assert!(
        hosts.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == [client_ip.as_str(), "dns-client"]),
        "{hosts}"
    );

    let a = |what: &str, name: &str, want: &[&str]| {
        let l = get(what);
        assert_eq!(l.status, "NOERROR", "{what}: {l:?}\n{log}");
        let got: BTreeSet<(String, String, String)> = l.answers.iter().cloned().collect();
        let want: BTreeSet<(String, String, String)> = want
            .iter()
            .map(|ip| (name.to_string(), "A".to_string(), ip.to_string()))
            .collect();
        assert_eq!(got, want, "{what}\n{log}");
        assert!(l.ttls.iter().all(|&t| t == 5), "{what}: TTLs {:?}", l.ttls);
    };
    a("short", fqdn, &[&test_ip]);
    a("fqdn", fqdn, &[&test_ip]);
    a("tcp", fqdn, &[&test_ip]);
    a(
        "upper",
        "SERVICE-TEST.Default.SVC.cluster.local.",
        &[&test_ip],
    );
    let pods: Vec<&str> = pod_ips.iter().map(String::as_str).collect();
    a("headless", "db.default.svc.cluster.local.", &pods);
    a(
        "kubernetes",
        "kubernetes.default.svc.cluster.local.",
        &["10.3.240.1"],
    );
    a(
        "kubedns",
        "kube-dns.kube-system.svc.cluster.local.",
        &["10.3.240.10"],
    );
    a("other", "far.other.svc.cluster.local.", &[&far_ip]);

    let srv = get("srv");
    assert_eq!(srv.status, "NOERROR", "{log}");
    assert_eq!(
        srv.answers,
        [(
            "_http._tcp.service-test.default.svc.cluster.local.".to_string(),
            "SRV".to_string(),
            format!("0 100 80 {fqdn}")
        )],
        "{log}"
    );
    let ptr = get("ptr");
    let octets: Vec<&str> = test_ip.split('.').rev().collect();
    assert_eq!(
        ptr.answers,
        [(
            format!("{}.in-addr.arpa.", octets.join(".")),
            "PTR".to_string(),
            fqdn.to_string()
        )],
        "{log}"
    );
    let ext = get("external");
    assert_eq!(ext.status, "NOERROR", "{log}");
    assert_eq!(
        ext.answers.first(),
        Some(&(
            "ext.default.svc.cluster.local.".to_string(),
            "CNAME".to_string(),
            "www.example.com.".to_string()
        )),
        "{log}"
    );
    let missing = get("missing");
    assert_eq!(
        (missing.status.as_str(), missing.answers.len()),
        ("NXDOMAIN", 0),
        "{log}"
    );
    let aaaa = get("aaaa");
    assert_eq!(
        (aaaa.status.as_str(), aaaa.answers.len()),
        ("NOERROR", 0),
        "{log}"
    );

    // From the client pod's own namespace and from node 2: a new Service
    // appears, a deleted one turns NXDOMAIN.
    let uid = client_pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let sandbox = lab
        .sandboxes(1)
        .into_iter()
        .find(|s| s.ends_with(&uid))
        .unwrap_or_else(|| panic!("no sandbox of {uid} on node 1: {:?}", lab.sandboxes(1)));
    let askers = vec![sandbox, lab.node_netns(2)];
    let name = "late.default.svc.cluster.local";
    assert_eq!(dig_status(&askers[0], name), "NXDOMAIN");
    kubectl.apply(
        "kind: Service\napiVersion: v1\nmetadata:\n  name: late\nspec:\n  ports:\n  - port: 1\n",
    );
    let appeared = until_status(&lab, &askers, name, "NOERROR");
    kubectl.ok(&["delete", "service", "late"]);
    let gone = until_status(&lab, &askers, name, "NXDOMAIN");
    kubectl.ok(&["delete", "service", "far", "-n", "other"]);
    let far_gone = until_status(&lab, &askers, "far.other.svc.cluster.local", "NXDOMAIN");
    eprintln!(
        "dns: a created Service answered on both nodes within {appeared:?} of kubectl apply; \
         deleted ones NXDOMAIN within {gone:?} and {far_gone:?} of kubectl delete \
         (polling, kubectl's own time included)"
    );
}

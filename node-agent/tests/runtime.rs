//! The process runtime against the real kernel, as root: pods whose
//! containers run as processes in a network namespace the test makes,
//! with their hostname, environment, `/etc` files, logs, restarts,
//! probes, graceful kills and re-adoption by a new runtime.
//!
//! Every test makes its own namespace (unique short name, removed by a
//! guard even when the test fails) and its own state directory, and kills
//! what it started. Without root the tests print `SKIP: needs root` and
//! pass, unless `CI=true`.

mod common;

use common::{have_root, ip, tag};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use knit_node_agent::containers::{Containers, PodContainers, SandboxRef};
use knit_node_agent::runtime::{Options, ProcessRuntime, spec::Backoff};
use serde_json::{Value, json};

const POD_IP: &str = "10.77.0.2";

/// A pod network namespace with `lo` up and the pod IP on `eth0`;
/// removed on drop.
struct PodNetns {
    name: String,
}

impl PodNetns {
    fn new() -> Result<Self> {
        let ns = PodNetns { name: tag("kr") };
        ip(&["netns", "add", &ns.name])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        // A veth pair with both ends inside (no dummy module here).
        ip(&[
            "-n", &ns.name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ])?;
        ip(&["-n", &ns.name, "link", "set", "peer0", "up"])?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{POD_IP}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"])?;
        Ok(ns)
    }

    fn sandbox(&self) -> SandboxRef {
        SandboxRef {
            netns_path: Some(PathBuf::from("/run/netns").join(&self.name)),
            pod_ip: POD_IP.parse().unwrap(),
            resolv_conf: format!(
                "nameserver 10.3.240.10\nsearch {}.svc.cluster.local\n",
                self.name
            ),
            hosts: format!("127.0.0.1\tlocalhost\n{POD_IP}\tpod-of-{}\n", self.name),
        }
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A runtime on a temporary state directory whose pods are killed on
/// drop, whatever happened.
struct Harness {
    runtime: ProcessRuntime,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    fn new(backoff: Backoff) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let runtime = runtime_on(dir.path(), backoff)?;
        Ok(Harness {
            runtime,
            _dir: Some(dir),
        })
    }
}

fn runtime_on(dir: &Path, backoff: Backoff) -> Result<ProcessRuntime> {
    let mut options = Options::new(dir);
    options.backoff = backoff;
    options.tick = Duration::from_millis(50);
    Ok(ProcessRuntime::new(options)?)
}

impl Drop for Harness {
    fn drop(&mut self) {
        let runtime = self.runtime.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            for uid in runtime.pods() {
                let _ = rt.block_on(runtime.kill(&uid, Duration::ZERO));
            }
        })
        .join();
    }
}

fn pod(name: &str, uid: &str, spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": spec,
    }))
    .expect("a pod")
}

/// Polls `f` until it gives `Some`, up to `limit`.
async fn wait<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn container<'a>(status: &'a PodContainers, name: &str) -> &'a ContainerStatus {
    status
        .statuses
        .iter()
        .find(|s| s.name == name)
        .expect("a status for the container")
}

fn terminated_code(status: &ContainerStatus) -> Option<i32> {
    Some(status.state.as_ref()?.terminated.as_ref()?.exit_code)
}

fn last_code(status: &ContainerStatus) -> Option<i32> {
    Some(status.last_state.as_ref()?.terminated.as_ref()?.exit_code)
}

/// The text of a CRI-format log, without timestamps and stream tags.
fn log_text(runtime: &ProcessRuntime, pod: &str, container: &str, previous: bool) -> String {
    let Some(path) = runtime.log_file("default", pod, container, previous) else {
        return String::new();
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| line.splitn(4, ' ').nth(3).unwrap_or("").to_string() + "\n")
        .collect()
}

#[tokio::test]
async fn a_container_sees_its_pods_hostname_env_files_and_network() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let ns = PodNetns::new()?;
    let h = Harness::new(Backoff::default())?;
    let p = pod(
        "hello-pod",
        "u-hello",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "busybox:1.36",
                "command": ["sh", "-c"],
                "args": ["echo \"Hello from $(hostname)\"; echo \"$(GREETING) in $(NS) at $(IP)\"; echo '$(UNSET) $$(ESCAPED)'; cat /etc/hosts /etc/resolv.conf; ip -4 -o addr show dev eth0; echo cwd=$PWD; echo err >&2"],
                "env": [
                    {"name": "WHO", "value": "world"},
                    {"name": "GREETING", "value": "hello $(WHO)"},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                ]
            }]
        }),
    );
    h.runtime.sync(&p, &ns.sandbox()).await?;
    let status = wait(Duration::from_secs(10), "the container to complete", || {
        let s = h.runtime.status("u-hello")?;
        (s.phase == "Succeeded").then_some(s)
    })
    .await?;
    let main = container(&status, "main");
    assert_eq!(terminated_code(main), Some(0));
    let reason = main
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap()
        .reason
        .clone();
    assert_eq!(reason.as_deref(), Some("Completed"));
    assert_eq!(main.image, "busybox:1.36");
    assert_eq!(main.restart_count, 0);
    let log = wait(Duration::from_secs(5), "the log", || {
        let log = log_text(&h.runtime, "hello-pod", "main", false);
        log.contains("err\n").then_some(log)
    })
    .await?;
    assert!(log.contains("Hello from hello-pod\n"), "{log}");
    assert!(
        log.contains("hello world in default at 10.77.0.2\n"),
        "{log}"
    );
    // Unresolved references stay as they are; `$$` is an escaped `$`.
    assert!(log.contains("$(UNSET) $(ESCAPED)\n"), "{log}");
    assert!(
        log.contains(&format!("pod-of-{}", ns.name)),
        "the pod's /etc/hosts: {log}"
    );
    assert!(
        log.contains(&format!("search {}.svc", ns.name)),
        "the pod's resolv.conf: {log}"
    );
    assert!(log.contains("inet 10.77.0.2/24"), "the pod's eth0: {log}");
    let work = h.runtime.state_dir().join("pods/u-hello/work");
    assert!(log.contains(&format!("cwd={}\n", work.display())), "{log}");
    // Streams are told apart in the CRI format.
    let raw = std::fs::read_to_string(
        h.runtime
            .log_file("default", "hello-pod", "main", false)
            .unwrap(),
    )?;
    assert!(raw.lines().any(|l| l.contains(" stderr F err")), "{raw}");
    // The node's own files and hostname are untouched.
    let hosts = std::fs::read_to_string("/etc/hosts")?;
    assert!(!hosts.contains(&ns.name));
    assert_ne!(nix::unistd::gethostname()?.to_string_lossy(), "hello-pod");
    Ok(())
}

#[tokio::test]
async fn two_containers_of_a_pod_talk_over_localhost() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let ns = PodNetns::new()?;
    let h = Harness::new(Backoff::default())?;
    let p = pod(
        "duo",
        "u-duo",
        json!({
            "containers": [
                {
                    "name": "server",
                    "command": ["python3", "-m", "http.server", "8080"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 1}
                },
                {
                    "name": "client",
                    "command": ["sh", "-c", "echo shared-by-$(POD) > note.txt; until curl -sf http://localhost:8080/note.txt; do sleep 0.2; done; sleep 300"],
                    "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
                }
            ]
        }),
    );
    h.runtime.sync(&p, &ns.sandbox()).await?;
    let log = wait(
        Duration::from_secs(15),
        "the client to fetch from the server",
        || {
            let log = log_text(&h.runtime, "duo", "client", false);
            log.contains("shared-by-duo").then_some(log)
        },
    )
    .await?;
    assert!(log.contains("shared-by-duo\n"), "{log}");
    let status = wait(Duration::from_secs(10), "the pod to turn ready", || {
        let s = h.runtime.status("u-duo")?;
        s.ready.then_some(s)
    })
    .await?;
    assert_eq!(status.phase, "Running");
    assert!(container(&status, "server").ready);
    // The server is in the pod's namespace only: not on the node's
    // loopback (unless something else happens to listen there).
    let server_log = log_text(&h.runtime, "duo", "server", false);
    assert!(server_log.contains("GET /note.txt"), "{server_log}");
    Ok(())
}

#[tokio::test]
async fn exit_codes_restart_policies_and_back_off() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let ns = PodNetns::new()?;
    let backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(2),
        reset: Duration::from_secs(600),
    };
    let h = Harness::new(backoff)?;
    let crash = pod(
        "crash",
        "u-crash",
        json!({
            "restartPolicy": "OnFailure",
            "containers": [{"name": "c", "command": ["sh", "-c", "echo run; exit 3"]}]
        }),
    );
    let fail = pod(
        "fail",
        "u-fail",
        json!({
            "restartPolicy": "Never",
            "containers": [
                {"name": "ok", "command": ["true"]},
                {"name": "bad", "command": ["sh", "-c", "exit 2"]}
            ]
        }),
    );
    let start = Instant::now();
    h.runtime.sync(&crash, &ns.sandbox()).await?;
    h.runtime.sync(&fail, &ns.sandbox()).await?;

    // The first restart is immediate; the second waits in CrashLoopBackOff.
    let waiting = wait(Duration::from_secs(5), "CrashLoopBackOff", || {
        let s = h.runtime.status("u-crash")?;
        let c = container(&s, "c").clone();
        let reason = c.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
        (reason == "CrashLoopBackOff").then_some((s, c))
    })
    .await?;
    let (status, c) = waiting;
    assert_eq!(c.restart_count, 1);
    assert_eq!(last_code(&c), Some(3));
    let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(status.phase, "Running", "OnFailure with a failed container");
    assert!(!status.ready);
    let message = c
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone();
    assert!(
        message
            .unwrap_or_default()
            .starts_with("back-off 1s restarting failed container=c pod=crash_default(u-crash)")
    );
    let at_one = Instant::now();

    let restarted = |n: i32| {
        let runtime = h.runtime.clone();
        move || {
            let s = runtime.status("u-crash")?;
            (container(&s, "c").restart_count >= n).then_some(Instant::now())
        }
    };
    let at_two = wait(Duration::from_secs(5), "the second restart", restarted(2)).await?;
    let at_three = wait(Duration::from_secs(6), "the third restart", restarted(3)).await?;
    assert!(
        at_two - at_one >= Duration::from_millis(700),
        "waited {:?}",
        at_two - at_one
    );
    assert!(
        at_three - at_two >= Duration::from_millis(1700),
        "the back-off doubles: waited {:?}",
        at_three - at_two
    );
    assert!(start.elapsed() < Duration::from_secs(15));
    // The previous run's log is kept.
    assert!(log_text(&h.runtime, "crash", "c", true).contains("run\n"));

    let status = wait(Duration::from_secs(5), "the Never pod to fail", || {
        let s = h.runtime.status("u-fail")?;
        (s.phase == "Failed").then_some(s)
    })
    .await?;
    assert_eq!(terminated_code(container(&status, "ok")), Some(0));
    assert_eq!(terminated_code(container(&status, "bad")), Some(2));
    assert_eq!(container(&status, "bad").restart_count, 0);
    let events = h.runtime.take_events("u-crash");
    assert!(events.iter().any(|e| e.reason == "BackOff"), "{events:?}");
    Ok(())
}

#[tokio::test]
async fn readiness_and_liveness_probes() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let ns = PodNetns::new()?;
    let h = Harness::new(Backoff::default())?;
    let p = pod(
        "probed",
        "u-probed",
        json!({
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "app",
                "command": ["sh", "-c", "echo up; exec sleep 300"],
                "readinessProbe": {"exec": {"command": ["test", "-f", "ready"]},
                                   "periodSeconds": 1, "failureThreshold": 1},
                "livenessProbe": {"exec": {"command": ["sh", "-c", "! test -f dead"]},
                                  "periodSeconds": 1, "failureThreshold": 2}
            }]
        }),
    );
    let work = h.runtime.state_dir().join("pods/u-probed/work");
    h.runtime.sync(&p, &ns.sandbox()).await?;
    let status = wait(Duration::from_secs(5), "the container to run", || {
        let s = h.runtime.status("u-probed")?;
        (s.phase == "Running").then_some(s)
    })
    .await?;
    assert!(!status.ready, "not ready before the probe passes");

    std::fs::write(work.join("ready"), "")?;
    wait(Duration::from_secs(5), "ready", || {
        h.runtime.status("u-probed")?.ready.then_some(())
    })
    .await?;
    std::fs::remove_file(work.join("ready"))?;
    let not_ready = Instant::now();
    wait(Duration::from_secs(5), "not ready", || {
        (!h.runtime.status("u-probed")?.ready).then_some(())
    })
    .await?;
    assert!(not_ready.elapsed() < Duration::from_secs(3));
    let events = h.runtime.take_events("u-probed");
    assert!(
        events
            .iter()
            .any(|e| e.reason == "Unhealthy" && e.message.starts_with("Readiness probe failed")),
        "{events:?}"
    );

    std::fs::write(work.join("dead"), "")?;
    let c = wait(Duration::from_secs(10), "the liveness restart", || {
        let s = h.runtime.status("u-probed")?;
        let c = container(&s, "app").clone();
        (c.restart_count == 1).then_some(c)
    })
    .await?;
    std::fs::remove_file(work.join("dead"))?;
    // `sleep` dies of the SIGTERM.
    assert_eq!(last_code(&c), Some(143));
    let events = h.runtime.take_events("u-probed");
    assert!(
        events.iter().any(|e| e.reason == "Killing"
            && e.message == "Container app failed liveness probe, will be restarted"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.message.starts_with("Liveness probe failed"))
    );
    // Running again, and it stays up once the probe passes.
    wait(
        Duration::from_secs(5),
        "the restarted container to run",
        || {
            let s = h.runtime.status("u-probed")?;
            let c = container(&s, "app");
            c.state.as_ref()?.running.as_ref().map(|_| ())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        container(&h.runtime.status("u-probed").unwrap(), "app").restart_count,
        1
    );
    Ok(())
}

#[tokio::test]
async fn kill_is_graceful_then_forceful() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let ns = PodNetns::new()?;
    let h = Harness::new(Backoff::default())?;
    let polite = pod(
        "polite",
        "u-polite",
        json!({"containers": [{"name": "c",
            "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]}]}),
    );
    let stubborn = pod(
        "stubborn",
        "u-stubborn",
        json!({"containers": [{"name": "c",
            "command": ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]}]}),
    );
    h.runtime.sync(&polite, &ns.sandbox()).await?;
    h.runtime.sync(&stubborn, &ns.sandbox()).await?;
    for uid in ["u-polite", "u-stubborn"] {
        wait(Duration::from_secs(5), "running", || {
            (h.runtime.status(uid)?.phase == "Running").then_some(())
        })
        .await?;
    }
    let pid_of = |uid: &str| -> Result<i32> {
        let state: Value = serde_json::from_slice(&std::fs::read(
            h.runtime
                .state_dir()
                .join("pods")
                .join(uid)
                .join("state.json"),
        )?)?;
        state["containers"][0]["run"]["pid"]
            .as_i64()
            .map(|p| p as i32)
            .context("a pid")
    };
    let (polite_pid, stubborn_pid) = (pid_of("u-polite")?, pid_of("u-stubborn")?);

    let t = Instant::now();
    h.runtime.kill("u-polite", Duration::from_secs(10)).await?;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "SIGTERM was enough: {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    h.runtime.kill("u-stubborn", Duration::from_secs(1)).await?;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(4),
        "{took:?}"
    );
    for pid in [polite_pid, stubborn_pid] {
        assert_eq!(
            knit_node_agent::runtime::process::start_time(pid),
            None,
            "{pid} is gone"
        );
    }
    assert!(h.runtime.pods().is_empty());
    assert!(h.runtime.status("u-polite").is_none());
    assert!(!h.runtime.state_dir().join("pods/u-polite").exists());
    Ok(())
}

#[tokio::test]
async fn a_new_runtime_adopts_running_containers() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let ns = PodNetns::new()?;
    let dir = tempfile::tempdir()?;
    let p = pod(
        "keeper",
        "u-keeper",
        json!({"containers": [{"name": "c",
            "command": ["sh", "-c", "echo $$$$ > pid; echo started; exec sleep 300"],
            "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]}),
    );
    let first = runtime_on(dir.path(), Backoff::default())?;
    first.sync(&p, &ns.sandbox()).await?;
    let before = wait(Duration::from_secs(5), "ready", || {
        let s = first.status("u-keeper")?;
        s.ready.then_some(s)
    })
    .await?;
    drop(first);

    let second = Harness {
        runtime: runtime_on(dir.path(), Backoff::default())?,
        _dir: None,
    };
    let adopted = second
        .runtime
        .status("u-keeper")
        .context("the pod is known")?;
    assert_eq!(second.runtime.pods(), ["u-keeper"]);
    let (b, a) = (container(&before, "c"), container(&adopted, "c"));
    assert_eq!(a.restart_count, 0);
    assert_eq!(a.state, b.state, "the same run, still running");
    assert!(a.ready, "readiness carries over");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = log_text(&second.runtime, "keeper", "c", false);
    assert_eq!(log.matches("started").count(), 1, "not restarted: {log}");

    // The adopted process is not our child; its end is still noticed, with
    // its exit code, and the restart policy applies.
    let pid: i32 = std::fs::read_to_string(dir.path().join("pods/u-keeper/work/pid"))?
        .trim()
        .parse()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let c = wait(Duration::from_secs(5), "the restart", || {
        let s = second.runtime.status("u-keeper")?;
        let c = container(&s, "c").clone();
        (c.restart_count == 1).then_some(c)
    })
    .await?;
    assert_eq!(last_code(&c), Some(143));
    drop(second);
    drop(dir);
    Ok(())
}

#[tokio::test]
async fn a_startup_probe_gates_readiness_and_restarts_when_it_gives_up() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let ns = PodNetns::new()?;
    let h = Harness::new(Backoff::default())?;
    let p = pod(
        "slow",
        "u-slow",
        json!({
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "command": ["sleep", "300"],
                "startupProbe": {"exec": {"command": ["test", "-f", "started"]},
                                 "periodSeconds": 1, "failureThreshold": 2},
                "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}
            }]
        }),
    );
    h.runtime.sync(&p, &ns.sandbox()).await?;
    let c = wait(
        Duration::from_secs(8),
        "the startup probe to give up",
        || {
            let s = h.runtime.status("u-slow")?;
            let c = container(&s, "app").clone();
            (c.restart_count == 1).then_some(c)
        },
    )
    .await?;
    assert_eq!(last_code(&c), Some(143));
    let events = h.runtime.take_events("u-slow");
    assert!(
        events
            .iter()
            .any(|e| e.message == "Container app failed startup probe, will be restarted"),
        "{events:?}"
    );
    // Readiness never ran while the startup probe had not passed.
    assert!(!events.iter().any(|e| e.message.starts_with("Readiness")));
    let status = h.runtime.status("u-slow").context("status")?;
    assert_eq!(container(&status, "app").started, Some(false));
    assert!(!status.ready);

    std::fs::write(h.runtime.state_dir().join("pods/u-slow/work/started"), "")?;
    let status = wait(Duration::from_secs(5), "started and ready", || {
        let s = h.runtime.status("u-slow")?;
        s.ready.then_some(s)
    })
    .await?;
    assert_eq!(container(&status, "app").started, Some(true));
    assert_eq!(container(&status, "app").restart_count, 1);
    Ok(())
}

#[tokio::test]
async fn concurrent_syncs_of_a_pod_start_each_container_once() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let ns = PodNetns::new()?;
    let h = Harness::new(Backoff::default())?;
    // Each start appends a line to a file in the shared working directory.
    let spec = |name: &str| {
        json!({"name": name,
            "command": ["sh", "-c", format!("echo {name} >> starts; exec sleep 300")]})
    };
    let p = pod(
        "racer",
        "u-racer",
        json!({"containers": [spec("a"), spec("b")]}),
    );
    let sandbox = ns.sandbox();
    // Syncs run on blocking threads of their own: these really overlap,
    // and with the supervisor's ticks too.
    let syncs: Vec<_> = (0..8).map(|_| h.runtime.sync(&p, &sandbox)).collect();
    for result in futures::future::join_all(syncs).await {
        result?;
    }
    let status = wait(Duration::from_secs(5), "both running", || {
        let s = h.runtime.status("u-racer")?;
        let running = s
            .statuses
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()));
        running.then_some(s)
    })
    .await?;
    for name in ["a", "b"] {
        assert_eq!(container(&status, name).restart_count, 0);
    }
    let starts = h.runtime.state_dir().join("pods/u-racer/work/starts");
    let lines = wait(Duration::from_secs(5), "both starts written", || {
        let text = std::fs::read_to_string(&starts).ok()?;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        (lines.len() >= 2).then_some(lines)
    })
    .await?;
    // A second launch would have written by now too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut now: Vec<String> = std::fs::read_to_string(&starts)?
        .lines()
        .map(str::to_string)
        .collect();
    now.sort();
    assert_eq!(lines, ["a", "b"]);
    assert_eq!(now, ["a", "b"], "each container started once");
    Ok(())
}

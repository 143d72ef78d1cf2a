//! A `knit lab` for one root test: the root check (`SKIP: needs root`, but
//! never under `CI=true`), bounded commands, and [`Lab`], a guard that
//! names a lab and a subnet unique to the test process and runs
//! `knit lab down` when dropped, so a failing test leaves nothing behind.
//!
//! [`Lab`] also reads the lab's state file (`lab.json`: nodes, their
//! namespaces, sandbox prefixes and agent logs), runs the real kubectl
//! against the lab ([`LabKubectl`]), gathers what a failure message needs
//! ([`Lab::diagnostics`]: `kubectl get pods -o wide` and the agents' log
//! tails), finds, kills and restarts a node's agent the way `knit lab up`
//! started it, and checks that `down` removed everything
//! ([`Lab::assert_gone`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::kubectl::kubectl_bin;
use crate::server::knit_bin;

/// Any single command of the lab tests must finish within this.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// Where labs live unless `--dir` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/knit-lab";

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// `true` when a root test may run; prints `SKIP: needs root` otherwise.
///
/// # Panics
/// When not root and `CI=true`: CI must run the root tests.
pub fn root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the lab tests need root, and CI=true must run them"
    );
    eprintln!("SKIP: needs root");
    false
}

/// Runs `cmd` to its end within [`COMMAND_LIMIT`] (killed after that).
///
/// # Panics
/// When the command cannot start or runs too long.
pub fn run(cmd: &mut Command) -> Output {
    run_within(cmd, COMMAND_LIMIT)
}

/// Runs `cmd` to its end within `limit` (killed after that).
///
/// # Panics
/// When the command cannot start or runs past `limit`.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let start = Instant::now();
    // Output is drained by a thread so a chatty command cannot block on a
    // full pipe while we poll for its end.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting on a child") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Bytes as text, lossily.
pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Runs `cmd` and fails the test unless it succeeds; its stdout.
///
/// # Panics
/// When the command fails, with its output.
pub fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The `knit` binary under test, as a command.
pub fn knit() -> Command {
    Command::new(knit_bin())
}

/// `ip ARGS`, which must succeed; its stdout.
pub fn ip(args: &[&str]) -> String {
    ok(Command::new("ip").args(args))
}

/// The lab's default directory.
pub fn default_dir(name: &str) -> PathBuf {
    Path::new(DEFAULT_ROOT).join(name)
}

/// The last `lines` lines of a file ("" if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let all = fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = all.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// A lab this test made; dropping it runs `knit lab down`.
#[derive(Debug)]
pub struct Lab {
    /// The lab's name (`e<pid>x<n>`, at most 12 bytes).
    pub name: String,
    /// Its underlay, a /24 outside the cluster and service CIDRs.
    pub subnet: String,
}

impl Lab {
    /// A name and a /24 unique to this test process and `n`; give each
    /// test of a binary its own `n` (the lab tests use 1 to 19, the pod
    /// tests 20 and up, so that two binaries whose pids agree modulo 50
    /// still differ in their subnets).
    pub fn new(n: u8) -> Self {
        let pid = std::process::id();
        Lab {
            name: format!("e{}x{n}", pid % 100_000),
            subnet: format!("10.{}.{}.0/24", 200 + pid % 50, 10 + u32::from(n)),
        }
    }

    /// The subnet's address `host` (`.1`, `.2`, ...).
    pub fn addr(&self, host: u8) -> String {
        let net = self.subnet.trim_end_matches("0/24");
        format!("{net}{host}")
    }

    /// `knit lab up` with `nodes` nodes and `extra` flags.
    pub fn up(&self, nodes: usize, extra: &[&str]) -> Output {
        run(knit()
            .args(["lab", "up", "--name", &self.name, "--subnet", &self.subnet])
            .args(["--nodes", &nodes.to_string(), "--timeout", "90"])
            .args(extra))
    }

    /// `knit lab up` that must succeed.
    ///
    /// # Panics
    /// When `up` fails, with its output.
    pub fn up_ok(&self, nodes: usize, extra: &[&str]) {
        let out = self.up(nodes, extra);
        assert!(
            out.status.success(),
            "lab up {} failed:\n{}\n{}",
            self.name,
            text(&out.stderr),
            text(&out.stdout)
        );
    }

    /// `knit lab exec HOST -- CMD`.
    pub fn exec(&self, host: &str, cmd: &[&str]) -> Output {
        run(knit()
            .args(["lab", "exec", "--name", &self.name, host, "--"])
            .args(cmd))
    }

    /// Pings `to` from `host` once.
    ///
    /// # Panics
    /// When the ping fails.
    pub fn ping(&self, from: &str, to: &str) {
        let out = self.exec(from, &["ping", "-c", "1", "-W", "2", to]);
        assert!(
            out.status.success(),
            "lab {}: {from} cannot ping {to}:\n{}{}",
            self.name,
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// `knit lab status -o json`.
    pub fn status(&self) -> Value {
        let out = ok(knit().args(["lab", "status", "--name", &self.name, "-o", "json"]));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status is not JSON ({e}):\n{out}"))
    }

    /// `knit lab down`, which must succeed; its stderr.
    pub fn down(&self) -> String {
        let out = run(knit().args(["lab", "down", "--name", &self.name]));
        assert!(
            out.status.success(),
            "lab down {} failed:\n{}",
            self.name,
            text(&out.stderr)
        );
        text(&out.stderr)
    }

    /// The prefix of all of the lab's namespace names.
    pub fn netns_prefix(&self) -> String {
        format!("knl-{}.", self.name)
    }

    /// The lab's one link in the root namespace.
    pub fn host_link(&self) -> String {
        format!("kl-{}", self.name)
    }

    /// The lab's default directory.
    pub fn dir(&self) -> PathBuf {
        default_dir(&self.name)
    }

    /// The lab's namespaces now on the host.
    pub fn namespaces(&self) -> BTreeSet<String> {
        ip(&["netns", "list"])
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&self.netns_prefix()))
            .map(str::to_owned)
            .collect()
    }

    /// Whether the lab's host link exists.
    pub fn has_host_link(&self) -> bool {
        ip(&["-o", "link", "show"]).lines().any(|l| {
            l.split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next() == Some(&self.host_link()))
                == Some(true)
        })
    }

    /// The lab's state file (`<dir>/lab.json`) in the default directory.
    ///
    /// # Panics
    /// When it cannot be read.
    pub fn state(&self) -> Value {
        let path = self.dir().join("lab.json");
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).expect("lab.json is JSON")
    }

    /// The daemons' pids recorded in the state file in `dir`.
    pub fn recorded_pids(&self, dir: &Path) -> Vec<u32> {
        let state: Value = serde_json::from_str(
            &fs::read_to_string(dir.join("lab.json")).expect("the lab's state file"),
        )
        .expect("lab.json is JSON");
        state["daemons"]
            .as_array()
            .expect("daemons")
            .iter()
            .map(|d| d["pid"].as_u64().expect("a pid") as u32)
            .collect()
    }

    /// Node `i`'s entry (1-based) in the state file's plan: `name`,
    /// `netns`, `sandbox_prefix`, `state_dir`, `log`.
    pub fn node(&self, i: usize) -> Value {
        self.state()["plan"]["nodes"][i - 1].clone()
    }

    /// Node `i`'s name.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-node-{i}", self.name)
    }

    /// Node `i`'s network namespace.
    pub fn node_netns(&self, i: usize) -> String {
        format!("{}n{i}", self.netns_prefix())
    }

    /// The sandbox namespaces of node `i` now on the host.
    pub fn sandboxes(&self, i: usize) -> BTreeSet<String> {
        let prefix = format!("{}.", self.node_netns(i));
        self.namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    /// The pods' veth links in node `i`'s namespace: every veth but the
    /// node's uplink `eth0` (names without `@peer`).
    pub fn veths(&self, i: usize) -> BTreeSet<String> {
        ip(&[
            "-n",
            &self.node_netns(i),
            "-o",
            "link",
            "show",
            "type",
            "veth",
        ])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .filter(|n| n != "eth0")
        .collect()
    }

    /// The pids inside the named namespace `netns`.
    pub fn pids_in(&self, netns: &str) -> BTreeSet<u32> {
        ip(&["netns", "pids", netns])
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The real kubectl against this lab, or `None` (after a SKIP line)
    /// when `$KNIT_KUBECTL` is unset outside CI.
    pub fn kubectl(&self) -> Option<LabKubectl> {
        let bin = kubectl_bin()?;
        Some(LabKubectl {
            bin,
            kubeconfig: self.dir().join("kubeconfig"),
            home: tempfile::tempdir().expect("a temporary HOME for kubectl"),
        })
    }

    /// What a failure message needs: the pods (`kubectl get pods -o wide`,
    /// through the lab's `knit` when kubectl is not at hand) and the last
    /// lines of every agent's log.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        let kubeconfig = self.dir().join("kubeconfig");
        let pods = match kubectl_path() {
            Some(bin) => run_within(
                Command::new(bin)
                    .args(["get", "pods", "-o", "wide"])
                    .env("KUBECONFIG", &kubeconfig),
                Duration::from_secs(20),
            ),
            None => run_within(
                knit()
                    .args(["get", "pods", "-o", "wide"])
                    .env("KUBECONFIG", &kubeconfig),
                Duration::from_secs(20),
            ),
        };
        out.push_str("--- kubectl get pods -o wide\n");
        out.push_str(&text(&pods.stdout));
        out.push_str(&text(&pods.stderr));
        let nodes = self.state()["plan"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for node in nodes {
            let log = PathBuf::from(node["log"].as_str().unwrap_or_default());
            out.push_str(&format!("--- {} (last 30 lines)\n", log.display()));
            out.push_str(&tail(&log, 30));
            out.push('\n');
        }
        out
    }

    /// Polls `check` every 200 ms until it gives a value or `limit`
    /// passes; then fails with `what`, the last thing `check` said and
    /// [`Lab::diagnostics`].
    ///
    /// # Panics
    /// When `limit` passes first.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            match check() {
                Ok(value) => return value,
                Err(last) if start.elapsed() > limit => panic!(
                    "lab {}: {what}: not after {limit:?}; last: {last}\n{}",
                    self.name,
                    self.diagnostics()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The pid of node `i`'s running agent, found by its command line
    /// (`knit agent ... --node-name <node>`) and the lab's `KNIT_LAB`
    /// marker, so it is found again after a restart.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        let node = self.node_name(i);
        let marker = format!("KNIT_LAB={}", self.name);
        let entries = fs::read_dir("/proc").ok()?;
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| alive(pid))
            .find(|&pid| {
                let args = cmdline(pid);
                let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                args.get(1).map(String::as_str) == Some("agent")
                    && args
                        .windows(2)
                        .any(|w| w[0] == "--node-name" && w[1] == node)
                    && env.split(|&b| b == 0).any(|v| v == marker.as_bytes())
            })
    }

    /// Kills node `i`'s agent with SIGKILL and waits until it is gone;
    /// returns its command line, for [`Lab::start_agent`].
    ///
    /// # Panics
    /// When there is no agent or it does not die within 5 s.
    pub fn kill_agent(&self, i: usize) -> Vec<String> {
        let pid = self
            .agent_pid(i)
            .unwrap_or_else(|| panic!("no agent of node {i} in lab {}", self.name));
        let args = cmdline(pid);
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL to the agent");
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(Instant::now() < deadline, "agent {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        args
    }

    /// Starts node `i`'s agent again with the command line `args` the way
    /// `knit lab up` starts it: in a session of its own, output appended
    /// to the node's log, marked with `KNIT_LAB` so `down` finds it.
    /// Returns the new pid.
    pub fn start_agent(&self, i: usize, args: &[String]) -> u32 {
        let log = PathBuf::from(
            self.node(i)["log"]
                .as_str()
                .expect("the node's log in lab.json"),
        );
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let err = file.try_clone().expect("cloning the log file");
        let child = Command::new("setsid")
            .args(args)
            .env("KNIT_LAB", &self.name)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("restarting the agent");
        let pid = child.id();
        // The agent is this process's child now: reap it when it ends
        // (`knit lab down` stops it), so it leaves no zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        pid
    }

    /// Asserts that nothing of the lab is left on the host: namespaces,
    /// the host link, any of `pids`, the directory `dir`, the pointer.
    ///
    /// # Panics
    /// When something is left.
    pub fn assert_gone(&self, dir: &Path, pids: &[u32]) {
        assert_eq!(self.namespaces(), BTreeSet::new(), "namespaces left");
        assert!(!self.has_host_link(), "link {} left", self.host_link());
        for &pid in pids {
            assert!(
                !alive(pid),
                "process {pid} of lab {} still running",
                self.name
            );
        }
        assert!(!dir.exists(), "{} left", dir.display());
        assert!(
            !Path::new("/run/knit-lab").join(&self.name).exists(),
            "pointer file left"
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = run(knit().args(["lab", "down", "--name", &self.name]));
    }
}

/// The NUL-separated command line of `pid`.
fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn kubectl_path() -> Option<PathBuf> {
    std::env::var_os("KNIT_KUBECTL")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

/// The real kubectl pointed at a lab's kubeconfig, with its own `HOME`.
#[derive(Debug)]
pub struct LabKubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

/// kubectl's time limit per run.
pub const KUBECTL_LIMIT: Duration = Duration::from_secs(30);

impl LabKubectl {
    /// A kubectl command with the lab's kubeconfig and its own `HOME`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Runs kubectl within [`KUBECTL_LIMIT`].
    pub fn run(&self, args: &[&str]) -> Output {
        run_within(&mut self.command(args), KUBECTL_LIMIT)
    }

    /// Runs kubectl, which must succeed; its stdout.
    ///
    /// # Panics
    /// When kubectl fails, with its output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `kubectl apply -f -` of `manifest`.
    ///
    /// # Panics
    /// When kubectl fails.
    pub fn apply(&self, manifest: &str) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = self.home.path().join(format!("manifest-{n}.yaml"));
        fs::write(&path, manifest).expect("writing a manifest");
        let path = path.to_string_lossy().into_owned();
        self.ok(&["apply", "-f", &path])
    }

    /// `kubectl get KIND NAME -o json`, parsed; `Err` with kubectl's
    /// message when it fails.
    pub fn get_json(&self, kind: &str, name: &str) -> Result<Value, String> {
        let out = self.run(&["get", kind, name, "-o", "json"]);
        if !out.status.success() {
            return Err(text(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))
    }

    /// The pods, `kubectl get pods -o json`'s items.
    pub fn pods(&self) -> Result<Vec<Value>, String> {
        let out = self.run(&["get", "pods", "-o", "json"]);
        if !out.status.success() {
            return Err(text(&out.stderr));
        }
        let list: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }
}

/// A lab numbered `n` with `nodes` nodes and agents up, and kubectl for
/// it; `None` when the test must skip (not root, or no kubectl outside CI).
///
/// # Panics
/// When the lab does not come up.
pub fn lab_with_kubectl(n: u8, nodes: usize) -> Option<(Lab, LabKubectl)> {
    if !root_or_skip() {
        return None;
    }
    let lab = Lab::new(n);
    let kubectl = lab.kubectl()?;
    lab.up_ok(nodes, &[]);
    Some((lab, kubectl))
}

/// A manifest written for the default lab (`knit-node-<i>`), for `lab`.
pub fn for_lab(manifest: &str, lab: &Lab) -> String {
    manifest.replace("knit-node-", &format!("{}-node-", lab.name))
}

/// `v` as a string.
///
/// # Panics
/// When it is not one, naming `what`.
pub fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

/// Whether `pod` has condition `kind` with status `True`.
pub fn condition_true(pod: &Value, kind: &str) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

/// A pod's name.
pub fn pod_name(pod: &Value) -> &str {
    pod["metadata"]["name"].as_str().unwrap_or_default()
}

//! The process runtime: [`ProcessRuntime`] runs each container of a pod as
//! a process in the pod's sandbox and implements
//! [`Containers`] for the agent's loop.
//!
//! knit runs no images: a container's `image` is recorded in its status
//! and never pulled; its `command` + `args` (with Kubernetes' `$(VAR)`
//! expansion, see [`spec`]) run on the node's own filesystem. Each process
//! gets the pod's network namespace, a UTS namespace whose hostname is the
//! pod's name (`hostNetwork` pods keep the node's), and a mount namespace
//! where `/etc/hosts` and `/etc/resolv.conf` are the pod's own files; the
//! containers of a pod share a working directory (`workingDir` when the
//! spec names an existing one). How a process is started without
//! `unsafe` is in [`process`].
//!
//! # State on disk
//!
//! Everything lives under the state directory, one directory per pod uid:
//!
//! ```text
//! <state>/pods/<uid>/state.json           the pod, its sandbox, every container's runs
//! <state>/pods/<uid>/hosts, resolv.conf   bind-mounted into the containers
//! <state>/pods/<uid>/work/                the shared working directory
//! <state>/pods/<uid>/logs/<container>/<n>.{stdout,stderr,log,pos,exit}
//! ```
//!
//! `n` is the container's run (0 for the first, then `restartCount`); the
//! current and the previous run are kept. `<n>.log` is the CRI-format log
//! described in [`logs`]; `<n>.exit` holds the run's exit status. Container
//! processes live in process groups of their own and write to files, not
//! pipes, so they outlive the agent; a new `ProcessRuntime` on the same
//! directory re-adopts them by pid and start time and notices their end by
//! polling `/proc`.
//!
//! # Semantics
//!
//! Containers are `waiting` (`ContainerCreating`, `CrashLoopBackOff`,
//! `RunContainerError`, `CreateContainerConfigError`), `running` or
//! `terminated` (`Completed` for exit 0, else `Error`; `128+n` for a
//! signal), with `lastState` and `restartCount`. Restarts follow the pod's
//! `restartPolicy` with kubelet's back-off ([`spec::Backoff`]); the phase
//! follows [`spec::phase`]. Probes ([`crate::probe`]) run on their own
//! threads: startup gates the others, readiness sets `ready`, a failed
//! liveness or startup probe stops the container (SIGTERM to its group,
//! SIGKILL after the grace period) and the restart policy takes over.
//!
//! # Events
//!
//! The runtime writes nothing to the API. What kubelet would report as
//! events — `Unhealthy` for every failed probe check (`Readiness probe
//! failed: HTTP probe failed with statuscode: 503`), `Killing` when a probe
//! stops a container, `BackOff` when a restart waits, `Started`, and
//! `Failed` when a process cannot start — is queued per pod (the last
//! [`MAX_EVENTS`]) and handed out by [`ProcessRuntime::take_events`]; each
//! new event moves the [`changes`](crate::containers::Containers::changes)
//! counter.
//!
//! # Locking
//!
//! Launching a process takes tens of milliseconds (a thread, namespaces,
//! bind mounts, a spawn) and saving a pod's state an fsync, so pods must
//! not wait for each other's. The runtime-wide map of pods is held only to
//! find, add or remove a pod's slot, never while waiting for a pod.
//! Each pod has a lock of its own, held by whoever works on it (a sync, a
//! supervisor tick, a kill): a pod's containers are never launched twice,
//! and different pods start in parallel. What readers need often — the
//! status and the queued events — is published into a second, briefly
//! held lock at the end of each piece of work, so `status()` never waits
//! for a launch.

pub mod logs;
pub mod process;
pub mod spec;

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::containers::{Containers, PodContainers, RuntimeError, RuntimeEvent, SandboxRef};
use crate::probe::{self, Kind, ProbeConfig, ProbeState};
use logs::RunLogs;
use spec::Backoff;

/// How many events a pod keeps until they are taken.
pub const MAX_EVENTS: usize = 64;

/// How the runtime is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where pods' state, working directories and logs live.
    pub state_dir: PathBuf,
    /// The restart back-off (kubelet's by default).
    pub backoff: Backoff,
    /// How often processes, probes and logs are looked at.
    pub tick: Duration,
}

impl Options {
    /// kubelet's defaults, state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Options {
            state_dir: state_dir.into(),
            backoff: Backoff::default(),
            tick: Duration::from_millis(100),
        }
    }
}

/// The process runtime. Cloning shares it; dropping the last clone stops
/// its supervision but leaves the containers running.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("state_dir", &self.inner.options.state_dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    options: Options,
    /// Every pod by uid. Held only to look up, add or remove a slot: never
    /// while locking a pod's entry, so no pod's work holds up another's.
    pods: Mutex<HashMap<String, Arc<Slot>>>,
    changes: tokio::sync::watch::Sender<u64>,
}

/// One pod of the runtime.
struct Slot {
    /// Its namespace and name, which never change for a uid: found
    /// without waiting for the entry.
    namespace: Option<String>,
    name: Option<String>,
    /// Locked by whatever works on the pod, for as long as that takes
    /// (launches included): one sync or tick of a pod at a time.
    entry: Mutex<PodEntry>,
    /// What the pod showed at the end of the last work on it.
    shown: Mutex<Shown>,
}

/// A pod's status and its events not yet taken, as last published.
struct Shown {
    status: PodContainers,
    events: VecDeque<RuntimeEvent>,
}

/// Locks `mutex`, taking over the data of a thread that panicked with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    fn new(entry: PodEntry) -> Self {
        let meta = &entry.record.pod.metadata;
        Slot {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            shown: Mutex::new(Shown {
                status: entry.status(),
                events: VecDeque::new(),
            }),
            entry: Mutex::new(entry),
        }
    }

    /// The entry unless someone is working on it.
    fn try_entry(&self) -> Option<MutexGuard<'_, PodEntry>> {
        match self.entry.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Makes the entry's status and new events visible to readers. Called
    /// with the entry locked, so publications follow the work's order.
    fn publish(&self, entry: &mut PodEntry) {
        let status = entry.status();
        let mut shown = lock(&self.shown);
        shown.status = status;
        shown.events.extend(entry.events.drain(..));
        let excess = shown.events.len().saturating_sub(MAX_EVENTS);
        shown.events.drain(..excess);
    }
}

/// What is kept on disk about a pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PodRecord {
    pod: Pod,
    sandbox: SandboxRecord,
    containers: Vec<ContainerRecord>,
    terminating: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SandboxRecord {
    netns_path: Option<PathBuf>,
    pod_ip: IpAddr,
    resolv_conf: String,
    hosts: String,
}

impl From<&SandboxRef> for SandboxRecord {
    fn from(s: &SandboxRef) -> Self {
        SandboxRecord {
            netns_path: s.netns_path.clone(),
            pod_ip: s.pod_ip,
            resolv_conf: s.resolv_conf.clone(),
            hosts: s.hosts.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ContainerRecord {
    name: String,
    /// Successful starts so far; `restartCount` is one less.
    runs: i32,
    /// The current run: running, or terminated for good.
    run: Option<Run>,
    /// The end of the previous run (`lastState`).
    last: Option<Exit>,
    /// Why the container is not running, and when to try again.
    waiting: Option<Waiting>,
    backoff_ms: u64,
    ready: bool,
    started: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Run {
    attempt: i32,
    pid: i32,
    start_ticks: u64,
    started_ms: i64,
    exit: Option<Exit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Exit {
    attempt: i32,
    code: i32,
    reason: String,
    started_ms: i64,
    finished_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Waiting {
    reason: String,
    message: Option<String>,
    /// Try again at this time (unix ms); `None`: do not.
    retry_ms: Option<i64>,
}

/// A probe and the check of it in flight, if any.
type Prober = (ProbeState, Option<Receiver<Result<(), String>>>);

/// What is known about a container's current run only while we run.
#[derive(Default)]
struct Live {
    child: Option<Child>,
    probes: Vec<Prober>,
    env: Vec<(String, String)>,
    kill_at: Option<Instant>,
}

struct PodEntry {
    dir: PathBuf,
    record: PodRecord,
    live: Vec<Live>,
    /// Events since the last [`Slot::publish`].
    events: VecDeque<RuntimeEvent>,
    /// Whether the pod's directory and state exist yet.
    on_disk: bool,
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

fn time(ms: i64) -> Option<Time> {
    Timestamp::from_millisecond(ms).ok().map(Time)
}

fn err(context: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError(format!("{context}: {e}"))
}

impl ProcessRuntime {
    /// A runtime over `options.state_dir`, re-adopting the containers a
    /// previous runtime left there, with a supervisor thread that watches
    /// processes, runs probes and copies logs every `options.tick`.
    ///
    /// # Errors
    /// When the state directory cannot be created or read.
    pub fn new(options: Options) -> Result<Self, RuntimeError> {
        let pods_dir = options.state_dir.join("pods");
        fs::create_dir_all(&pods_dir).map_err(|e| err("create the state directory", e))?;
        let mut pods = HashMap::new();
        for entry in fs::read_dir(&pods_dir).map_err(|e| err("read the state directory", e))? {
            let Ok(entry) = entry else { continue };
            let dir = entry.path();
            let Some(uid) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match load(&dir) {
                Some(record) => {
                    pods.insert(uid, Arc::new(Slot::new(PodEntry::adopt(dir, record))));
                }
                None => {
                    // A pod whose state never got written: nothing runs
                    // under it that we could know of.
                    tracing::warn!(dir = %dir.display(), "removing a pod directory without state");
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
        let (changes, _) = tokio::sync::watch::channel(0);
        let inner = Arc::new(Inner {
            options,
            pods: Mutex::new(pods),
            changes,
        });
        let weak = Arc::downgrade(&inner);
        let tick = inner.options.tick;
        std::thread::Builder::new()
            .name("knit-runtime".into())
            .spawn(move || supervise(weak, tick))
            .map_err(|e| err("start the supervisor thread", e))?;
        Ok(ProcessRuntime { inner })
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.options.state_dir
    }
}

fn load(dir: &Path) -> Option<PodRecord> {
    let text = fs::read(dir.join("state.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

fn supervise(inner: Weak<Inner>, tick: Duration) {
    loop {
        std::thread::sleep(tick);
        let Some(inner) = inner.upgrade() else { return };
        let mut changed = false;
        for slot in inner.slots() {
            // A pod someone works on (a sync, a kill) is looked at by them;
            // waiting here would only hold up every other pod.
            let Some(mut entry) = slot.try_entry() else {
                continue;
            };
            if entry.tick(&inner.options) {
                slot.publish(&mut entry);
                changed = true;
            }
        }
        if changed {
            inner.bump();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        lock(&self.pods)
    }

    fn slot(&self, uid: &str) -> Option<Arc<Slot>> {
        self.lock().get(uid).cloned()
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        self.lock().values().cloned().collect()
    }

    /// The pod's slot, added (with nothing on disk yet) if it is new.
    fn slot_or_insert(&self, uid: &str, pod: &Pod, sandbox: &SandboxRef) -> Arc<Slot> {
        self.lock()
            .entry(uid.to_string())
            .or_insert_with(|| {
                let dir = self.options.state_dir.join("pods").join(uid);
                Arc::new(Slot::new(PodEntry::new(dir, pod, sandbox)))
            })
            .clone()
    }

    /// Forgets the pod unless a later one took its uid's place.
    fn remove(&self, uid: &str, slot: &Arc<Slot>) {
        let mut pods = self.lock();
        if pods.get(uid).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            pods.remove(uid);
        }
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn sync_blocking(&self, pod: &Pod, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        let uid = pod
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| RuntimeError("the pod has no uid".into()))?;
        let slot = self.slot_or_insert(&uid, pod, sandbox);
        // Held across the launches: a concurrent sync or tick of this pod
        // waits (or skips) instead of starting the same containers again.
        let mut entry = lock(&slot.entry);
        if entry.record.terminating {
            return Ok(());
        }
        if !entry.on_disk {
            entry.create_files()?;
        }
        entry.record.pod = pod.clone();
        let sandbox = SandboxRecord::from(sandbox);
        if entry.record.sandbox != sandbox {
            entry.record.sandbox = sandbox;
            entry.write_files()?;
        }
        let changed = entry.tick(&self.options);
        entry.persist();
        slot.publish(&mut entry);
        drop(entry);
        if changed {
            self.bump();
        }
        Ok(())
    }
}

impl PodEntry {
    /// A pod seen for the first time; its files come with
    /// [`create_files`](Self::create_files), under the pod's lock.
    fn new(dir: PathBuf, pod: &Pod, sandbox: &SandboxRef) -> Self {
        let containers: Vec<ContainerRecord> = containers_of(pod)
            .iter()
            .map(|c| ContainerRecord {
                name: c.name.clone(),
                waiting: Some(Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                    retry_ms: Some(0),
                }),
                ..Default::default()
            })
            .collect();
        PodEntry {
            live: containers.iter().map(|_| Live::default()).collect(),
            record: PodRecord {
                pod: pod.clone(),
                sandbox: sandbox.into(),
                containers,
                terminating: false,
            },
            dir,
            events: VecDeque::new(),
            on_disk: false,
        }
    }

    /// The pod's directories, `/etc` files and first state. Until they
    /// exist nothing is started; a failure is retried by the next sync.
    fn create_files(&mut self) -> Result<(), RuntimeError> {
        fs::create_dir_all(self.dir.join("work"))
            .map_err(|e| err("create the pod directory", e))?;
        for c in &self.record.containers {
            fs::create_dir_all(self.dir.join("logs").join(&c.name))
                .map_err(|e| err("create the log directory", e))?;
        }
        self.write_files()?;
        self.persist();
        self.on_disk = true;
        Ok(())
    }

    /// A pod found on disk: its running containers are taken over as they
    /// are, probes resume with the verdicts last recorded.
    fn adopt(dir: PathBuf, record: PodRecord) -> Self {
        let specs = containers_of(&record.pod);
        let live = record
            .containers
            .iter()
            .map(|c| {
                let mut live = Live::default();
                if let (Some(run), Some(spec)) = (&c.run, specs.iter().find(|s| s.name == c.name))
                    && run.exit.is_none()
                {
                    let ran = Duration::from_millis((now_ms() - run.started_ms).max(0) as u64);
                    let since = Instant::now().checked_sub(ran).unwrap_or_else(Instant::now);
                    live.probes = probes_of(spec, since, Some((c.started, c.ready)));
                    live.env =
                        spec::environment(&record.pod, spec, &record.sandbox.pod_ip.to_string());
                }
                live
            })
            .collect();
        PodEntry {
            dir,
            record,
            live,
            events: VecDeque::new(),
            on_disk: true,
        }
    }

    fn write_files(&self) -> Result<(), RuntimeError> {
        // In place, not by rename: the files are bind-mounted into running
        // containers, which would keep seeing a replaced file's old inode.
        for (name, text) in [
            ("hosts", &self.record.sandbox.hosts),
            ("resolv.conf", &self.record.sandbox.resolv_conf),
        ] {
            fs::write(self.dir.join(name), text)
                .map_err(|e| err("write the pod's /etc files", e))?;
        }
        Ok(())
    }

    fn persist(&self) {
        let write = || -> io::Result<()> {
            let tmp = self.dir.join("state.json.tmp");
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(&self.record)?)?;
            file.sync_data()?;
            fs::rename(&tmp, self.dir.join("state.json"))
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot save the pod's state");
        }
    }

    fn event(&mut self, container: &str, warning: bool, reason: &'static str, message: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(RuntimeEvent {
            container: container.to_string(),
            type_: if warning { "Warning" } else { "Normal" },
            reason,
            message,
            at: Timestamp::now(),
        });
    }

    fn logs(&self, container: &str, attempt: i32) -> RunLogs {
        RunLogs::new(&self.dir.join("logs").join(container), attempt)
    }

    fn pod_ref(&self) -> String {
        let meta = &self.record.pod.metadata;
        format!(
            "{}_{}({})",
            meta.name.as_deref().unwrap_or_default(),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default()
        )
    }

    /// One look at every container: exits, restarts, probes, logs.
    /// Returns whether anything the status shows changed.
    fn tick(&mut self, options: &Options) -> bool {
        if self.record.terminating || !self.on_disk {
            return false;
        }
        let before = self.record.containers.clone();
        let events = self.events.len();
        for i in 0..self.record.containers.len() {
            self.tick_container(i, options);
        }
        let changed = self.record.containers != before || self.events.len() != events;
        if self.record.containers != before {
            self.persist();
        }
        changed
    }

    fn tick_container(&mut self, i: usize, options: &Options) {
        let name = self.record.containers[i].name.clone();
        if let Some(run) = self.record.containers[i].run.clone()
            && run.exit.is_none()
        {
            let logs = self.logs(&name, run.attempt);
            if let Some(code) = self.exited(i, &run, &logs) {
                let _ = logs.pump(true);
                self.finish(i, run, code, options);
            } else {
                let _ = logs.pump(false);
                self.tick_probes(i, run.pid);
                return;
            }
        }
        let record = &self.record.containers[i];
        if record.run.is_none()
            && let Some(retry) = record.waiting.as_ref().and_then(|w| w.retry_ms)
            && retry <= now_ms()
        {
            self.start(i, options);
        }
    }

    /// The exit code of the current run if it has ended.
    fn exited(&mut self, i: usize, run: &Run, logs: &RunLogs) -> Option<i32> {
        let exit_file = logs.log.with_extension("exit");
        let live = &mut self.live[i];
        if let Some(child) = &mut live.child {
            return match child.try_wait() {
                Ok(Some(status)) => {
                    live.child = None;
                    Some(process::read_exit_file(&exit_file).unwrap_or(process::exit_code(status)))
                }
                Ok(None) => None,
                Err(_) => {
                    live.child = None;
                    None
                }
            };
        }
        if process::alive(run.pid, run.start_ticks) {
            return None;
        }
        // Not our child (re-adopted): the supervisor's exit file says how
        // it ended; without one it was killed outright.
        Some(process::read_exit_file(&exit_file).unwrap_or(128 + Signal::SIGKILL as i32))
    }

    /// Records the end of a run and decides about the restart.
    fn finish(&mut self, i: usize, run: Run, code: i32, options: &Options) {
        let finished_ms = now_ms();
        let exit = Exit {
            attempt: run.attempt,
            code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started_ms: run.started_ms,
            finished_ms,
        };
        self.live[i] = Live::default();
        let policy = spec::restart_policy(&self.record.pod).to_string();
        let pod_ref = self.pod_ref();
        let c = &mut self.record.containers[i];
        c.ready = false;
        c.started = false;
        if !spec::restarts(&policy, code) {
            c.run = Some(Run {
                exit: Some(exit),
                ..run
            });
            c.waiting = None;
            return;
        }
        let ran = Duration::from_millis((finished_ms - run.started_ms).max(0) as u64);
        let (wait, next) = options
            .backoff
            .next(Duration::from_millis(c.backoff_ms), ran);
        c.backoff_ms = next.as_millis() as u64;
        c.run = None;
        c.last = Some(exit);
        let name = c.name.clone();
        if wait.is_zero() {
            c.waiting = Some(Waiting {
                reason: "ContainerCreating".into(),
                message: None,
                retry_ms: Some(finished_ms),
            });
            self.start(i, options);
        } else {
            let message = format!(
                "back-off {} restarting failed container={name} pod={pod_ref}",
                human(wait)
            );
            c.waiting = Some(Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(message),
                retry_ms: Some(finished_ms + wait.as_millis() as i64),
            });
            self.event(
                &name,
                true,
                "BackOff",
                format!("Back-off restarting failed container {name} in pod {pod_ref}"),
            );
        }
    }

    /// Starts the container's next run.
    fn start(&mut self, i: usize, options: &Options) {
        let name = self.record.containers[i].name.clone();
        let specs = containers_of(&self.record.pod);
        let Some(container) = specs.iter().find(|c| c.name == name) else {
            return;
        };
        let pod_ip = self.record.sandbox.pod_ip.to_string();
        let env = spec::environment(&self.record.pod, container, &pod_ip);
        let argv = spec::argv(container, &env);
        if argv.is_empty() {
            self.record.containers[i].waiting = Some(Waiting {
                reason: "CreateContainerConfigError".into(),
                message: Some(format!(
                    "knit runs processes, not images: container {name} needs a command"
                )),
                retry_ms: None,
            });
            return;
        }
        let attempt = self.record.containers[i].runs;
        let logs = self.logs(&name, attempt);
        logs.remove();
        let exit_file = logs.log.with_extension("exit");
        let _ = fs::remove_file(&exit_file);
        let host_network = self
            .record
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let cwd = container
            .working_dir
            .as_ref()
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(|| self.dir.join("work"));
        let launch = process::Launch {
            argv,
            env: env.clone(),
            cwd,
            hostname: (!host_network).then(|| spec::hostname(&self.record.pod)),
            netns: self.record.sandbox.netns_path.clone(),
            resolv_conf: self.dir.join("resolv.conf"),
            hosts: self.dir.join("hosts"),
            stdout: logs.stdout.clone(),
            stderr: logs.stderr.clone(),
            exit_file,
        };
        match process::launch(launch) {
            Ok((child, start_ticks)) => {
                let started_ms = now_ms();
                let pid = child.id() as i32;
                self.live[i] = Live {
                    child: Some(child),
                    probes: probes_of(container, Instant::now(), None),
                    env,
                    kill_at: None,
                };
                let c = &mut self.record.containers[i];
                c.runs += 1;
                c.run = Some(Run {
                    attempt,
                    pid,
                    start_ticks,
                    started_ms,
                    exit: None,
                });
                c.waiting = None;
                let (started, ready) = self.live[i].verdicts();
                c.started = started;
                c.ready = ready;
                // Keep the current and the previous run's logs only.
                if attempt >= 2 {
                    self.logs(&name, attempt - 2).remove();
                    let _ =
                        fs::remove_file(self.logs(&name, attempt - 2).log.with_extension("exit"));
                }
                self.event(&name, false, "Started", format!("Started container {name}"));
            }
            Err(e) => {
                let c = &mut self.record.containers[i];
                let wait = Duration::from_millis(c.backoff_ms)
                    .max(options.backoff.initial.min(Duration::from_secs(1)));
                c.waiting = Some(Waiting {
                    reason: "RunContainerError".into(),
                    message: Some(e.to_string()),
                    retry_ms: Some(now_ms() + wait.as_millis() as i64),
                });
                self.event(&name, true, "Failed", format!("Error: {e}"));
            }
        }
    }

    fn tick_probes(&mut self, i: usize, pid: i32) {
        let now = Instant::now();
        let grace = self.grace();
        let name = self.record.containers[i].name.clone();
        let live = &mut self.live[i];
        if let Some(at) = live.kill_at {
            if now >= at {
                process::signal_group(pid, Signal::SIGKILL);
            }
            return;
        }
        let specs = containers_of(&self.record.pod);
        let ports: Vec<(String, u16)> = specs
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.ports.as_ref())
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut failures = Vec::new();
        let mut kill: Option<(Kind, Option<Duration>)> = None;
        let startup_pending = live
            .probes
            .iter()
            .any(|(p, _)| p.config.kind == Kind::Startup && !p.verdict());
        for (state, in_flight) in &mut live.probes {
            if let Some(rx) = in_flight {
                let result = match rx.try_recv() {
                    Ok(result) => result,
                    Err(TryRecvError::Empty) => continue,
                    Err(TryRecvError::Disconnected) => Err("the probe stopped".into()),
                };
                *in_flight = None;
                if let Err(message) = &result {
                    failures.push((state.config.kind, message.clone()));
                }
                if state.record(result.is_ok()) == Some(false)
                    && matches!(state.config.kind, Kind::Liveness | Kind::Startup)
                {
                    kill = Some((state.config.kind, state.config.termination_grace));
                }
            }
            let gated = startup_pending && state.config.kind != Kind::Startup;
            if in_flight.is_none() && !gated && state.due(now) {
                state.started_check(now);
                let (tx, rx) = mpsc::channel();
                let action = state.config.action.clone();
                let timeout = state.config.timeout;
                let target = probe::Target {
                    netns: self.record.sandbox.netns_path.clone(),
                    pod_ip: self.record.sandbox.pod_ip,
                    pid,
                    env: live.env.clone(),
                    cwd: self.dir.join("work"),
                    ports: ports.clone(),
                };
                let spawned =
                    std::thread::Builder::new()
                        .name("knit-probe".into())
                        .spawn(move || {
                            let _ = tx.send(probe::run(&action, &target, timeout));
                        });
                if spawned.is_ok() {
                    *in_flight = Some(rx);
                }
            }
        }
        let (started, ready) = live.verdicts();
        if let Some((kind, probe_grace)) = kill {
            live.kill_at = Some(now + probe_grace.unwrap_or(grace));
            process::signal_group(pid, Signal::SIGTERM);
            let which = if kind == Kind::Startup {
                "startup"
            } else {
                "liveness"
            };
            self.event(
                &name,
                false,
                "Killing",
                format!("Container {name} failed {which} probe, will be restarted"),
            );
        }
        for (kind, message) in failures {
            self.event(
                &name,
                true,
                "Unhealthy",
                format!("{} probe failed: {message}", kind.title()),
            );
        }
        let c = &mut self.record.containers[i];
        c.started = started;
        c.ready = ready && kill.is_none();
    }

    /// The pod's `terminationGracePeriodSeconds` (30 by default).
    fn grace(&self) -> Duration {
        let secs = self
            .record
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    fn status(&self) -> PodContainers {
        let specs = containers_of(&self.record.pod);
        let uid = self.record.pod.metadata.uid.clone().unwrap_or_default();
        let statuses: Vec<ContainerStatus> = self
            .record
            .containers
            .iter()
            .map(|c| {
                let image = specs
                    .iter()
                    .find(|s| s.name == c.name)
                    .and_then(|s| s.image.clone())
                    .unwrap_or_default();
                let id = |attempt: i32| format!("knit://{uid}/{}/{attempt}", c.name);
                let terminated = |exit: &Exit| ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: exit.code,
                        reason: Some(exit.reason.clone()),
                        started_at: time(exit.started_ms),
                        finished_at: time(exit.finished_ms),
                        container_id: Some(id(exit.attempt)),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let state = match (&c.run, &c.waiting) {
                    (Some(run), _) => match &run.exit {
                        Some(exit) => terminated(exit),
                        None => ContainerState {
                            running: Some(ContainerStateRunning {
                                started_at: time(run.started_ms),
                            }),
                            ..Default::default()
                        },
                    },
                    (None, waiting) => ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(
                                waiting
                                    .as_ref()
                                    .map_or("ContainerCreating".into(), |w| w.reason.clone()),
                            ),
                            message: waiting.as_ref().and_then(|w| w.message.clone()),
                        }),
                        ..Default::default()
                    },
                };
                ContainerStatus {
                    name: c.name.clone(),
                    image,
                    image_id: String::new(),
                    container_id: c.run.as_ref().map(|r| id(r.attempt)),
                    ready: c.ready,
                    started: Some(c.started),
                    restart_count: (c.runs - 1).max(0),
                    state: Some(state),
                    last_state: c.last.as_ref().map(terminated),
                    ..Default::default()
                }
            })
            .collect();
        let phase = spec::phase(&statuses, spec::restart_policy(&self.record.pod)).to_string();
        let ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
        PodContainers {
            statuses,
            phase,
            ready,
        }
    }

    /// The latest run of a container that has a log.
    fn latest_attempt(&self, container: &str) -> Option<i32> {
        let c = self
            .record
            .containers
            .iter()
            .find(|c| c.name == container)?;
        c.run
            .as_ref()
            .map(|r| r.attempt)
            .or(c.last.as_ref().map(|e| e.attempt))
    }
}

impl Live {
    /// (started, ready) by the probes of a running container.
    fn verdicts(&self) -> (bool, bool) {
        let verdict = |kind| {
            self.probes
                .iter()
                .find(|(p, _)| p.config.kind == kind)
                .map(|(p, _)| p.verdict())
        };
        let started = verdict(Kind::Startup).unwrap_or(true);
        let ready = started && verdict(Kind::Readiness).unwrap_or(true);
        (started, ready)
    }
}

fn containers_of(pod: &Pod) -> Vec<Container> {
    pod.spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
}

/// The probes of a run that started at `since`; `resumed` carries the
/// (started, ready) verdicts of a re-adopted run.
fn probes_of(container: &Container, since: Instant, resumed: Option<(bool, bool)>) -> Vec<Prober> {
    [
        (Kind::Startup, &container.startup_probe),
        (Kind::Liveness, &container.liveness_probe),
        (Kind::Readiness, &container.readiness_probe),
    ]
    .into_iter()
    .filter_map(|(kind, probe)| {
        let state = ProbeState::new(ProbeConfig::from_spec(kind, probe.as_ref()?), since);
        let state = match (kind, resumed) {
            (Kind::Startup, Some((started, _))) => state.with_verdict(started),
            (Kind::Readiness, Some((_, ready))) => state.with_verdict(ready),
            _ => state,
        };
        Some((state, None))
    })
    .collect()
}

/// A back-off as kubelet prints it: `10s`, `1m20s`, `5m0s`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else if secs > 0 {
        format!("{secs}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Containers for ProcessRuntime {
    async fn sync(&self, pod: &Pod, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        let inner = self.inner.clone();
        let (pod, sandbox) = (pod.clone(), sandbox.clone());
        tokio::task::spawn_blocking(move || inner.sync_blocking(&pod, &sandbox))
            .await
            .map_err(|e| err("sync", e))?
    }

    fn status(&self, pod_uid: &str) -> Option<PodContainers> {
        let slot = self.inner.slot(pod_uid)?;
        let status = lock(&slot.shown).status.clone();
        Some(status)
    }

    fn take_events(&self, pod_uid: &str) -> Vec<RuntimeEvent> {
        let Some(slot) = self.inner.slot(pod_uid) else {
            return Vec::new();
        };
        lock(&slot.shown).events.drain(..).collect()
    }

    async fn kill(&self, pod_uid: &str, grace: Duration) -> Result<(), RuntimeError> {
        let Some(slot) = self.inner.slot(pod_uid) else {
            return Ok(());
        };
        // Waits for a launch in progress (whose process is then stopped
        // too) and saves the state: blocking work, off the async threads.
        let terminating = slot.clone();
        let groups = tokio::task::spawn_blocking(move || lock(&terminating.entry).terminate())
            .await
            .map_err(|e| err("kill", e))?;
        let deadline = Instant::now() + grace;
        let mut killed = groups.is_empty();
        let give_up = deadline + Duration::from_secs(10);
        loop {
            let running = lock(&slot.entry).running_groups();
            if running.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= give_up {
                return Err(RuntimeError(format!(
                    "pod {pod_uid}: processes {running:?} survived SIGKILL"
                )));
            }
            if now >= deadline && !killed {
                for &pgid in &running {
                    process::signal_group(pgid, Signal::SIGKILL);
                }
                killed = true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Whatever the containers left behind in their groups goes too.
        for &pgid in &groups {
            process::signal_group(pgid, Signal::SIGKILL);
        }
        // The directory goes before the slot: until then a sync of the
        // same uid finds the pod terminating instead of starting it again
        // in a directory about to be removed.
        let dir = lock(&slot.entry).dir.clone();
        match fs::remove_dir_all(&dir) {
            // A pod whose files were never made, or a concurrent kill.
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(err("remove the pod directory", e));
            }
            _ => {}
        }
        self.inner.remove(pod_uid, &slot);
        self.inner.bump();
        Ok(())
    }

    fn pods(&self) -> Vec<String> {
        let mut uids: Vec<String> = self.inner.lock().keys().cloned().collect();
        uids.sort();
        uids
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf> {
        // One pod's lock at a time, and only of pods of that name: a pod
        // being started holds its lock for a while. A terminating pod of
        // the same name counts only when there is no other.
        let (_, path) = self
            .inner
            .slots()
            .into_iter()
            .filter(|s| s.namespace.as_deref() == Some(namespace) && s.name.as_deref() == Some(pod))
            .map(|slot| {
                let entry = lock(&slot.entry);
                let attempt = entry
                    .latest_attempt(container)
                    .map(|latest| if previous { latest - 1 } else { latest })
                    .filter(|&attempt| attempt >= 0);
                let path = attempt.map(|attempt| entry.logs(container, attempt).log);
                (entry.record.terminating, path)
            })
            .min_by_key(|(terminating, _)| *terminating)?;
        let path = path?;
        // A run that has not written a line yet still has an (empty) log.
        if !previous && !path.exists() {
            let _ = fs::File::create(&path);
        }
        path.exists().then_some(path)
    }
}

impl PodEntry {
    /// Marks the pod as going away — nothing starts or restarts from now
    /// on — and sends SIGTERM to every run's group; returns the groups.
    fn terminate(&mut self) -> Vec<i32> {
        self.record.terminating = true;
        if self.on_disk {
            self.persist();
        }
        let groups: Vec<i32> = self
            .record
            .containers
            .iter()
            .filter_map(|c| c.run.as_ref().filter(|r| r.exit.is_none()).map(|r| r.pid))
            .collect();
        for &pgid in &groups {
            process::signal_group(pgid, Signal::SIGTERM);
        }
        groups
    }

    /// The process groups of runs still alive, reaping our children.
    fn running_groups(&mut self) -> Vec<i32> {
        let mut out = Vec::new();
        for (c, live) in self.record.containers.iter().zip(&mut self.live) {
            let Some(run) = c.run.as_ref().filter(|r| r.exit.is_none()) else {
                continue;
            };
            let alive = match &mut live.child {
                Some(child) => matches!(child.try_wait(), Ok(None)),
                None => process::alive(run.pid, run.start_ticks),
            };
            if alive {
                out.push(run.pid);
            }
        }
        out
    }
}

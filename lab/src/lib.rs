//! `knit lab`: a whole cluster on one Linux host, the way kind builds one
//! from containers, but out of network namespaces.
//!
//! A lab is an underlay switch (a bridge in the lab's own switch
//! namespace), K node namespaces and one external client namespace on it,
//! one `knit server` in the root namespace listening on the host side of
//! the switch, and one `knit agent` per node that enters its node's
//! namespace itself. The root namespace gains one link and nothing else
//! (see [`net`]).
//!
//! - [`plan`]: the functional core, every name and address of a lab.
//! - [`net`]: the underlay on the kernel, over knit-node-agent's netns and
//!   netlink pieces.
//! - [`procs`]: the daemons, started, found and stopped.
//! - [`state`]: `lab.json` and the pointer that find a lab again.
//!
//! The operations [`up`], [`status`], [`exec`] and [`down`] are what the
//! `knit lab` subcommands run.

pub mod error;
pub mod net;
pub mod plan;
pub mod procs;
pub mod state;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

pub use error::{Error, Result};
pub use plan::LabPlan;
pub use state::{Daemon, LabState};

use crate::error::io;

/// What `knit lab up` builds.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The lab's name.
    pub name: String,
    /// How many nodes.
    pub nodes: usize,
    /// The underlay subnet.
    pub subnet: Ipv4Net,
    /// The lab's directory.
    pub dir: PathBuf,
    /// The `knit` binary the daemons run.
    pub knit_bin: PathBuf,
    /// Start the agents (off: the network and the server alone).
    pub agents: bool,
    /// How long the server and then the nodes may take to get ready.
    pub timeout: Duration,
}

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(250);

/// Builds and starts the lab `opts` describes, telling `progress` what
/// it does. On failure what was made stays, for its logs, and the error
/// says to run `knit lab down`.
pub async fn up(opts: &UpOptions, progress: &mut dyn FnMut(String)) -> Result<LabState> {
    let plan = plan::plan(&opts.name, opts.nodes, opts.subnet, &opts.dir)?;
    if LabState::load(&plan.name, &plan.dir)?.is_some() {
        return Err(Error::Exists(format!(
            "lab {:?} exists ({}); run `knit lab down --name {}` first",
            plan.name,
            plan.dir.join(state::STATE_FILE).display(),
            plan.name
        )));
    }
    blocking({
        let plan = plan.clone();
        move || net::check_free(&plan)
    })
    .await?;
    fs::create_dir_all(plan.dir.join("logs")).map_err(io("create", plan.dir.join("logs")))?;
    let mut state = LabState {
        plan: plan.clone(),
        daemons: Vec::new(),
    };
    state.save()?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let built = tokio::task::spawn_blocking({
        let plan = plan.clone();
        move || net::apply(&plan, &mut |line| drop(tx.send(line)))
    });
    while let Some(line) = rx.recv().await {
        progress(line);
    }
    built.await.expect("the network setup does not panic")?;

    let server_args = vec![
        "server".to_string(),
        "--data-dir".to_string(),
        path_arg(&plan.server_dir),
        "--listen".to_string(),
        plan.api_listen.clone(),
    ];
    let mut server = procs::spawn(
        "knit server",
        &opts.knit_bin,
        &server_args,
        &plan.server_log,
        &plan.name,
    )?;
    state.daemons.push(Daemon {
        what: "server".to_string(),
        pid: server.id(),
        log: plan.server_log.clone(),
    });
    state.save()?;
    wait_for_server(&plan, &mut server, opts.timeout).await?;
    let admin = knit_apiserver_kubeconfig(&plan.server_dir);
    fs::copy(&admin, &plan.kubeconfig)
        .map_err(io("copy the server's kubeconfig to", &plan.kubeconfig))?;
    progress(format!(
        "API server on {} (log {}); kubeconfig {}",
        plan.api_listen,
        plan.server_log.display(),
        plan.kubeconfig.display()
    ));
    if !opts.agents {
        return Ok(state);
    }

    let mut agents = Vec::new();
    let api = client(&plan.kubeconfig).await?;
    for (i, node) in plan.nodes.iter().enumerate() {
        fs::create_dir_all(&node.state_dir).map_err(io("create", &node.state_dir))?;
        let args = vec![
            // Each agent joins with the server's token, checks the
            // server's CA against it and gets its own node certificate.
            "agent".to_string(),
            "--server".to_string(),
            format!("https://{}", plan.api_listen),
            "--token-file".to_string(),
            path_arg(&plan.join_token),
            "--node-name".to_string(),
            node.member.name.clone(),
            "--node-ip".to_string(),
            node.member.address.addr().to_string(),
            "--netns".to_string(),
            node.member.netns.clone(),
            "--state-dir".to_string(),
            path_arg(&node.state_dir),
            "--sandbox-prefix".to_string(),
            node.sandbox_prefix.clone(),
        ];
        let what = format!("knit agent {}", node.member.name);
        let child = procs::spawn(&what, &opts.knit_bin, &args, &node.log, &plan.name)?;
        state.daemons.push(Daemon {
            what: node.member.name.clone(),
            pid: child.id(),
            log: node.log.clone(),
        });
        state.save()?;
        agents.push((what, child, node.log.clone()));
        // Node IPAM hands out slices in the order Nodes register; one
        // agent at a time gives node i the i-th slice (10.0.1.0/24 for
        // node 1, as in the article) whichever agent would be quicker.
        wait_for_cidr(&plan, i, &api, &mut agents, opts.timeout).await?;
    }
    progress(format!(
        "{} agents started; waiting for the nodes to be Ready",
        agents.len()
    ));
    wait_for_nodes(&plan, &mut agents, opts.timeout, progress).await?;
    Ok(state)
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Where `knit server` writes its admin kubeconfig.
fn knit_apiserver_kubeconfig(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.kubeconfig")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("lab work on a blocking thread does not panic")
}

/// Fails if `child` has exited.
fn check_running(what: &str, child: &mut Child, log: &Path) -> Result<()> {
    match child.try_wait() {
        Ok(Some(status)) => Err(Error::Exited {
            what: what.to_string(),
            status: status.to_string(),
            log: log.to_path_buf(),
            tail: procs::tail(log, 20),
        }),
        _ => Ok(()),
    }
}

/// Waits until the server has written its kubeconfig and accepts
/// connections.
async fn wait_for_server(plan: &LabPlan, server: &mut Child, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let addr: SocketAddr = plan.api_listen.parse().expect("host:port from the plan");
    let kubeconfig = knit_apiserver_kubeconfig(&plan.server_dir);
    loop {
        check_running("knit server", server, &plan.server_log)?;
        if kubeconfig.is_file() && TcpStream::connect_timeout(&addr, POLL).is_ok() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("knit server not listening on {addr}"),
                waited: start.elapsed(),
                hint: format!("see {}", plan.server_log.display()),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A client for the lab's API server.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| Error::Api(format!("reading {}: {e}", kubeconfig.display())))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| Error::Api(format!("using {}: {e}", kubeconfig.display())))?;
    config.connect_timeout = Some(Duration::from_secs(3));
    config.read_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(config).map_err(|e| Error::Api(e.to_string()))
}

/// The nodes' podCIDRs (`None`: no such node yet) and whether each is
/// Ready, in the plan's order.
async fn node_states(plan: &LabPlan, client: &kube::Client) -> Result<Vec<(Option<String>, bool)>> {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let list = nodes
        .list(&Default::default())
        .await
        .map_err(|e| Error::Api(e.to_string()))?;
    Ok(plan
        .nodes
        .iter()
        .map(|spec| {
            let Some(node) = list
                .items
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(spec.member.name.as_str()))
            else {
                return (None, false);
            };
            let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            (cidr, ready)
        })
        .collect())
}

/// Waits until node `i` has a podCIDR, failing early if an agent dies.
async fn wait_for_cidr(
    plan: &LabPlan,
    i: usize,
    client: &kube::Client,
    agents: &mut [(String, Child, PathBuf)],
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        for (what, child, log) in agents.iter_mut() {
            check_running(what, child, log)?;
        }
        // A failed list is retried until the deadline, like the rest.
        if let Ok(states) = node_states(plan, client).await
            && states.get(i).is_some_and(|(cidr, _)| cidr.is_some())
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("node {} has no podCIDR", plan.nodes[i].member.name),
                waited: start.elapsed(),
                hint: format!("see the agent log {}", plan.nodes[i].log.display()),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node is Ready with a podCIDR, failing early if an
/// agent dies.
async fn wait_for_nodes(
    plan: &LabPlan,
    agents: &mut [(String, Child, PathBuf)],
    timeout: Duration,
    progress: &mut dyn FnMut(String),
) -> Result<()> {
    let start = Instant::now();
    let client = client(&plan.kubeconfig).await?;
    let mut reported = vec![false; plan.nodes.len()];
    loop {
        for (what, child, log) in agents.iter_mut() {
            check_running(what, child, log)?;
        }
        // A failed list is retried until the deadline, like the rest.
        let states = node_states(plan, &client).await.ok();
        if let Some(states) = &states {
            for (i, (cidr, ready)) in states.iter().enumerate() {
                if *ready && cidr.is_some() && !reported[i] {
                    reported[i] = true;
                    progress(format!(
                        "node {} Ready, podCIDR {}",
                        plan.nodes[i].member.name,
                        cidr.as_deref().unwrap_or_default()
                    ));
                }
            }
            if reported.iter().all(|r| *r) {
                return Ok(());
            }
        }
        if start.elapsed() > timeout {
            let waiting: Vec<&str> = plan
                .nodes
                .iter()
                .zip(&reported)
                .filter(|(_, r)| !**r)
                .map(|(n, _)| n.member.name.as_str())
                .collect();
            let logs: Vec<String> = plan
                .nodes
                .iter()
                .zip(&reported)
                .filter(|(_, r)| !**r)
                .map(|(n, _)| n.log.display().to_string())
                .collect();
            return Err(Error::Timeout {
                what: format!("nodes not Ready with a podCIDR: {}", waiting.join(", ")),
                waited: start.elapsed(),
                hint: format!("see the agent logs {}", logs.join(", ")),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One node in [`Status`].
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// The node's name.
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its underlay address.
    pub ip: Ipv4Addr,
    /// Its pod CIDR as the API has it; `null` before it has one.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// Whether it is Ready (text output only).
    #[serde(skip)]
    pub ready: bool,
}

/// The external client in [`Status`].
#[derive(Clone, Debug, Serialize)]
pub struct ExternalStatus {
    /// Its network namespace.
    pub netns: String,
    /// Its underlay address.
    pub ip: Ipv4Addr,
}

/// `knit lab status -o json`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The lab's name.
    pub name: String,
    /// The kubeconfig for the host's kubectl.
    pub kubeconfig: PathBuf,
    /// The nodes.
    pub nodes: Vec<NodeStatus>,
    /// The external client.
    pub external: ExternalStatus,
    /// Why the API could not be asked for podCIDRs, if it could not.
    #[serde(skip)]
    pub api_error: Option<String>,
}

/// The lab `name` in `dir` (see [`state::resolve_dir`]), with its nodes'
/// podCIDRs read from its API server.
pub async fn status(name: &str, dir: Option<&Path>) -> Result<Status> {
    plan::check_name(name)?;
    let state = LabState::require(name, &state::resolve_dir(name, dir))?;
    let plan = &state.plan;
    let api = match client(&plan.kubeconfig).await {
        Ok(client) => node_states(plan, &client).await,
        Err(err) => Err(err),
    };
    let (states, api_error) = match api {
        Ok(states) => (states, None),
        Err(err) => (vec![(None, false); plan.nodes.len()], Some(err.to_string())),
    };
    Ok(Status {
        name: plan.name.clone(),
        kubeconfig: plan.kubeconfig.clone(),
        nodes: plan
            .nodes
            .iter()
            .zip(states)
            .map(|(n, (pod_cidr, ready))| NodeStatus {
                name: n.member.name.clone(),
                netns: n.member.netns.clone(),
                ip: n.member.address.addr(),
                pod_cidr,
                ready,
            })
            .collect(),
        external: ExternalStatus {
            netns: plan.external.netns.clone(),
            ip: plan.external.address.addr(),
        },
        api_error,
    })
}

/// The network namespace of `host` in lab `name` (see
/// [`LabPlan::member`]).
pub fn exec_netns(name: &str, dir: Option<&Path>, host: &str) -> Result<String> {
    plan::check_name(name)?;
    let state = LabState::require(name, &state::resolve_dir(name, dir))?;
    state
        .plan
        .member(host)
        .map(|m| m.netns.clone())
        .ok_or_else(|| Error::NoHost {
            lab: name.to_string(),
            host: host.to_string(),
        })
}

/// Runs `command` inside `host`'s namespace of lab `name` (by
/// `ip netns exec`, which also gives it the namespace's own `/sys`) and
/// returns its exit code (128 + signal if a signal ended it).
pub fn exec(name: &str, dir: Option<&Path>, host: &str, command: &[String]) -> Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    let netns = exec_netns(name, dir, host)?;
    let Some((program, args)) = command.split_first() else {
        return Err(Error::Invalid {
            what: "command",
            value: String::new(),
            reason: "give the command after `--`".to_string(),
        });
    };
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &netns, program])
        .args(args)
        .status()
        .map_err(|source| Error::Spawn {
            what: format!("ip netns exec {netns} {program}"),
            source,
        })?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// What [`down`] removed.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    /// Processes stopped.
    pub processes: Vec<u32>,
    /// The host link and namespaces.
    pub net: net::Removed,
    /// The lab's directory, if it was removed.
    pub dir: Option<PathBuf>,
}

/// Removes everything of lab `name`: its processes (the recorded daemons
/// and anything marked with the lab's name or living in its namespaces),
/// its host link, its namespaces (the agents' pod sandboxes too), its
/// directory and its pointer. Works from what is on the host when the
/// state file is gone, and does nothing when nothing is left.
pub async fn down(name: &str, dir: Option<&Path>) -> Result<Removed> {
    plan::check_name(name)?;
    let name = name.to_string();
    let dir = state::resolve_dir(&name, dir);
    blocking(move || {
        let state = LabState::load(&name, &dir)?;
        let namespaces = net::lab_namespaces(&name)?;
        let processes = procs::stop_all(&name, &namespaces);
        let net = net::remove(&name, &plan::host_link(&name))?;
        // A directory is only removed when it is this lab's: it has the
        // lab's state file, or it is the default one, which knit owns.
        let ours = state.is_some() || dir == plan::default_dir(&name);
        let removed_dir = if ours && dir.exists() {
            fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
            Some(dir.clone())
        } else {
            None
        };
        let ptr = state::pointer(&name);
        if ptr.exists() {
            fs::remove_file(&ptr).map_err(io("remove", &ptr))?;
        }
        Ok(Removed {
            processes,
            net,
            dir: removed_dir,
        })
    })
    .await
}

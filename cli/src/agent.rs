//! `knit agent`: one node. Parses its flags, enters the node's network
//! namespace (`--netns`) while the process still has one thread, joins the
//! cluster with a join token when given one (see [`join`]), gets the
//! serving certificate of its endpoint with its node credential
//! ([`crate::join::serving_tls`]; with `--kubeconfig` as when joined), then
//! runs the node agent's loop ([`knit_node_agent::agent::run`]) with the
//! process runtime against the API server named by its kubeconfig. An
//! agent that cannot get a serving certificate does not start: its
//! endpoint is never served over plain HTTP.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use knit_node_agent::agent::{self, AgentConfig, podfiles::ClusterDns};
use knit_node_agent::runtime::{Options, ProcessRuntime};

/// The flags of `knit agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The kubeconfig of the API server: its URL, the cluster CA (its
    /// certificate-authority or -data) and this node's credential
    /// (`system:node:<name>` in `system:nodes`) or the admin's, with which
    /// the agent gets its endpoint's serving certificate at start; not
    /// needed with --server and --token.
    #[arg(long, env = "KUBECONFIG", required_unless_present = "server")]
    kubeconfig: Option<PathBuf>,
    /// The API server to join (`https://HOST:PORT`), with --token.
    #[arg(long, requires = "join_token", value_name = "URL")]
    server: Option<String>,
    /// The join token `knit server` printed (`K10<ca-hash>::<id>.<secret>`).
    #[arg(long, env = "KNIT_TOKEN", group = "join_token", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the join token.
    #[arg(long, group = "join_token", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The Node's name.
    #[arg(long)]
    node_name: String,
    /// The node's address: its InternalIP, where the log endpoint listens.
    #[arg(long)]
    node_ip: Ipv4Addr,
    /// Run inside the named network namespace (`/run/netns/NAME`), entered
    /// before anything else starts: the node's own network.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// Where the agent keeps its state, its kubeconfig when joined and its
    /// serving certificate in `tls/` [default: /var/lib/knit-agent/<node>].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The port of the log endpoint (`/containerLogs`, `/healthz`), served
    /// over TLS only.
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// The prefix of the pods' network namespace names, so nodes sharing
    /// a host do not collide.
    #[arg(long, default_value = "knit-", value_name = "P")]
    sandbox_prefix: String,
    /// The interface whose MTU the pod network takes [default: the one
    /// holding --node-ip].
    #[arg(long, value_name = "IFACE")]
    uplink: Option<String>,
    /// The cluster DNS address pods' resolv.conf names.
    #[arg(long, default_value = "10.3.240.10")]
    cluster_dns: Ipv4Addr,
    /// The cluster's DNS zone.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The whole pod network (pod traffic leaving it is masqueraded).
    #[arg(long, default_value = "10.0.0.0/14", value_name = "CIDR")]
    cluster_cidr: String,
}

/// Moves the calling thread — the main thread, before any other exists,
/// so every thread started later inherits it — into `--netns`.
pub fn enter_netns(args: &AgentArgs) -> anyhow::Result<()> {
    let Some(name) = &args.netns else {
        return Ok(());
    };
    let path = PathBuf::from(knit_node_agent::netns::RUN_DIR).join(name);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {}", path.display()))
}

/// Runs the agent until SIGINT/SIGTERM or a fatal error.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut config = AgentConfig::new(&args.node_name, args.node_ip);
    if let Some(dir) = &args.state_dir {
        config.state_dir = dir.clone();
    }
    let kubeconfig_path = match (&args.server, &args.kubeconfig) {
        (Some(server), _) => {
            let token = match (&args.token, &args.token_file) {
                (Some(token), _) => token.clone(),
                (None, Some(file)) => std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?,
                (None, None) => anyhow::bail!("--server needs --token or --token-file"),
            };
            crate::join::join(
                server,
                &token,
                &args.node_name,
                args.node_ip,
                &config.state_dir,
            )
            .await?
        }
        (None, Some(path)) => path.clone(),
        (None, None) => anyhow::bail!("give --kubeconfig, or --server with --token"),
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig_path)
        .with_context(|| format!("reading {}", kubeconfig_path.display()))?;
    let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("using {}", kubeconfig_path.display()))?;
    let ca_pem = crate::join::kubeconfig_ca(&kube_config)
        .with_context(|| format!("using {}", kubeconfig_path.display()))?;
    let server = kube_config.cluster_url.to_string();
    let client = kube::Client::try_from(kube_config).context("building the API client")?;
    // Every agent, joined or not, serves its endpoint over TLS with a
    // certificate the cluster CA signed for it, to clients that CA vouches
    // for; with none to be had, it does not start.
    let tls = crate::join::serving_tls(
        &client,
        &server,
        &ca_pem,
        &args.node_name,
        args.node_ip,
        &config.state_dir,
    )
    .await
    .context("the node's serving certificate")?;
    config.tls = Some(tls);
    config.port = args.port;
    config.sandbox_prefix = args.sandbox_prefix;
    config.uplink = args.uplink;
    config.cluster_cidr = args
        .cluster_cidr
        .parse()
        .with_context(|| format!("--cluster-cidr {}", args.cluster_cidr))?;
    config.dns = ClusterDns {
        nameserver: args.cluster_dns,
        domain: args.cluster_domain,
    };
    let runtime = ProcessRuntime::new(Options::new(config.state_dir.join("runtime")))
        .map_err(|e| anyhow::anyhow!("starting the process runtime: {e}"))?;
    let runtime = Arc::new(runtime);
    tokio::select! {
        result = agent::run(client, config, runtime) => result.context("knit agent"),
        // Pods keep running: the agent's restart picks them up.
        () = crate::termination() => Ok(()),
    }
}

//! `knit`: one binary for the whole cluster. `knit server` runs the API
//! server (with the controllers, as they arrive); `get`, `describe`,
//! `apply`, `delete` and `logs` are the kubectl-lite; node agents and the
//! lab join them as subcommands.

mod agent;
mod join;
mod kubectl;
mod lab;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use knit_apiserver::ApiConfig;
use knit_apiserver::server::{SecurityConfig, ServerConfig, serve_with};
use knit_apiserver::store::sqlite::History;

/// The API server allocates and frees a JSON tree per request on every
/// core; mimalloc's per-thread heaps spend less on that than glibc's
/// arenas (measured with knit-bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "knit",
    version,
    about = "A Kubernetes-compatible networking control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server, keeping cluster state in a data dir.
    Server(ServerArgs),
    /// Show objects as tables, YAML, JSON or names (like `kubectl get`).
    Get(kubectl::GetArgs),
    /// Show objects in detail, with their events (like `kubectl describe`).
    Describe(kubectl::DescribeArgs),
    /// Create or update objects from manifests with server-side apply.
    Apply(kubectl::ApplyArgs),
    /// Delete objects by name or from manifests.
    Delete(kubectl::DeleteArgs),
    /// Print a pod's container logs.
    Logs(kubectl::LogsArgs),
    /// Run the controllers against an API server (`knit server` runs them
    /// in-process unless started with `--no-controllers`).
    Controllers(ControllersArgs),
    /// Run one node: its pods' sandboxes and containers, its routes, its
    /// Node and Lease.
    Agent(agent::AgentArgs),
    /// Build, inspect and remove whole clusters on this host, out of
    /// network namespaces.
    Lab(lab::LabArgs),
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Where the database and the admin kubeconfig live.
    #[arg(long, env = "KNIT_DATA_DIR", default_value = "/var/lib/knit")]
    data_dir: PathBuf,
    /// Address and port to serve the API on.
    #[arg(long, env = "KNIT_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// How long change history is kept for watches and paginated lists.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    history_seconds: u64,
    /// At most this many changes are kept in the history.
    #[arg(long, default_value_t = 100_000)]
    history_max: u64,
    /// How often a watch that allows bookmarks receives one.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    bookmark_seconds: u64,
    /// The range ClusterIPs come from; its first address is the
    /// `kubernetes` Service's.
    #[arg(long, default_value = knit_ipam::DEFAULT_SERVICE_CIDR, value_name = "CIDR")]
    service_cidr: knit_ipam::Cidr,
    /// The range NodePorts come from.
    #[arg(long, default_value = "30000-32767", value_name = "FIRST-LAST")]
    service_node_port_range: knit_ipam::PortRange,
    /// The range node pod CIDRs are sliced from.
    #[arg(long, default_value = knit_ipam::DEFAULT_CLUSTER_CIDR, value_name = "CIDR")]
    cluster_cidr: knit_ipam::Cidr,
    /// The prefix length of each node's pod CIDR slice.
    #[arg(long, default_value_t = knit_ipam::DEFAULT_NODE_MASK, value_name = "BITS")]
    node_cidr_mask_size: u8,
    /// How long a node's Lease may go unrenewed before its status is
    /// unknown and its pods not ready.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    node_monitor_grace_period: u64,
    /// Do not run the controllers in-process (run `knit controllers`
    /// elsewhere instead).
    #[arg(long)]
    no_controllers: bool,
    /// Which controllers run, as kube-controller-manager's flag: `*` for
    /// all, `name` to add one, `-name` to leave one out (`*,-scheduler`).
    #[arg(long, default_value = "*", value_name = "LIST")]
    controllers: knit_controllers::Selection,
    /// A file of static bearer tokens, one `token,user,uid,"group1,group2"`
    /// per line (kube-apiserver's format).
    #[arg(long, value_name = "FILE")]
    token_auth_file: Option<PathBuf>,
    /// Another name or address the serving certificate must cover
    /// (repeatable); loopback, the listen address and the in-cluster
    /// names are always covered.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// Short requests in flight at once; more get 429 (the admin and the
    /// controllers are exempt).
    #[arg(long, default_value_t = knit_apiserver::auth::limits::DEFAULT_MAX_INFLIGHT)]
    max_requests_inflight: usize,
    /// Watches one user may keep open (the admin and the controllers are
    /// exempt).
    #[arg(long, default_value_t = knit_apiserver::auth::limits::DEFAULT_MAX_WATCHES_PER_USER)]
    max_watches_per_user: usize,
}

#[derive(Debug, Args)]
struct ControllersArgs {
    /// The kubeconfig of the API server to reconcile.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The range node pod CIDRs are sliced from.
    #[arg(long, default_value = knit_ipam::DEFAULT_CLUSTER_CIDR, value_name = "CIDR")]
    cluster_cidr: knit_ipam::Cidr,
    /// The prefix length of each node's pod CIDR slice.
    #[arg(long, default_value_t = knit_ipam::DEFAULT_NODE_MASK, value_name = "BITS")]
    node_cidr_mask_size: u8,
    /// The ClusterIP range, which no node slice may overlap.
    #[arg(long, default_value = knit_ipam::DEFAULT_SERVICE_CIDR, value_name = "CIDR")]
    service_cidr: knit_ipam::Cidr,
    /// How long a node's Lease may go unrenewed before its status is
    /// unknown and its pods not ready.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    node_monitor_grace_period: u64,
    /// Which controllers run, as kube-controller-manager's flag: `*` for
    /// all, `name` to add one, `-name` to leave one out (`*,-scheduler`).
    #[arg(long, default_value = "*", value_name = "LIST")]
    controllers: knit_controllers::Selection,
}

/// The controllers' configuration from the flags, refused early when the
/// cluster CIDR cannot be split by the mask.
fn controllers_config(
    cluster_cidr: knit_ipam::Cidr,
    node_mask: u8,
    service_cidr: knit_ipam::Cidr,
    node_monitor_grace_seconds: u64,
    enabled: knit_controllers::Selection,
) -> anyhow::Result<knit_controllers::ControllersConfig> {
    anyhow::ensure!(
        node_monitor_grace_seconds > 0,
        "--node-monitor-grace-period must be at least 1 second"
    );
    let config = knit_controllers::ControllersConfig {
        cluster_cidr,
        node_mask,
        service_cidr,
        node_monitor_grace: Duration::from_secs(node_monitor_grace_seconds),
        enabled,
    };
    knit_ipam::NodeCidrAllocator::new(config.node_cidrs())
        .context("--cluster-cidr / --node-cidr-mask-size")?;
    Ok(config)
}

/// Runs the controllers against the server `args` names until SIGINT/SIGTERM.
async fn controllers(args: &ControllersArgs) -> anyhow::Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("using {}", args.kubeconfig.display()))?;
    let client = kube::Client::try_from(config).context("building the API client")?;
    let config = controllers_config(
        args.cluster_cidr,
        args.node_cidr_mask_size,
        args.service_cidr,
        args.node_monitor_grace_period,
        args.controllers,
    )?;
    tokio::select! {
        () = knit_controllers::run(client, config) => {}
        () = termination() => {}
    }
    Ok(())
}

impl ServerArgs {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            history: History {
                max_age: Duration::from_secs(self.history_seconds),
                max_entries: self.history_max,
                ..History::default()
            },
            api: ApiConfig {
                bookmark_interval: Duration::from_secs(self.bookmark_seconds.max(1)),
                service_cidr: self.service_cidr,
                node_ports: self.service_node_port_range,
                ..ApiConfig::default()
            },
            security: SecurityConfig {
                token_auth_file: self.token_auth_file.clone(),
                extra_sans: self.tls_sans.clone(),
                max_inflight: self.max_requests_inflight.max(1),
                max_watches_per_user: self.max_watches_per_user,
            },
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // kube's rustls client takes the process default; ring is the only
    // provider built in, installed before any client exists.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `knit agent --netns` must switch namespace while this is the only
    // thread, so the runtime is built by hand afterwards.
    if let Command::Agent(args) = &cli.command {
        agent::enter_netns(args)?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The server logs its work; the client verbs speak only when asked.
    let default_filter = match cli.command {
        Command::Server(_) | Command::Controllers(_) | Command::Agent(_) => "info",
        // kube's connector logs refused connections at ERROR; the verbs
        // report those themselves, naming the server.
        _ => "warn,kube_client=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KNIT_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Server(args) => {
            let in_process = !args.no_controllers;
            let config = controllers_config(
                args.cluster_cidr,
                args.node_cidr_mask_size,
                args.service_cidr,
                args.node_monitor_grace_period,
                args.controllers,
            )?;
            serve_with(args.config(), termination(), move |router| {
                if in_process {
                    let client = kube::Client::new(router, "default");
                    tokio::spawn(knit_controllers::run(client, config));
                }
            })
            .await
            .with_context(|| format!("knit server (data dir {})", args.data_dir.display()))
            .map(|()| ExitCode::SUCCESS)
        }
        Command::Controllers(args) => controllers(&args).await.map(|()| ExitCode::SUCCESS),
        Command::Agent(args) => agent::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Get(args) => Ok(kubectl::exit_code(kubectl::get::run(&args).await)),
        Command::Describe(args) => Ok(kubectl::exit_code(kubectl::describe::run(&args).await)),
        Command::Apply(args) => Ok(kubectl::exit_code(kubectl::apply::apply(&args).await)),
        Command::Delete(args) => Ok(kubectl::exit_code(kubectl::apply::delete(&args).await)),
        Command::Logs(args) => Ok(kubectl::exit_code(kubectl::logs(&args).await)),
        Command::Lab(args) => lab::run(args).await,
    }
}

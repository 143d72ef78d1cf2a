//! `knit lab up|status|exec|down`: flags and printing around the
//! knit-lab crate, which does the work.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use knit_lab::plan::{DEFAULT_NAME, DEFAULT_SUBNET};

/// `knit lab`.
#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Build a lab: an underlay switch, node namespaces, an external
    /// client, the API server and one agent per node.
    Up(UpArgs),
    /// Describe a lab (`-o json` for scripts).
    Status(StatusArgs),
    /// Run a command in a node's or the external client's namespace.
    Exec(ExecArgs),
    /// Remove every process, namespace, link and file of a lab.
    Down(LabRef),
}

/// Which lab.
#[derive(Debug, Args)]
struct LabRef {
    /// The lab's name (at most 12 of a-z, 0-9 and '-').
    #[arg(long, default_value = DEFAULT_NAME)]
    name: String,
    /// The lab's directory [default: /var/lib/knit-lab/<name>].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct UpArgs {
    #[command(flatten)]
    lab: LabRef,
    /// How many nodes.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// The underlay; the host side takes its first address, the nodes the
    /// next ones, the external client the last.
    #[arg(long, default_value = DEFAULT_SUBNET, value_name = "CIDR")]
    subnet: String,
    /// Build the network and start the API server only, without agents.
    #[arg(long)]
    no_agents: bool,
    /// How long the server and then the nodes may take to be ready.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    lab: LabRef,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
struct ExecArgs {
    #[command(flatten)]
    lab: LabRef,
    /// A node's name or number (from 1), or `ext` for the external client.
    host: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Runs a `knit lab` subcommand.
pub async fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LabCommand::Up(args) => up(args).await,
        LabCommand::Status(args) => status(args).await,
        LabCommand::Exec(args) => {
            let code = knit_lab::exec(
                &args.lab.name,
                args.lab.dir.as_deref(),
                &args.host,
                &args.command,
            )?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        LabCommand::Down(lab) => down(lab).await,
    }
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let name = args.lab.name.clone();
    let opts = knit_lab::UpOptions {
        name: name.clone(),
        nodes: args.nodes,
        subnet: knit_lab::plan::parse_subnet(&args.subnet)?,
        dir: args
            .lab
            .dir
            .clone()
            .unwrap_or_else(|| knit_lab::plan::default_dir(&name)),
        knit_bin: std::env::current_exe().context("finding the knit binary")?,
        agents: !args.no_agents,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let start = Instant::now();
    let mut progress = |line: String| {
        eprintln!("[{:>5.1}s] {line}", start.elapsed().as_secs_f64());
    };
    progress(format!(
        "lab {name}: {} node(s) on {} in {}",
        opts.nodes,
        opts.subnet,
        opts.dir.display()
    ));
    match knit_lab::up(&opts, &mut progress).await {
        Ok(state) => {
            progress(format!("lab {name} is up"));
            println!("export KUBECONFIG={}", state.plan.kubeconfig.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(err @ knit_lab::Error::Exists(_)) => Err(err.into()),
        Err(err) => Err(anyhow::Error::new(err).context(format!(
            "lab {name} did not come up; what was made stays for its logs, \
             remove it with `knit lab down --name {name}`"
        ))),
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let status = knit_lab::status(&args.lab.name, args.lab.dir.as_deref()).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Output::Text => {
            println!(
                "lab {}  (KUBECONFIG={})",
                status.name,
                status.kubeconfig.display()
            );
            println!(
                "{:<24} {:<20} {:<16} {:<16} READY",
                "NODE", "NETNS", "IP", "POD CIDR"
            );
            for n in &status.nodes {
                println!(
                    "{:<24} {:<20} {:<16} {:<16} {}",
                    n.name,
                    n.netns,
                    n.ip.to_string(),
                    n.pod_cidr.as_deref().unwrap_or("<none>"),
                    n.ready
                );
            }
            println!(
                "{:<24} {:<20} {:<16}",
                "(external)",
                status.external.netns,
                status.external.ip.to_string()
            );
            if let Some(err) = &status.api_error {
                eprintln!("warning: podCIDRs unknown: {err}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn down(lab: LabRef) -> anyhow::Result<ExitCode> {
    let removed = knit_lab::down(&lab.name, lab.dir.as_deref()).await?;
    let nothing = removed.processes.is_empty()
        && removed.net.links.is_empty()
        && removed.net.namespaces.is_empty()
        && removed.dir.is_none();
    if nothing {
        eprintln!("lab {}: nothing to remove", lab.name);
    } else {
        eprintln!(
            "lab {}: stopped {} process(es), removed {} link(s), {} namespace(s){}",
            lab.name,
            removed.processes.len(),
            removed.net.links.len(),
            removed.net.namespaces.len(),
            removed
                .dir
                .as_ref()
                .map(|d| format!(" and {}", d.display()))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! `knit`: one binary for the whole cluster. `knit server` runs the API
//! server (with the controllers, as they arrive); node agents, the lab and
//! the kubectl-lite verbs join it as subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use knit_apiserver::ApiConfig;
use knit_apiserver::server::{ServerConfig, serve};
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
                ..ApiConfig::default()
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KNIT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => serve(args.config(), termination())
            .await
            .with_context(|| format!("knit server (data dir {})", args.data_dir.display())),
    }
}

//! Running the real kubectl against a [`KnitServer`]: each [`Kubectl`] has
//! its own `HOME` (so discovery caches never leak between tests) and the
//! server's admin kubeconfig, and runs kubectl as a child process with a
//! time limit, so a hanging verb fails its test instead of the suite.
//!
//! The binary comes from `$KNIT_KUBECTL` (`scripts/test.sh` sets it from
//! `scripts/fetch-kubectl.sh`). Without it the kubectl tests print a SKIP
//! line and pass — except under `CI=true`, where a missing kubectl fails.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::server::KnitServer;

/// How long one kubectl invocation may take.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

/// The kubectl to test with, if there is one. Under `CI=true` a missing
/// kubectl is a failure, not a skip.
///
/// # Panics
/// When `CI=true` and `$KNIT_KUBECTL` is unset or not a file.
pub fn kubectl_bin() -> Option<PathBuf> {
    let found = std::env::var_os("KNIT_KUBECTL")
        .map(PathBuf::from)
        .filter(|bin| bin.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "KNIT_KUBECTL must name the kubectl binary under CI=true (scripts/fetch-kubectl.sh prints it)"
        );
        eprintln!(
            "SKIP: KNIT_KUBECTL is not set; run `export KNIT_KUBECTL=$(scripts/fetch-kubectl.sh)`"
        );
    }
    found
}

/// The result of one kubectl run.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// kubectl pointed at one server.
#[derive(Debug)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    /// kubectl for `server`, or `None` (after a SKIP line) when there is no
    /// kubectl outside CI.
    pub fn for_server(server: &KnitServer) -> Option<Kubectl> {
        let bin = kubectl_bin()?;
        let home = tempfile::tempdir().expect("a temporary HOME for kubectl");
        Some(Kubectl {
            bin,
            kubeconfig: server.data_dir().join("admin.kubeconfig"),
            home,
        })
    }

    /// The `HOME` kubectl runs with; tests put manifests and editor scripts here.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl with extra environment variables and optional stdin.
    ///
    /// # Panics
    /// When kubectl cannot be started or runs past [`KUBECTL_TIMEOUT`].
    pub async fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().expect("starting kubectl");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("kubectl's stdin");
            pipe.write_all(input.as_bytes())
                .await
                .expect("writing kubectl's stdin");
        }
        match tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output()).await {
            Ok(output) => output.expect("waiting for kubectl").into(),
            Err(_) => panic!("kubectl {args:?} did not finish within {KUBECTL_TIMEOUT:?}"),
        }
    }

    /// Runs kubectl.
    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[], None).await
    }

    /// Runs kubectl and returns its stdout.
    ///
    /// # Panics
    /// When kubectl fails, with its stderr.
    pub async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(
            run.success,
            "kubectl {args:?} failed:\n{}{}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    /// Runs kubectl with `manifest` on stdin (for `-f -`) and returns stdout.
    ///
    /// # Panics
    /// When kubectl fails, with its stderr.
    pub async fn ok_stdin(&self, args: &[&str], manifest: &str) -> String {
        let run = self.run_with(args, &[], Some(manifest)).await;
        assert!(
            run.success,
            "kubectl {args:?} failed:\n{}{}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    /// Runs kubectl expecting it to fail; returns its stderr.
    ///
    /// # Panics
    /// When kubectl succeeds.
    pub async fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let run = self.run_with(args, &[], stdin).await;
        assert!(
            !run.success,
            "kubectl {args:?} should have failed but printed:\n{}",
            run.stdout
        );
        run.stderr
    }

    /// Starts a long-running kubectl (`get -w`); stdout is piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().expect("starting kubectl")
    }
}

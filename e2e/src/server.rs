//! Running `knit server` as a child process: find the binary, pick a free
//! loopback port, start it on a data directory, wait until `/readyz` answers,
//! and stop it (SIGTERM) or kill it (SIGKILL). A [`KnitServer`] that is dropped
//! kills its process, so a failing test leaves nothing running.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::http::HttpClient;

/// The file in the data directory that receives the server's stdout and
/// stderr (appended to, so restarts on the same directory keep every run).
pub const LOG_FILE: &str = "knit-server.log";

/// How long a server may take to answer `/readyz` after it was spawned.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `stop` waits after SIGTERM before it gives up and kills.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong running a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("knit server exited before it was ready ({status}); log tail:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error("knit server not ready after {waited:?}; log tail:\n{log}")]
    NotReady { waited: Duration, log: String },
    #[error("knit server still running {waited:?} after SIGTERM; killed it")]
    StopTimeout { waited: Duration },
    #[error("signalling knit server: {0}")]
    Signal(#[from] nix::Error),
}

/// A `Result` with a [`ServerError`].
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// The `knit` binary to test: `$KNIT_BIN` if set, else `knit` in the target
/// directory (profile dir) these tests were built in, found from
/// `current_exe()`'s ancestors.
///
/// # Panics
/// When no binary is found, with a message saying how to build it.
pub fn knit_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KNIT_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "KNIT_BIN={} is not a file; unset it or point it at a built knit binary",
            bin.display()
        );
        return bin;
    }
    let exe = std::env::current_exe().expect("current_exe() is needed to find the knit binary");
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join("knit");
        if candidate.is_file() {
            return candidate;
        }
        // The target dir itself: look no higher than it.
        if dir.join("CACHEDIR.TAG").is_file() {
            break;
        }
    }
    panic!(
        "no knit binary next to {} (looked in its ancestor directories up to the target dir); \
         build it first with `cargo build --workspace --bins` (add --release for benchmarks), \
         or set KNIT_BIN to its path",
        exe.display()
    );
}

/// A loopback port that was free a moment ago (the kernel picked it).
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A running `knit server`. Dropping it kills the process (SIGKILL).
#[derive(Debug)]
pub struct KnitServer {
    child: Option<Child>,
    addr: SocketAddr,
    data_dir: PathBuf,
    bin: PathBuf,
}

impl KnitServer {
    /// Starts `knit server --data-dir DATA_DIR --listen 127.0.0.1:PORT` on a
    /// free port and waits until `/readyz` answers 200.
    pub async fn start(data_dir: &Path) -> Result<Self> {
        Self::start_with_args(data_dir, &[]).await
    }

    /// Like [`start`](Self::start) with extra arguments for `knit server`
    /// (e.g. `--no-controllers`).
    pub async fn start_with_args(data_dir: &Path, extra_args: &[&str]) -> Result<Self> {
        let bin = knit_bin();
        // Another process may grab the port between free_port() and the
        // server's bind; try a few ports before giving up.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port().map_err(io("finding a free port"))?;
            let server = Self::spawn(&bin, data_dir, port, extra_args)?;
            match server.wait_ready(READY_TIMEOUT).await {
                Ok(server) => return Ok(server),
                Err(ServerError::Exited { log, .. }) if attempt < 3 && log.contains("in use") => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(bin: &Path, data_dir: &Path, port: u16, extra_args: &[&str]) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(io(format!("creating {}", data_dir.display())))?;
        let log_path = data_dir.join(LOG_FILE);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening {}", log_path.display())))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // A marker that separates runs when a test restarts the server.
        writeln!(
            log,
            "=== knit-e2e: starting {} on {addr} ===",
            bin.display()
        )
        .map_err(io("writing the log marker"))?;
        let stdout = log.try_clone().map_err(io("cloning the log handle"))?;
        let child = Command::new(bin)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .map_err(io(format!("spawning {}", bin.display())))?;
        Ok(KnitServer {
            child: Some(child),
            addr,
            data_dir: data_dir.to_owned(),
            bin: bin.to_owned(),
        })
    }

    async fn wait_ready(mut self, timeout: Duration) -> Result<Self> {
        // The client exists once the server has written its kubeconfig
        // (and, after a restart, reuses the one of the same CA).
        let mut client = None;
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child_mut()
                .try_wait()
                .map_err(io("polling the server process"))?
            {
                self.child = None;
                return Err(ServerError::Exited {
                    status,
                    log: self.log_tail(4096),
                });
            }
            if client.is_none() && self.kubeconfig().is_file() {
                // Written whole (renamed into place), so it parses once it exists.
                client = Some(self.anonymous_client());
            }
            if let Some(client) = &client {
                let probe = client.send_bytes(hyper::Method::GET, "/readyz", None);
                if let Ok(Ok((status, _))) =
                    tokio::time::timeout(Duration::from_secs(1), probe).await
                    && status.is_success()
                {
                    return Ok(self);
                }
            }
            if started.elapsed() > timeout {
                let log = self.log_tail(4096);
                self.kill_now();
                return Err(ServerError::NotReady {
                    waited: timeout,
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// A new client for this server as the admin, verifying the server
    /// against the cluster CA (its own connection pool).
    ///
    /// # Panics
    /// When the server wrote no usable admin kubeconfig.
    pub fn client(&self) -> HttpClient {
        let creds = crate::http::Credentials::read(&self.kubeconfig())
            .unwrap_or_else(|e| panic!("the admin kubeconfig: {e}"));
        let tls = creds
            .tls_config()
            .unwrap_or_else(|e| panic!("the admin kubeconfig: {e}"));
        HttpClient::with_tls(self.base_url(), tls)
    }

    /// A client that trusts the cluster CA and presents no credential.
    pub fn anonymous_client(&self) -> HttpClient {
        let creds = crate::http::Credentials::read(&self.kubeconfig())
            .unwrap_or_else(|e| panic!("the admin kubeconfig: {e}"));
        let tls = knit_apiserver::auth::tls::client_config(&creds.ca_pem, None)
            .unwrap_or_else(|e| panic!("the cluster CA: {e}"));
        HttpClient::with_tls(self.base_url(), tls)
    }

    /// The data directory it was started on.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The binary it runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The last `max_bytes` of its log, for failure messages.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(self.log_path())?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        };
        read().unwrap_or_else(|e| format!("(no log: {e})"))
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the server process is running")
    }

    fn kill_now(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // Errors mean it already exited; wait() then reaps it either way.
        let _ = child.kill();
        child.wait().ok()
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(mut self) -> Option<ExitStatus> {
        self.kill_now()
    }

    /// Asks the server to shut down with SIGTERM and waits for it to exit;
    /// kills it and returns [`ServerError::StopTimeout`] if it takes longer
    /// than [`STOP_TIMEOUT`].
    pub async fn stop(mut self) -> Result<ExitStatus> {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pids fit in i32"));
        kill(pid, Signal::SIGTERM)?;
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child_mut()
                .try_wait()
                .map_err(io("waiting for the server to exit"))?
            {
                self.child = None;
                return Ok(status);
            }
            if started.elapsed() > STOP_TIMEOUT {
                self.kill_now();
                return Err(ServerError::StopTimeout {
                    waited: STOP_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for KnitServer {
    fn drop(&mut self) {
        self.kill_now();
    }
}

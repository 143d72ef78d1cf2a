//! The OS boundary of the proxy: `nft` and `conntrack`, run inside the
//! node's network namespace. The tools are forked from a dedicated thread
//! that has entered the namespace ([`netns::run_in`]), so the children
//! inherit it without `unsafe` pre-exec hooks and no tokio worker ever
//! changes namespace.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use super::{Error, Result, TABLE};
use crate::netns;

/// What the [`Proxier`](super::Proxier) needs from the kernel.
pub trait Firewall {
    /// Applies an `nft -f` script as one transaction.
    fn apply(&self, script: &str) -> Result<()>;
    /// `nft -j list table ip knit`, or `None` when the table is absent.
    fn list_table(&self) -> Result<Option<String>>;
    /// Runs `conntrack` with these arguments (a `-D` filter); matching no
    /// entry is not an error.
    fn conntrack(&self, args: &[String]) -> Result<()>;
}

/// [`Firewall`] over the real tools, in a named namespace or in the
/// caller's own.
#[derive(Clone, Debug, Default)]
pub struct LinuxFirewall {
    netns: Option<PathBuf>,
}

impl LinuxFirewall {
    /// Runs the tools in the namespace held by `ns_file` (a
    /// `/run/netns/<name>` file or `/proc/<pid>/ns/net`).
    pub fn in_netns(ns_file: impl Into<PathBuf>) -> Self {
        LinuxFirewall {
            netns: Some(ns_file.into()),
        }
    }

    /// Runs the tools in the agent's own namespace (the agent runs as the
    /// node).
    pub fn current() -> Self {
        LinuxFirewall { netns: None }
    }

    fn run(
        &self,
        program: &'static str,
        args: Vec<String>,
        stdin: Option<String>,
    ) -> Result<Output> {
        let go = move || -> Result<Output> {
            let mut child = Command::new(program)
                .args(&args)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|source| Error::Spawn { program, source })?;
            // Feed the script from another thread so a child that writes a
            // lot of errors before reading everything cannot deadlock us.
            let writer = match (stdin, child.stdin.take()) {
                (Some(text), Some(mut pipe)) => Some(std::thread::spawn(move || {
                    let _ = pipe.write_all(text.as_bytes());
                })),
                _ => None,
            };
            let out = child
                .wait_with_output()
                .map_err(|source| Error::Spawn { program, source })?;
            if let Some(writer) = writer {
                let _ = writer.join();
            }
            Ok(out)
        };
        match &self.netns {
            Some(file) => netns::run_in(file, go)?,
            None => go(),
        }
    }
}

fn failed(command: String, out: &Output) -> Error {
    Error::Command {
        command,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

impl Firewall for LinuxFirewall {
    fn apply(&self, script: &str) -> Result<()> {
        let out = self.run(
            "nft",
            vec!["-f".into(), "-".into()],
            Some(script.to_string()),
        )?;
        if !out.status.success() {
            return Err(failed("nft -f -".into(), &out));
        }
        Ok(())
    }

    fn list_table(&self) -> Result<Option<String>> {
        let mut args: Vec<String> = vec!["-j".into(), "list".into(), "table".into()];
        args.extend(TABLE.split(' ').map(String::from));
        let out = self.run("nft", args, None)?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        Err(failed(format!("nft -j list table {TABLE}"), &out))
    }

    fn conntrack(&self, args: &[String]) -> Result<()> {
        let out = self.run("conntrack", args.to_vec(), None)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // conntrack exits 1 when the filter matched nothing.
        if out.status.success() || stderr.contains("0 flow entries") {
            return Ok(());
        }
        Err(failed(format!("conntrack {}", args.join(" ")), &out))
    }
}

/// Everything a [`RecordingFirewall`] was asked to do.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Scripts passed to `apply`, in order.
    pub scripts: Vec<String>,
    /// Argument lists passed to `conntrack`, in order.
    pub conntrack: Vec<Vec<String>>,
    /// What `list_table` answers.
    pub listing: Option<String>,
    /// When set, the next `apply` fails with this message.
    pub fail_next_apply: Option<String>,
}

/// An in-memory [`Firewall`] that records calls, for tests of the
/// [`Proxier`](super::Proxier) without root. Clones share the record.
#[derive(Clone, Debug, Default)]
pub struct RecordingFirewall {
    /// The shared record.
    pub record: Arc<Mutex<Recorded>>,
}

impl RecordingFirewall {
    fn with<T>(&self, f: impl FnOnce(&mut Recorded) -> T) -> T {
        f(&mut self.record.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Firewall for RecordingFirewall {
    fn apply(&self, script: &str) -> Result<()> {
        self.with(|r| {
            if let Some(stderr) = r.fail_next_apply.take() {
                return Err(Error::Command {
                    command: "nft -f -".into(),
                    status: "exit status: 1".into(),
                    stderr,
                });
            }
            r.scripts.push(script.to_string());
            Ok(())
        })
    }

    fn list_table(&self) -> Result<Option<String>> {
        Ok(self.with(|r| r.listing.clone()))
    }

    fn conntrack(&self, args: &[String]) -> Result<()> {
        self.with(|r| r.conntrack.push(args.to_vec()));
        Ok(())
    }
}

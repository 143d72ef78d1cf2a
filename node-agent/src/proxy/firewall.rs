//! The OS boundary of the proxy: `nft`, element batches over netfilter
//! netlink (`nfnl`) and `conntrack`, run inside the node's network
//! namespace. The tools are forked from a dedicated thread
//! that has entered the namespace ([`netns::run_in`]), so the children
//! inherit it without `unsafe` pre-exec hooks and no tokio worker ever
//! changes namespace.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use super::nfnl::{self, Codec, Outline, SetWrites};
use super::{Error, Result, TABLE, render};
use crate::netns;

/// What the [`Proxier`](super::Proxier) needs from the kernel.
pub trait Firewall {
    /// Applies an `nft -f` script as one transaction. Returns the
    /// namespace's nftables generation after it when that is known to be
    /// ours alone (it moved by exactly one), `None` otherwise.
    fn apply(&self, script: &str) -> Result<Option<u32>>;
    /// Writes set and map elements of `ip knit` in one netlink
    /// transaction, each set's encoded by its codec. Returns the
    /// generation as [`Firewall::apply`] does.
    fn write_elements(
        &self,
        writes: &[SetWrites],
        codecs: &HashMap<String, Codec>,
    ) -> Result<Option<u32>>;
    /// What `ip knit` holds, in outline; `None` when there is no table.
    fn outline(&self) -> Result<Option<Outline>>;
    /// Whether set `set` of `ip knit` holds every one of `keys`.
    fn has_elements(&self, set: &str, codec: &Codec, keys: &[&str]) -> Result<bool>;
    /// Runs `conntrack` with these arguments (a `-D` filter); matching no
    /// entry is not an error.
    fn conntrack(&self, args: &[String]) -> Result<()>;
    /// The namespace's nftables generation, which every committed
    /// transaction (ours or anyone's) moves on; `None` when unknown. Lets
    /// the drift check skip reading a table nobody can have touched.
    fn generation(&self) -> Result<Option<u32>> {
        Ok(None)
    }
}

/// [`Firewall`] over the real tools, in a named namespace or in the
/// caller's own. Clones share one netlink socket.
#[derive(Clone, Debug, Default)]
pub struct LinuxFirewall {
    netns: Option<PathBuf>,
    /// Opened in the namespace on first use, kept while it works.
    conn: Arc<Mutex<Option<nfnl::Conn>>>,
}

impl LinuxFirewall {
    /// Runs the tools in the namespace held by `ns_file` (a
    /// `/run/netns/<name>` file or `/proc/<pid>/ns/net`).
    pub fn in_netns(ns_file: impl Into<PathBuf>) -> Self {
        LinuxFirewall {
            netns: Some(ns_file.into()),
            conn: Arc::default(),
        }
    }

    /// Runs the tools in the agent's own namespace (the agent runs as the
    /// node).
    pub fn current() -> Self {
        LinuxFirewall {
            netns: None,
            conn: Arc::default(),
        }
    }

    fn run(
        &self,
        program: &'static str,
        args: Vec<String>,
        stdin: Option<String>,
    ) -> Result<Output> {
        let go = move || spawn_tool(program, args, stdin);
        match &self.netns {
            Some(file) => netns::run_in(file, go)?,
            None => go(),
        }
    }
}

/// Runs `program` to completion, feeding it `stdin`.
fn spawn_tool(program: &'static str, args: Vec<String>, stdin: Option<String>) -> Result<Output> {
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
    // Feed the script from another thread so a child that writes a lot
    // of errors before reading everything cannot deadlock us.
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
}

fn failed(command: String, out: &Output) -> Error {
    Error::Command {
        command,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

impl LinuxFirewall {
    /// Runs `f` on the namespace's netlink socket, opening it first if
    /// needed; a socket that failed is dropped, to be opened again.
    fn with_conn<T>(&self, f: impl FnOnce(&mut nfnl::Conn) -> Result<T>) -> Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let conn = match &self.netns {
                Some(file) => netns::run_in(file, nfnl::Conn::open)?,
                None => nfnl::Conn::open(),
            };
            *guard = Some(conn.map_err(netlink_error)?);
        }
        let conn = guard.as_mut().expect("opened above");
        let out = f(conn);
        if matches!(
            out,
            Err(Error::Spawn { .. } | Error::Netlink(nfnl::SendError::Io(_)))
        ) {
            *guard = None;
        }
        out
    }

    /// Runs `change` with the generation read on both sides of it: `Some`
    /// when it moved by exactly one (our transaction alone).
    fn committing<T>(
        &self,
        change: impl FnOnce(&mut nfnl::Conn) -> Result<T>,
    ) -> Result<(T, Option<u32>)> {
        self.with_conn(|conn| {
            let before = conn.generation().ok().flatten();
            let out = change(conn)?;
            let after = conn.generation().ok().flatten();
            let ours = match (before, after) {
                (Some(b), Some(a)) if a == b.wrapping_add(1) => Some(a),
                _ => None,
            };
            Ok((out, ours))
        })
    }
}

/// `knit` of [`TABLE`]: netlink names the family apart.
fn table_name() -> &'static str {
    TABLE.rsplit(' ').next().unwrap_or(TABLE)
}

fn netlink_error(source: std::io::Error) -> Error {
    Error::Spawn {
        program: "netlink",
        source,
    }
}

impl Firewall for LinuxFirewall {
    fn apply(&self, script: &str) -> Result<Option<u32>> {
        let script = script.to_string();
        let netns = self.netns.clone();
        let (out, generation) = self.committing(move |_| {
            let go = move || spawn_tool("nft", vec!["-f".into(), "-".into()], Some(script));
            match &netns {
                Some(file) => netns::run_in(file, go)?,
                None => go(),
            }
        })?;
        if !out.status.success() {
            return Err(failed("nft -f -".into(), &out));
        }
        Ok(generation)
    }

    fn write_elements(
        &self,
        writes: &[SetWrites],
        codecs: &HashMap<String, Codec>,
    ) -> Result<Option<u32>> {
        let batch = nfnl::encode(table_name(), writes, codecs).map_err(Error::Elements)?;
        let ((), generation) = self.committing(|conn| conn.send(batch).map_err(Error::from))?;
        Ok(generation)
    }

    fn outline(&self) -> Result<Option<Outline>> {
        self.with_conn(|conn| conn.outline(table_name()).map_err(netlink_error))
    }

    fn has_elements(&self, set: &str, codec: &Codec, keys: &[&str]) -> Result<bool> {
        self.with_conn(|conn| {
            conn.has_elements(table_name(), set, codec, keys)
                .map_err(netlink_error)
        })
    }

    fn generation(&self) -> Result<Option<u32>> {
        self.with_conn(|conn| conn.generation().map_err(netlink_error))
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
    /// Element batches passed to `write_elements`, each as its
    /// equivalent `nft` commands.
    pub batches: Vec<String>,
    /// Argument lists passed to `conntrack`, in order.
    pub conntrack: Vec<Vec<String>>,
    /// What `outline` answers. A script that builds the table makes it
    /// `Some` (of no particular shape) if it was `None`.
    pub outline: Option<Outline>,
    /// Sets `has_elements` says are missing elements (emptied by hand).
    pub emptied: BTreeSet<String>,
    /// When set, the next `apply` fails with this message.
    pub fail_next_apply: Option<String>,
    /// What `generation` answers.
    pub generation: Option<u32>,
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
    fn apply(&self, script: &str) -> Result<Option<u32>> {
        self.with(|r| {
            if let Some(stderr) = r.fail_next_apply.take() {
                return Err(Error::Command {
                    command: "nft -f -".into(),
                    status: "exit status: 1".into(),
                    stderr,
                });
            }
            r.scripts.push(script.to_string());
            // Every script that builds the table starts with `add table`.
            if r.outline.is_none() && script.contains(&format!("add table {TABLE}")) {
                r.outline = Some(Outline::default());
            }
            // A recorded generation moves with every transaction, as the
            // kernel's does.
            r.generation = r.generation.map(|g| g.wrapping_add(1));
            Ok(r.generation)
        })
    }

    fn write_elements(
        &self,
        writes: &[SetWrites],
        codecs: &HashMap<String, Codec>,
    ) -> Result<Option<u32>> {
        // Encoded as the real one would, so a bad element fails here too.
        nfnl::encode(table_name(), writes, codecs).map_err(Error::Elements)?;
        self.with(|r| {
            r.batches.push(render::element_commands(writes));
            r.generation = r.generation.map(|g| g.wrapping_add(1));
            Ok(r.generation)
        })
    }

    fn outline(&self) -> Result<Option<Outline>> {
        Ok(self.with(|r| r.outline.clone()))
    }

    fn has_elements(&self, set: &str, _codec: &Codec, _keys: &[&str]) -> Result<bool> {
        Ok(self.with(|r| !r.emptied.contains(set)))
    }

    fn conntrack(&self, args: &[String]) -> Result<()> {
        self.with(|r| r.conntrack.push(args.to_vec()));
        Ok(())
    }

    fn generation(&self) -> Result<Option<u32>> {
        Ok(self.with(|r| r.generation))
    }
}

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
    /// Applies an `nft -f` script as one transaction. Returns the
    /// namespace's nftables generation after it when that is known to be
    /// ours alone (it moved by exactly one), `None` otherwise.
    fn apply(&self, script: &str) -> Result<Option<u32>>;
    /// `nft -j list table ip knit`, or `None` when the table is absent.
    fn list_table(&self) -> Result<Option<String>>;
    /// Runs `conntrack` with these arguments (a `-D` filter); matching no
    /// entry is not an error.
    fn conntrack(&self, args: &[String]) -> Result<()>;
    /// The namespace's nftables generation, which every committed
    /// transaction (ours or anyone's) moves on; `None` when unknown. Lets
    /// the drift check skip listing a table nobody can have touched.
    fn generation(&self) -> Result<Option<u32>> {
        Ok(None)
    }
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

impl Firewall for LinuxFirewall {
    fn apply(&self, script: &str) -> Result<Option<u32>> {
        let script = script.to_string();
        // One trip into the namespace: the generation on both sides of
        // the transaction, read by the same thread.
        let go = move || -> Result<(Output, Option<u32>)> {
            let before = nft_generation().ok().flatten();
            let out = spawn_tool("nft", vec!["-f".into(), "-".into()], Some(script))?;
            let after = nft_generation().ok().flatten();
            let ours = match (before, after) {
                (Some(b), Some(a)) if a == b.wrapping_add(1) => Some(a),
                _ => None,
            };
            Ok((out, ours))
        };
        let (out, generation) = match &self.netns {
            Some(file) => netns::run_in(file, go)??,
            None => go()?,
        };
        if !out.status.success() {
            return Err(failed("nft -f -".into(), &out));
        }
        Ok(generation)
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

    fn generation(&self) -> Result<Option<u32>> {
        let ask = || {
            nft_generation().map_err(|source| Error::Spawn {
                program: "netlink",
                source,
            })
        };
        match &self.netns {
            Some(file) => netns::run_in(file, ask)?,
            None => ask(),
        }
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

/// `NFT_MSG_GETGEN` over a netfilter netlink socket of the calling
/// thread's namespace: the ruleset generation id (what `nft` itself asks
/// first), at the cost of one round trip instead of a listing.
fn nft_generation() -> std::io::Result<Option<u32>> {
    use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_GETGEN: u16 = 16;
    const NFTA_GEN_ID: u16 = 1;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_ERROR: u16 = 2;

    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    let mut msg = Vec::with_capacity(20);
    msg.extend_from_slice(&20u32.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    msg.extend_from_slice(&[0, 0, 0, 0]); // nfgenmsg: AF_UNSPEC, v0, res_id 0
    socket.send_to(&msg, &SocketAddr::new(0, 0), 0)?;
    let (reply, _) = socket.recv_from_full()?;
    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]));
    if reply.len() < 20 || u16_at(&reply, 4) == Some(NLMSG_ERROR) {
        return Ok(None);
    }
    // Attributes after the 16-byte header and the 4-byte nfgenmsg.
    let mut at = 20;
    while let (Some(len), Some(kind)) = (u16_at(&reply, at), u16_at(&reply, at + 2)) {
        let len = usize::from(len);
        if len < 4 {
            break;
        }
        if kind & 0x3fff == NFTA_GEN_ID && len >= 8 {
            let v = &reply[at + 4..at + 8];
            return Ok(Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])));
        }
        at += (len + 3) & !3;
    }
    Ok(None)
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
            // A recorded generation moves with every transaction, as the
            // kernel's does.
            r.generation = r.generation.map(|g| g.wrapping_add(1));
            Ok(r.generation)
        })
    }

    fn list_table(&self) -> Result<Option<String>> {
        Ok(self.with(|r| r.listing.clone()))
    }

    fn conntrack(&self, args: &[String]) -> Result<()> {
        self.with(|r| r.conntrack.push(args.to_vec()));
        Ok(())
    }

    fn generation(&self) -> Result<Option<u32>> {
        Ok(self.with(|r| r.generation))
    }
}

//! The error type of the OS-facing modules ([`crate::netlink`],
//! [`crate::netns`]) and of the appliers built on them.

use std::io;
use std::path::PathBuf;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a netlink request.
    #[error("netlink {op}: {source}")]
    Netlink {
        /// The request, e.g. `add veth knv0123 peer eth0`.
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// The call and its argument, e.g. `setns /run/netns/x`.
        op: String,
        #[source]
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file it was done to.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A named network namespace does not exist.
    #[error("network namespace {0:?} does not exist")]
    NoNamespace(String),
    /// A link named by a request does not exist.
    #[error("link {0:?} does not exist")]
    NoLink(String),
    /// A name is not usable (too long, contains `/`, ...).
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The thread that owns a namespace's netlink socket has stopped.
    #[error("the netlink thread of network namespace {0:?} has stopped")]
    ThreadGone(String),
    /// The kernel holds something the applier will not take over, such as a
    /// `cbr0` that is not a bridge.
    #[error("{0}")]
    Conflict(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The errno behind a netlink or system call error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => Some(msg.raw_code().abs()),
            Error::Sys { source, .. } => Some(*source as i32),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

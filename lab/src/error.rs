//! The lab's error type: bad flags, a lab that exists or does not, the
//! kernel refusing, daemons that die or never get ready.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong building, reading or removing a lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value cannot be used.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// The flag, e.g. `lab name`.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// Something of the lab (or in its way) is already on the host.
    #[error("{0}")]
    Exists(String),
    /// No lab of that name.
    #[error("no lab named {name:?} (no state file {})", path.display())]
    NotFound {
        /// The lab's name.
        name: String,
        /// The state file that is missing.
        path: PathBuf,
    },
    /// The `exec` target names neither a node nor the external host.
    #[error("lab {lab:?} has no host {host:?} (use a node name, a node number from 1, or `ext`)")]
    NoHost {
        /// The lab.
        lab: String,
        /// What was asked for.
        host: String,
    },
    /// The kernel refused a namespace or netlink request.
    #[error(transparent)]
    Net(#[from] knit_node_agent::Error),
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state file is not readable JSON.
    #[error("state file {}: {source}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A daemon could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// Which daemon.
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A daemon exited while the lab came up.
    #[error("{what} exited ({status}); see {}; last lines:\n{tail}", log.display())]
    Exited {
        /// Which daemon.
        what: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// Something did not happen in time.
    #[error("{what} after {waited:?}; {hint}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// Where to look.
        hint: String,
    },
    /// The lab's API server answered with an error or not at all.
    #[error("the lab's API server: {0}")]
    Api(String),
}

/// Result with the lab's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}

//! Named network namespaces, held open the way `ip netns add` holds them:
//! a bind mount of a thread's `/proc/self/task/<tid>/ns/net` onto a file in
//! `/run/netns`. Using iproute2's directory (made a shared mount, as
//! iproute2 does) means `ip netns exec <name> ...` works on every sandbox
//! for debugging, and that a namespace unmounted here also disappears from
//! mount namespaces copied before (the pods' own, later).
//!
//! Creating a namespace happens on a short-lived dedicated thread
//! (`unshare(CLONE_NEWNET)` affects only the calling thread), never on a
//! tokio worker, and never by forking. [`run_in`] is the general form: run
//! a closure on a fresh thread that has entered a namespace.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statfs::{NSFS_MAGIC, statfs};

use crate::netlink::{LinuxNetlink, Netlink};
use crate::{Error, Result};

/// Where iproute2 (and so knit) keeps named network namespaces.
pub const RUN_DIR: &str = "/run/netns";

/// Named network namespaces on a host.
pub trait Netns {
    /// A netlink handle inside one of them.
    type Handle: Netlink;
    /// Creates the namespace unless it exists; `true` if it was created.
    /// A mount-point file left by a crash is reused.
    fn create(&self, name: &str) -> Result<bool>;
    /// Whether the namespace exists (its file is a namespace mount).
    fn exists(&self, name: &str) -> Result<bool>;
    /// Removes the namespace (unmount and unlink) unless it is gone;
    /// `true` if there was something to remove. Processes and threads still
    /// inside keep it alive until they leave; nothing else does.
    fn delete(&self, name: &str) -> Result<bool>;
    /// The names of all namespaces in the directory, knit's or not.
    fn list(&self) -> Result<Vec<String>>;
    /// A netlink handle inside the namespace.
    fn open(&self, name: &str) -> Result<Self::Handle>;
}

/// The kernel's named namespaces under a run directory ([`RUN_DIR`] by
/// default).
#[derive(Clone, Debug)]
pub struct LinuxNetns {
    dir: PathBuf,
}

impl Default for LinuxNetns {
    fn default() -> Self {
        Self::new()
    }
}

impl LinuxNetns {
    /// Namespaces in `/run/netns`.
    pub fn new() -> Self {
        Self::with_dir(RUN_DIR)
    }

    /// Namespaces in another directory (tests of the directory handling).
    pub fn with_dir(dir: impl Into<PathBuf>) -> Self {
        LinuxNetns { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds the named namespace.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }

    /// Makes the run directory a shared mount point, like iproute2: bind it
    /// onto itself if it is not a mount point yet, then mark it shared.
    fn prepare_dir(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|source| Error::Io {
            op: "create",
            path: self.dir.clone(),
            source,
        })?;
        let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
        match nix::mount::mount(None::<&str>, &self.dir, Some("none"), shared, None::<&str>) {
            Ok(()) => Ok(()),
            Err(nix::Error::EINVAL) => {
                let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
                nix::mount::mount(Some(&self.dir), &self.dir, Some("none"), bind, None::<&str>)
                    .map_err(|source| sys(format!("bind mount {}", self.dir.display()), source))?;
                nix::mount::mount(None::<&str>, &self.dir, Some("none"), shared, None::<&str>)
                    .map_err(|source| sys(format!("make shared {}", self.dir.display()), source))
            }
            Err(source) => Err(sys(format!("make shared {}", self.dir.display()), source)),
        }
    }
}

impl Netns for LinuxNetns {
    type Handle = LinuxNetlink;

    fn create(&self, name: &str) -> Result<bool> {
        let path = self.path(name)?;
        if is_netns_file(&path)? {
            return Ok(false);
        }
        self.prepare_dir()?;
        // The mount point: an empty file, as iproute2 makes it. A file left
        // by a crash between this step and the mount is simply reused.
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o444)
            .open(&path)
            .map_err(|source| Error::Io {
                op: "create",
                path: path.clone(),
                source,
            })?;
        let target = path.clone();
        let made = std::thread::Builder::new()
            .name("netns-create".into())
            .spawn(move || -> Result<()> {
                // Only this thread moves to the new namespace; it ends right
                // after, leaving the bind mount as the namespace's only
                // holder.
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|source| sys("unshare(CLONE_NEWNET)".into(), source))?;
                let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
                nix::mount::mount(
                    Some(own.as_str()),
                    &target,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|source| sys(format!("bind mount {own} on {}", target.display()), source))
            })
            .map_err(|source| Error::Io {
                op: "spawn a thread for",
                path: path.clone(),
                source,
            })?
            .join()
            .unwrap_or_else(|_| Err(Error::ThreadGone(name.to_string())));
        if let Err(err) = made {
            let _ = fs::remove_file(&path);
            return Err(err);
        }
        Ok(true)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        is_netns_file(&self.path(name)?)
    }

    fn delete(&self, name: &str) -> Result<bool> {
        let path = self.path(name)?;
        let mut removed = false;
        // A file mounted over more than once (two racing creates) needs one
        // unmount per mount; the bound keeps a broken mount table from
        // spinning us.
        for _ in 0..8 {
            match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
                Ok(()) => removed = true,
                Err(nix::Error::EINVAL | nix::Error::ENOENT) => break,
                Err(source) => return Err(sys(format!("umount {}", path.display()), source)),
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    op: "remove",
                    path,
                    source,
                });
            }
        }
        Ok(removed)
    }

    fn list(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    op: "list",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn open(&self, name: &str) -> Result<LinuxNetlink> {
        let path = self.path(name)?;
        if !is_netns_file(&path)? {
            return Err(Error::NoNamespace(name.to_string()));
        }
        LinuxNetlink::open(name, &path, self.dir.clone())
    }
}

/// Runs `f` on a new thread that has entered the network namespace held by
/// `ns_file` (a `/run/netns/<name>` file or a `/proc/<pid>/ns/net` link),
/// and returns its result. Sockets `f` opens belong to that namespace.
pub fn run_in<T, F>(ns_file: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = ns_file.to_path_buf();
    std::thread::Builder::new()
        .name("netns-run".into())
        .spawn(move || -> Result<T> {
            enter(&path)?;
            Ok(f())
        })
        .map_err(|source| Error::Io {
            op: "spawn a thread for",
            path: ns_file.to_path_buf(),
            source,
        })?
        .join()
        .unwrap_or_else(|_| Err(Error::ThreadGone(ns_file.display().to_string())))
}

/// Moves the calling thread into the network namespace held by `ns_file`.
/// Callers own the thread and never hand it back to a pool.
pub(crate) fn enter(ns_file: &Path) -> Result<()> {
    let file = fs::File::open(ns_file).map_err(|source| Error::Io {
        op: "open",
        path: ns_file.to_path_buf(),
        source,
    })?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|source| sys(format!("setns {}", ns_file.display()), source))
}

/// Whether `path` is a bind-mounted namespace (and not just the empty
/// mount-point file).
fn is_netns_file(path: &Path) -> Result<bool> {
    match statfs(path) {
        Ok(st) => Ok(st.filesystem_type() == NSFS_MAGIC),
        Err(nix::Error::ENOENT) => Ok(false),
        Err(source) => Err(sys(format!("statfs {}", path.display()), source)),
    }
}

/// Namespace names become file names: no `/`, no `.`/`..`, no NUL, and
/// short enough for a file name.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else if name == "." || name == ".." {
        "not a file name"
    } else if name.contains('/') || name.contains('\0') {
        "contains '/' or NUL"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_string(),
        reason,
    })
}

fn sys(op: String, source: nix::Error) -> Error {
    Error::Sys { op, source }
}

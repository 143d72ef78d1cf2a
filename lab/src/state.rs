//! What a running lab leaves on disk so that `status`, `exec` and `down`
//! (in other processes, maybe after a crash) find it: `<dir>/lab.json`
//! with the plan and the daemons' pids, and a pointer
//! `/run/knit-lab/<name>` to the directory, so a lab made with `--dir` is
//! found by name alone. The pointer lives on `/run` like the namespaces
//! themselves: both are gone after a reboot.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::plan::{LabPlan, default_dir};
use crate::{Error, Result};

/// Where the pointers to labs' directories live.
pub const POINTER_DIR: &str = "/run/knit-lab";
/// The state file in a lab's directory.
pub const STATE_FILE: &str = "lab.json";

/// A background process of the lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    /// `server` or the node's name.
    pub what: String,
    /// Its pid.
    pub pid: u32,
    /// Its log file.
    pub log: PathBuf,
}

/// A lab as recorded on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// Names and addresses.
    pub plan: LabPlan,
    /// The daemons started so far.
    pub daemons: Vec<Daemon>,
}

/// The pointer file of lab `name`.
pub fn pointer(name: &str) -> PathBuf {
    Path::new(POINTER_DIR).join(name)
}

/// The directory of lab `name`: `dir` if given, else the one its pointer
/// names, else the default.
pub fn resolve_dir(name: &str, dir: Option<&Path>) -> PathBuf {
    if let Some(dir) = dir {
        return dir.to_path_buf();
    }
    match fs::read_to_string(pointer(name)) {
        Ok(s) if !s.trim().is_empty() => PathBuf::from(s.trim()),
        _ => default_dir(name),
    }
}

impl LabState {
    /// Writes `<dir>/lab.json` (atomically) and the pointer.
    pub fn save(&self) -> Result<()> {
        let path = self.plan.dir.join(STATE_FILE);
        let tmp = self.plan.dir.join(format!("{STATE_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(self).expect("a lab state serializes");
        fs::write(&tmp, json).map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        fs::create_dir_all(POINTER_DIR).map_err(io("create", POINTER_DIR))?;
        let ptr = pointer(&self.plan.name);
        fs::write(&ptr, self.plan.dir.to_string_lossy().as_bytes()).map_err(io("write", &ptr))
    }

    /// Reads lab `name`'s state from `dir`; `None` if it has none.
    pub fn load(name: &str, dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        let state: LabState = serde_json::from_slice(&bytes).map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
        if state.plan.name != name {
            return Err(Error::Exists(format!(
                "{} belongs to lab {:?}, not {name:?}",
                path.display(),
                state.plan.name
            )));
        }
        Ok(Some(state))
    }

    /// Reads lab `name`'s state, failing if there is none.
    pub fn require(name: &str, dir: &Path) -> Result<Self> {
        Self::load(name, dir)?.ok_or_else(|| Error::NotFound {
            name: name.to_string(),
            path: dir.join(STATE_FILE),
        })
    }
}

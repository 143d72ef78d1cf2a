//! Server-side apply (`application/apply-patch+yaml`) and the
//! `metadata.managedFields` bookkeeping of every write, with the semantics
//! of kube-apiserver's field manager and structured-merge-diff.
//!
//! - [`fieldset`]: sets of field paths and their `FieldsV1` encoding;
//! - `merge`: merging a configuration into an object, pruning the fields an
//!   applier gave up, comparing versions;
//! - [`managed`]: the managers' entries, and the two operations the API
//!   server calls: [`managed::apply`] and [`managed::record_update`].
//!
//! Everything is pure: it turns objects and entries into objects and
//! entries, and knows nothing of storage or admission.

pub mod fieldset;
pub mod managed;
mod merge;

pub use fieldset::{FieldSet, Path, PathElement};
pub use managed::{Entry, ManagedFields, Operation, Writer, apply, record_update};

/// One field an applier would take from another manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager as kube-apiserver prints it: `"kubectl-edit"
    /// using apps/v1`, `"other"` for an applier.
    pub manager: String,
    /// The contested field.
    pub path: Path,
}

/// Why an apply (or reading managed fields) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The configuration cannot be applied: a list element without its
    /// keys, `metadata.managedFields` set, ...
    #[error("{0}")]
    Invalid(String),
    /// `metadata.managedFields` that cannot be read.
    #[error("{0}")]
    ManagedFields(String),
    /// Fields other managers own would change; `force` takes them.
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
}

/// The result of the apply operations.
pub type Result<T, E = ApplyError> = std::result::Result<T, E>;

/// The message kube-apiserver gives for apply conflicts.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager, only.path
        );
    }
    let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
    managers.sort_unstable();
    managers.dedup();
    let mut lines = Vec::new();
    for manager in managers {
        lines.push(format!("conflicts with {manager}:"));
        for c in conflicts.iter().filter(|c| c.manager == manager) {
            lines.push(format!("- {}", c.path));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

impl From<ApplyError> for crate::ApiError {
    /// Conflicts are a 409 with a `FieldManagerConflict` cause per field;
    /// anything else is a bad request.
    fn from(err: ApplyError) -> Self {
        match err {
            ApplyError::Conflicts(ref conflicts) => crate::ApiError::ApplyConflict {
                message: err.to_string(),
                causes: conflicts
                    .iter()
                    .map(|c| crate::Cause {
                        reason: "FieldManagerConflict",
                        field: c.path.to_string(),
                        message: format!("conflict with {}", c.manager),
                    })
                    .collect(),
            },
            other => crate::ApiError::BadRequest(other.to_string()),
        }
    }
}

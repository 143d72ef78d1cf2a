//! OpenAPI v3 documents of the API knit serves, one per group/version, as
//! kube-apiserver publishes them under `/openapi/v3/<prefix>/<group>/<version>`.
//!
//! This module tree owns what the documents say: the schemas of the kinds
//! (from the k8s-openapi types' JSON schemas, annotated with the patch
//! strategies of [`crate::patch`] and the group/version/kind extensions
//! clients look kinds up by), the paths and operations of each resource
//! (kubectl decides from them whether the server validates fields and
//! whether it takes strategic merge patches), and the unknown-field check
//! `fieldValidation` runs against those same schemas. It is pure: the
//! apiserver serves and caches the bytes.

mod paths;
mod schemas;
pub mod unknown_fields;

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::registry::{self, Resource};

/// Where the schemas of a document live, as `$ref`s name them.
pub const SCHEMA_REF_PREFIX: &str = "#/components/schemas/";

/// One group/version: its resources and the schemas their objects follow.
#[derive(Debug)]
pub struct GroupVersion {
    pub group: &'static str,
    pub version: &'static str,
    /// The served resources with the definition name of their kind
    /// (`io.k8s.api.core.v1.Pod`).
    pub kinds: Vec<(&'static Resource, String)>,
    /// `components.schemas`: every definition the kinds reach.
    pub schemas: Map<String, Value>,
}

impl GroupVersion {
    /// The key of this group/version in the `/openapi/v3` index:
    /// `api/v1`, `apis/apps/v1`.
    pub fn index_key(&self) -> String {
        if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}/{}", self.group, self.version)
        }
    }

    /// The definition name of a kind's schema.
    pub fn schema_name(&self, kind: &str) -> Option<&str> {
        self.kinds
            .iter()
            .find(|(r, _)| r.kind == kind)
            .map(|(_, name)| name.as_str())
    }

    /// The whole OpenAPI 3.0 document.
    pub fn document(&self) -> Value {
        json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.35.0"},
            "paths": paths::paths(self),
            "components": {"schemas": self.schemas},
        })
    }
}

/// Every group/version knit serves, built once on first use (generating
/// the schemas walks a few hundred types).
pub fn group_versions() -> &'static [GroupVersion] {
    static ALL: OnceLock<Vec<GroupVersion>> = OnceLock::new();
    ALL.get_or_init(|| {
        registry::group_versions()
            .into_iter()
            .map(|(group, version)| schemas::build(group, version))
            .collect()
    })
}

/// The group/version `group`/`version`, if knit serves it.
pub fn group_version(group: &str, version: &str) -> Option<&'static GroupVersion> {
    group_versions()
        .iter()
        .find(|gv| gv.group == group && gv.version == version)
}

/// The group/version a `/openapi/v3/...` index key names (`api/v1`,
/// `apis/apps/v1`).
pub fn by_index_key(key: &str) -> Option<&'static GroupVersion> {
    let key = key.trim_matches('/');
    group_versions().iter().find(|gv| gv.index_key() == key)
}

#[cfg(test)]
mod tests;

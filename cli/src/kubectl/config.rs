//! Finding and loading the kubeconfig the way kubectl does: `--kubeconfig`
//! alone when given, else every file in `$KUBECONFIG` (a colon-separated
//! list, missing files skipped, the first file to set a key wins), else
//! `~/.kube/config`; then the context (`--context` or `current-context`),
//! its cluster and user, and the namespace (`-n`, else the context's, else
//! `default`). Authentication and TLS settings are handed to `kube::Config`,
//! which already understands tokens, token files, client certificates and
//! CA bundles; knit itself only needs to pick the files.

use std::ffi::OsString;
use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

/// Why no usable configuration could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no kubeconfig found (tried {}); point --kubeconfig or $KUBECONFIG at one, e.g. the admin.kubeconfig in `knit server`'s data dir", list(.tried))]
    NotFound { tried: Vec<PathBuf> },
    #[error("cannot read kubeconfig {path}: {source}")]
    Read {
        path: PathBuf,
        source: Box<KubeconfigError>,
    },
    #[error("kubeconfig ({}): {source}", list(.paths))]
    Invalid {
        paths: Vec<PathBuf>,
        source: Box<KubeconfigError>,
    },
    #[error("context \"{context}\" does not exist in the kubeconfig ({}); it has: {}", list(.paths), if .known.is_empty() { "no contexts".to_string() } else { .known.join(", ") })]
    NoSuchContext {
        context: String,
        known: Vec<String>,
        paths: Vec<PathBuf>,
    },
    #[error("the kubeconfig ({}) has no current-context; pass --context", list(.paths))]
    NoContext { paths: Vec<PathBuf> },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where kubeconfig files may come from; the environment is passed in so
/// tests need not touch the process environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--kubeconfig`: when set, the only file read (it must exist).
    pub explicit: Option<PathBuf>,
    /// The value of `$KUBECONFIG`.
    pub env: Option<OsString>,
    /// The user's home directory, for `~/.kube/config`.
    pub home: Option<PathBuf>,
}

impl Sources {
    /// The sources of this process: `--kubeconfig`, `$KUBECONFIG`, `$HOME`.
    pub fn from_process(explicit: Option<PathBuf>) -> Self {
        Sources {
            explicit,
            env: std::env::var_os("KUBECONFIG"),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// The files to try, in precedence order.
    pub fn candidates(&self) -> Vec<PathBuf> {
        if let Some(path) = &self.explicit {
            return vec![path.clone()];
        }
        if let Some(env) = &self.env {
            let paths: Vec<PathBuf> = std::env::split_paths(env)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            if !paths.is_empty() {
                return paths;
            }
        }
        self.home
            .iter()
            .map(|home| home.join(".kube").join("config"))
            .collect()
    }
}

/// The kubeconfig files that were read, merged.
#[derive(Debug)]
pub struct Loaded {
    /// The merged configuration.
    pub kubeconfig: Kubeconfig,
    /// The files it came from, for error messages.
    pub paths: Vec<PathBuf>,
}

/// Reads and merges the kubeconfig files of `sources`. A file named by
/// `--kubeconfig` must exist; files in `$KUBECONFIG` that do not exist
/// are skipped as kubectl does, but at least one must.
pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    let tried = sources.candidates();
    let mut merged: Option<Kubeconfig> = None;
    let mut paths = Vec::new();
    for path in &tried {
        if !path.exists() {
            if sources.explicit.is_some() {
                return Err(ConfigError::NotFound { tried });
            }
            continue;
        }
        let read = Kubeconfig::read_from(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source: Box::new(source),
        })?;
        paths.push(path.clone());
        merged = Some(match merged {
            None => read,
            Some(first) => first.merge(read).map_err(|source| ConfigError::Invalid {
                paths: paths.clone(),
                source: Box::new(source),
            })?,
        });
    }
    match merged {
        Some(kubeconfig) => Ok(Loaded { kubeconfig, paths }),
        None => Err(ConfigError::NotFound { tried }),
    }
}

/// What a command connects with: the client settings and the namespace.
#[derive(Debug)]
pub struct Target {
    /// Settings for `kube::Client`: server URL, credentials, TLS.
    pub config: kube::Config,
    /// The namespace commands default to.
    pub namespace: String,
}

/// Picks the context (`--context` or `current-context`) and builds the
/// client settings from its cluster and user; `namespace` (`-n`) overrides
/// the context's namespace.
pub async fn target(
    loaded: Loaded,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<Target, ConfigError> {
    let Loaded { kubeconfig, paths } = loaded;
    let context = match context {
        Some(name) => name.to_string(),
        None => kubeconfig
            .current_context
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ConfigError::NoContext {
                paths: paths.clone(),
            })?,
    };
    if !kubeconfig.contexts.iter().any(|c| c.name == context) {
        return Err(ConfigError::NoSuchContext {
            context,
            known: kubeconfig.contexts.iter().map(|c| c.name.clone()).collect(),
            paths,
        });
    }
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| ConfigError::Invalid {
            paths: paths.clone(),
            source: Box::new(source),
        })?;
    if let Some(ns) = namespace {
        config.default_namespace = ns.to_string();
    }
    // Watches and `logs -f` may stay quiet for a long time.
    config.read_timeout = None;
    Ok(Target {
        namespace: config.default_namespace.clone(),
        config,
    })
}

/// Loads the kubeconfig for `sources` and picks the context: the whole
/// path from flags to client settings.
pub async fn resolve(
    sources: &Sources,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<Target, ConfigError> {
    target(load(sources)?, context, namespace).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const FIRST: &str = "apiVersion: v1
kind: Config
current-context: one
clusters:
- name: c1
  cluster: {server: 'http://127.0.0.1:1111'}
- name: shared
  cluster: {server: 'http://first.example:1'}
contexts:
- name: one
  context: {cluster: c1, user: u1, namespace: team-a}
users:
- name: u1
  user: {token: abc}
";

    const SECOND: &str = "apiVersion: v1
kind: Config
current-context: two
clusters:
- name: c2
  cluster: {server: 'http://127.0.0.1:2222'}
- name: shared
  cluster: {server: 'http://second.example:2'}
contexts:
- name: two
  context: {cluster: c2, user: u2}
- name: three
  context: {cluster: shared, user: u2}
users:
- name: u2
  user: {}
";

    #[tokio::test]
    async fn first_file_wins_per_key_and_missing_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), "first", FIRST);
        let second = write(dir.path(), "second", SECOND);
        let missing = dir.path().join("missing");
        let env = std::env::join_paths([&missing, &first, &second]).unwrap();
        let sources = Sources {
            env: Some(env),
            ..Sources::default()
        };
        let loaded = load(&sources).unwrap();
        assert_eq!(loaded.paths, vec![first.clone(), second.clone()]);
        assert_eq!(loaded.kubeconfig.current_context.as_deref(), Some("one"));
        let shared = loaded
            .kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == "shared")
            .unwrap();
        assert_eq!(
            shared.cluster.as_ref().unwrap().server.as_deref(),
            Some("http://first.example:1")
        );

        let target = target(loaded, None, None).await.unwrap();
        assert_eq!(target.namespace, "team-a");
        assert_eq!(
            target.config.cluster_url.to_string(),
            "http://127.0.0.1:1111/"
        );
        assert!(target.config.auth_info.token.is_some());
    }

    #[tokio::test]
    async fn context_flag_and_namespace_flag_override() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), "first", FIRST);
        let second = write(dir.path(), "second", SECOND);
        let sources = Sources {
            env: Some(std::env::join_paths([&first, &second]).unwrap()),
            ..Sources::default()
        };
        let t = resolve(&sources, Some("three"), None).await.unwrap();
        // Context `three` names cluster `shared`, which the first file set.
        assert_eq!(t.config.cluster_url.to_string(), "http://first.example:1/");
        assert_eq!(t.namespace, "default");
        assert!(t.config.auth_info.token.is_none());
        let t = resolve(&sources, Some("two"), Some("kube-system"))
            .await
            .unwrap();
        assert_eq!(t.namespace, "kube-system");
        assert_eq!(t.config.cluster_url.to_string(), "http://127.0.0.1:2222/");
    }

    #[tokio::test]
    async fn unknown_context_names_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), "first", FIRST);
        let sources = Sources {
            explicit: Some(first),
            env: Some("/nonexistent".into()),
            ..Sources::default()
        };
        let err = resolve(&sources, Some("nope"), None).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("context \"nope\" does not exist"), "{text}");
        assert!(text.contains("it has: one"), "{text}");
    }

    #[test]
    fn missing_kubeconfig_lists_the_paths_tried() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            home: Some(dir.path().to_path_buf()),
            ..Sources::default()
        };
        let err = load(&sources).unwrap_err();
        let expected = dir.path().join(".kube/config");
        assert!(
            err.to_string().contains(&expected.display().to_string()),
            "{err}"
        );

        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let sources = Sources {
            env: Some(std::env::join_paths([&a, &b]).unwrap()),
            home: Some(dir.path().to_path_buf()),
            ..Sources::default()
        };
        let err = load(&sources).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}, {}", a.display(), b.display())),
            "{err}"
        );
        assert!(!err.contains(".kube/config"), "{err}");
    }

    #[test]
    fn explicit_kubeconfig_must_exist_and_wins_over_env() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), "first", FIRST);
        let sources = Sources {
            explicit: Some(dir.path().join("gone")),
            env: Some(first.into_os_string()),
            home: None,
        };
        let err = load(&sources).unwrap_err().to_string();
        assert!(err.contains("gone"), "{err}");
    }

    #[tokio::test]
    async fn token_file_and_insecure_flags_reach_the_client_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            dir.path(),
            "config",
            "apiVersion: v1
kind: Config
current-context: c
clusters:
- name: c
  cluster: {server: 'https://10.9.9.9:6443', insecure-skip-tls-verify: true}
contexts:
- name: c
  context: {cluster: c, user: u}
users:
- name: u
  user: {tokenFile: token}
",
        );
        let t = resolve(
            &Sources {
                explicit: Some(config),
                ..Sources::default()
            },
            None,
            None,
        )
        .await
        .unwrap();
        assert!(t.config.accept_invalid_certs);
        // Relative token files are resolved against the kubeconfig's dir.
        assert_eq!(
            t.config.auth_info.token_file.as_deref(),
            Some(dir.path().join("token").to_str().unwrap())
        );
    }
}

//! Bearer tokens: the static token file (Kubernetes' `--token-auth-file`
//! format: `token,user,uid,"group1,group2"`) and the cluster's join token,
//! which nodes present once to obtain their own certificate.
//!
//! A join token reads `K10<sha256 of the CA bundle>::<id>.<secret>`, as
//! k3s's do: the hash lets a new node check the server it reaches before
//! it trusts it, and `<id>.<secret>` (Kubernetes' bootstrap token shape)
//! is what it sends as its bearer token.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use rand::Rng;

use super::Identity;
use super::pki::{self, PkiError};

/// The group every join-token request authenticates as.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// Why a token file or a join token is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    File {
        path: std::path::PathBuf,
        line: usize,
        reason: String,
    },
    #[error("not a join token (expected K10<ca-hash>::<id>.<secret>)")]
    Malformed,
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the CA bundle the server serves on `/cacerts`.
    pub ca_hash: String,
    pub id: String,
    pub secret: String,
}

impl JoinToken {
    /// A fresh token for the CA with `ca_hash`.
    pub fn generate(ca_hash: &str) -> JoinToken {
        JoinToken {
            ca_hash: ca_hash.to_owned(),
            id: random_word(6),
            secret: random_word(16),
        }
    }

    /// Parses `K10<hash>::<id>.<secret>`.
    ///
    /// # Errors
    /// [`TokenError::Malformed`] for anything else.
    pub fn parse(text: &str) -> Result<JoinToken, TokenError> {
        let rest = text
            .trim()
            .strip_prefix("K10")
            .ok_or(TokenError::Malformed)?;
        let (hash, credential) = rest.split_once("::").ok_or(TokenError::Malformed)?;
        let (id, secret) = credential.split_once('.').ok_or(TokenError::Malformed)?;
        let hex_ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        let word_ok = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric());
        if !hex_ok || !word_ok(id) || !word_ok(secret) {
            return Err(TokenError::Malformed);
        }
        Ok(JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// What the node sends as its bearer token.
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The identity a request with this token gets.
    pub fn identity(&self) -> Identity {
        Identity::new(
            format!("system:bootstrap:{}", self.id),
            vec![BOOTSTRAPPERS.to_owned()],
        )
    }

    /// Loads the token kept at `path`, or makes and stores one; a stored
    /// token for another CA (the CA was replaced by hand) is replaced.
    pub fn load_or_create(path: &Path, ca_hash: &str) -> Result<JoinToken, TokenError> {
        if let Ok(text) = fs::read_to_string(path)
            && let Ok(token) = JoinToken::parse(&text)
            && token.ca_hash == ca_hash
        {
            return Ok(token);
        }
        let token = JoinToken::generate(ca_hash);
        pki::write_private(path, format!("{token}\n").as_bytes())?;
        Ok(token)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "K10{}::{}.{}", self.ca_hash, self.id, self.secret)
    }
}

fn random_word(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guess was right.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Static bearer tokens and the join token.
#[derive(Debug, Default)]
pub struct Tokens {
    static_tokens: HashMap<String, Identity>,
    join: Option<JoinToken>,
}

impl Tokens {
    /// Tokens from a file in Kubernetes' `--token-auth-file` format
    /// (blank lines and `#` comments skipped), plus the join token.
    pub fn load(file: Option<&Path>, join: Option<JoinToken>) -> Result<Tokens, TokenError> {
        let mut static_tokens = HashMap::new();
        if let Some(path) = file {
            let text = fs::read_to_string(path).map_err(|source| TokenError::Io {
                path: path.to_owned(),
                source,
            })?;
            for (index, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let bad = |reason: &str| TokenError::File {
                    path: path.to_owned(),
                    line: index + 1,
                    reason: reason.to_owned(),
                };
                let (token, identity) = parse_token_line(line).map_err(bad)?;
                static_tokens.insert(token, identity);
            }
        }
        Ok(Tokens {
            static_tokens,
            join,
        })
    }

    /// The identity `token` stands for, if any.
    pub fn authenticate(&self, token: &str) -> Option<Identity> {
        if let Some(join) = &self.join
            && same_secret(token, &join.bearer())
        {
            return Some(join.identity());
        }
        self.static_tokens
            .iter()
            .find(|(known, _)| same_secret(token, known))
            .map(|(_, identity)| identity.clone())
    }
}

/// `token,user,uid[,"g1,g2"]`.
fn parse_token_line(line: &str) -> Result<(String, Identity), &'static str> {
    let mut fields = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or("unterminated quote")?;
            fields.push(quoted[..end].to_owned());
            rest = quoted[end + 1..].trim_start_matches(',');
        } else {
            let (field, tail) = rest.split_once(',').unwrap_or((rest, ""));
            fields.push(field.trim().to_owned());
            rest = tail;
        }
    }
    if fields.len() < 3 || fields[0].is_empty() || fields[1].is_empty() {
        return Err("expected token,user,uid[,\"groups\"]");
    }
    let groups = fields
        .get(3)
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok((fields[0].clone(), Identity::new(fields[1].clone(), groups)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_round_trip_and_reject_garbage() {
        let token = JoinToken::generate(&"ab".repeat(32));
        assert_eq!(JoinToken::parse(&token.to_string()).unwrap(), token);
        assert_eq!(token.bearer().len(), 23);
        for bad in ["", "K10::a.b", "K10abc::a.b", "X10{}::a.b", "K10{}::ab"] {
            let bad = bad.replace("{}", &"0".repeat(64));
            assert!(JoinToken::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_file_lines() {
        let (token, id) = parse_token_line("s3cret,alice,1001,\"dev,ops\"").unwrap();
        assert_eq!(token, "s3cret");
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, vec!["dev", "ops"]);
        let (_, id) = parse_token_line("t,bob,2").unwrap();
        assert!(id.groups.is_empty());
        assert!(parse_token_line("only,two").is_err());
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
